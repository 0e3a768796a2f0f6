# MindSpore's "Model Transformation" retraining sample (docs/sample_code/model_saving_loading/
# model_transformation_retrain.py, MindSpore 2.3-2.5) for distinfer: the MindSpore imports become
# distinfer ones. Checkpoints trained on 8 ranks (train_saving.py, files renamed
# rank_<r>/checkpoint_<r>.ckpt) are converted for 4 ranks with other strategies, then training goes on.
# Run in the folder holding src_checkpoints/ and src_strategy.ckpt:
#   python -m distinfer.launch -n 4 examples/transformation_retrain.py --only_compile=1   # convert
#   python -m distinfer.launch -n 4 examples/transformation_retrain.py                    # train 2 epochs
"""Convert 8-rank checkpoints to a 4-rank training strategy with transform_checkpoints, then train on."""

import os
import argparse
import distinfer as ms
import distinfer.dataset as ds
from distinfer import nn, ops, train
from distinfer.communication import init, get_rank
from distinfer.common.initializer import initializer

parser = argparse.ArgumentParser(description="Transform checkpoint dir")
parser.add_argument('--src_strategy_file', type=str, default="./src_strategy.ckpt",
                    help="The source strategy file.")
parser.add_argument("--dst_strategy_file", type=str, default="./dst_strategy.ckpt",
                    help="The destination strategy file.")
parser.add_argument("--src_checkpoints_dir", type=str, default="./src_checkpoints",
                    help="The source checkpoint directory.")
parser.add_argument("--dst_checkpoints_dir", type=str, default="./dst_checkpoints",
                    help="The destination checkpoint directory.")
parser.add_argument("--only_compile", type=int, default=0, choices=[1, 0],
                    help="Only compile and convert the net, default is disable.")
args_opt = parser.parse_args()

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.SEMI_AUTO_PARALLEL)
ms.set_auto_parallel_context(strategy_ckpt_config={"save_file": args_opt.dst_strategy_file})
ms.set_auto_parallel_context(full_batch=True, enable_parallel_optimizer=True)
init()
ms.set_seed(1)


class Dense(nn.Cell):
    """x @ weight + bias, with normal-initialised [in, out] weight and [out] bias."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.weight = ms.Parameter(initializer("normal", [in_channels, out_channels], ms.float32))
        self.bias = ms.Parameter(initializer("normal", [out_channels], ms.float32))
        self.matmul = ops.MatMul()
        self.add = ops.Add()

    def construct(self, x):
        return self.add(self.matmul(x, self.weight), self.bias)


class Network(nn.Cell):
    """The seed network: flatten, three Dense layers, ReLUs between them."""

    def __init__(self):
        super().__init__()
        self.flatten = ops.Flatten()
        self.layer1 = Dense(28 * 28, 512)
        self.relu1 = ops.ReLU()
        self.layer2 = Dense(512, 512)
        self.relu2 = ops.ReLU()
        self.layer3 = Dense(512, 10)

    def construct(self, x):
        x = self.relu1(self.layer1(self.flatten(x)))
        x = self.relu2(self.layer2(x))
        return self.layer3(x)


net = Network()
net.layer1.matmul.shard(((1, 4), (4, 1)))  # the destination strategies differ from training's
net.layer3.matmul.shard(((2, 2), (2, 1)))


def create_dataset(batch_size):
    """MNIST scaled, normalised and laid out CHW, with int32 labels."""
    dataset = ds.MnistDataset(os.getenv("DATA_PATH"))
    image_transforms = [ds.vision.Rescale(1.0 / 255.0, 0), ds.vision.Normalize(mean=(0.1307,), std=(0.3081,)),
                        ds.vision.HWC2CHW()]
    dataset = dataset.map(image_transforms, 'image')
    dataset = dataset.map(ds.transforms.TypeCast(ms.int32), 'label')
    return dataset.batch(batch_size)


data_set = create_dataset(32)
optimizer = nn.SGD(net.trainable_params(), 1e-2)
loss_fn = nn.CrossEntropyLoss()
model = ms.Model(net, loss_fn=loss_fn, optimizer=optimizer)
if bool(args_opt.only_compile):
    model.infer_train_layout(data_set)  # writes dst_strategy.ckpt
    # Every rank converts every destination file (the call is not collective, as in MindSpore).
    ms.transform_checkpoints(args_opt.src_checkpoints_dir, args_opt.dst_checkpoints_dir,
                             "checkpoint_", args_opt.src_strategy_file, args_opt.dst_strategy_file)
else:
    save_checkpoint_path = os.path.join(args_opt.dst_checkpoints_dir, "rank_{}".format(get_rank()),
                                        "checkpoint_{}.ckpt".format(get_rank()))
    loss_cb = train.LossMonitor(20)
    model.infer_train_layout(data_set)
    param_dict = ms.load_checkpoint(save_checkpoint_path)
    ms.load_param_into_net(net, param_dict)
    model.train(2, data_set, callbacks=[loss_cb])
