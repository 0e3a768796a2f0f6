# MindSpore's "Model Transformation" inference sample (docs/sample_code/model_saving_loading/
# model_transformation_infer.py, MindSpore 2.3-2.5) for distinfer: the MindSpore imports become distinfer
# ones. Checkpoints trained on 8 ranks (train_saving.py, files renamed rank_<r>/checkpoint_<r>.ckpt) are
# converted for 4 ranks with other strategies, then loaded for inference. Run in the folder holding
# src_checkpoints/ and src_strategy.ckpt:
#   python -m distinfer.launch -n 4 examples/transformation_infer.py --only_compile=1   # convert
#   python -m distinfer.launch -n 4 examples/transformation_infer.py                    # infer
"""Convert 8-rank checkpoints to a 4-rank inference strategy rank by rank, then predict."""

import os
import argparse
import numpy as np
import distinfer as ms
from distinfer import nn, ops
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
ms.set_auto_parallel_context(enable_parallel_optimizer=True)
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
predict_data = ms.Tensor(np.random.randn(1, 28, 28).astype(np.float32))
model = ms.Model(net)
model.infer_predict_layout(predict_data)  # writes dst_strategy.ckpt
save_checkpoint_path = os.path.join(args_opt.dst_checkpoints_dir, "rank_{}".format(get_rank()),
                                    "checkpoint_{}.ckpt".format(get_rank()))
if bool(args_opt.only_compile):
    # Each rank converts its own destination file from the source files it needs.
    rank_list = ms.rank_list_for_transform(get_rank(), args_opt.src_strategy_file, args_opt.dst_strategy_file)
    checkpoint_file_map = {rank_id: os.path.join(args_opt.src_checkpoints_dir, "rank_{}".format(rank_id),
                                                 "checkpoint_{}.ckpt".format(rank_id)) for rank_id in rank_list}
    ms.transform_checkpoint_by_rank(get_rank(), checkpoint_file_map, save_checkpoint_path,
                                    args_opt.src_strategy_file, args_opt.dst_strategy_file)
else:
    param_dict = ms.load_checkpoint(save_checkpoint_path)
    ms.load_param_into_net(net, param_dict)
    predict_result = model.predict(predict_data)
    print(predict_result)
