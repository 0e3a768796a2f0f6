# MindSpore's pipeline "Model Transformation" sample (docs/sample_code/model_saving_loading/
# pipeline_transformation_retrain.py, MindSpore 2.3-2.5) for distinfer: the MindSpore imports become
# distinfer ones. Checkpoints of a 2-stage pipeline run on 8 ranks (pipeline_train.py) are merged by rank 0
# alone into a 4-rank, non-pipeline training strategy, then training goes on. Run in the folder holding
# src_pipeline_strategys/ and src_checkpoints_pipeline/:
#   python -m distinfer.launch -n 4 examples/pipeline_transformation_retrain.py --only_compile=1   # convert
#   python -m distinfer.launch -n 4 examples/pipeline_transformation_retrain.py                    # train
"""Merge the per-rank pipeline strategies, convert the checkpoints on rank 0, then train on 4 ranks."""

import os
import argparse
import distinfer as ms
import distinfer.dataset as ds
from distinfer import nn, train
from distinfer.communication import init, get_rank

parser = argparse.ArgumentParser(description="Transform checkpoint dir")
parser.add_argument('--src_strategy_dir', type=str, default="./src_pipeline_strategys",
                    help="The source strategy file dir.")
parser.add_argument('--src_strategy_file', type=str, default="./src_pipeline_strategy.ckpt",
                    help="The source strategy file.")
parser.add_argument("--dst_strategy_file", type=str, default="./dst_pipeline_strategy.ckpt",
                    help="The destination strategy file.")
parser.add_argument("--src_checkpoints_dir", type=str, default="./src_checkpoints_pipeline",
                    help="The source checkpoint directory.")
parser.add_argument("--dst_checkpoints_dir", type=str, default="./dst_checkpoints_pipeline",
                    help="The destination checkpoint directory.")
parser.add_argument("--only_compile", type=int, default=0, choices=[1, 0],
                    help="Only compile and convert the net, default is disable.")
args_opt = parser.parse_args()

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.SEMI_AUTO_PARALLEL)
ms.set_auto_parallel_context(strategy_ckpt_config={"save_file": args_opt.dst_strategy_file})
ms.set_auto_parallel_context(full_batch=True)
init()
ms.set_seed(1)


class Network(nn.Cell):
    """Flatten and three Dense layers with ReLUs (pipeline_train.py's network, now on one stage)."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.layer1 = nn.Dense(28 * 28, 512)
        self.relu1 = nn.ReLU()
        self.layer2 = nn.Dense(512, 512)
        self.relu2 = nn.ReLU()
        self.layer3 = nn.Dense(512, 10)

    def construct(self, x):
        x = self.relu1(self.layer1(self.flatten(x)))
        x = self.relu2(self.layer2(x))
        return self.layer3(x)


net = Network()


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
    model.infer_train_layout(data_set)  # every rank writes (the same) dst_pipeline_strategy.ckpt
    if get_rank() == 0:  # one rank does the whole conversion, the others carry on
        ms.merge_pipeline_strategys(args_opt.src_strategy_dir, args_opt.src_strategy_file)
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
