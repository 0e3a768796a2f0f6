# MindSpore 2.6's version of the operator-parallel tutorial sample (docs/sample_code/
# distributed_operator_parallel/distributed_operator_parallel.py) for distinfer: the parallel setup moves
# from the global context to AutoParallel, the strategies to the primitives' constructors, and parameter
# initialisation is deferred with no_init_parameters. MindSpore runs it under pytest
# (pytest operator_parallel_auto.py::test_distributed_operator_parallel); it also runs as a script.
# Run on 8 ranks: python -m distinfer.launch -n 8 examples/operator_parallel_auto.py
"""Operator parallel with AutoParallel wrapping a functional training step."""

import os
import distinfer as ms
import distinfer.dataset as ds
import distinfer.runtime as rt
from distinfer import nn, ops
from distinfer.communication import init
from distinfer.common.initializer import initializer
from distinfer.nn.utils import no_init_parameters
from distinfer.parallel.auto_parallel import AutoParallel

ms.set_context(mode=ms.GRAPH_MODE)
rt.set_memory(max_size="28GB")  # a device setting: accepted, no effect on CPUs
init()
ms.set_seed(1)


class Network(nn.Cell):
    """Three bias-free MatMuls, each primitive sharded where it is made."""

    def __init__(self):
        super().__init__()
        self.flatten = ops.Flatten()
        self.fc1_weight = ms.Parameter(initializer("normal", [28 * 28, 512], ms.float32))
        self.fc2_weight = ms.Parameter(initializer("normal", [512, 512], ms.float32))
        self.fc3_weight = ms.Parameter(initializer("normal", [512, 10], ms.float32))
        self.matmul1 = ops.MatMul().shard(((2, 4), (4, 1)))
        self.relu1 = ops.ReLU().shard(((4, 1),))
        self.matmul2 = ops.MatMul().shard(((1, 8), (8, 1)))
        self.relu2 = ops.ReLU().shard(((8, 1),))
        self.matmul3 = ops.MatMul()

    def construct(self, x):
        x = self.relu1(self.matmul1(self.flatten(x), self.fc1_weight))
        x = self.relu2(self.matmul2(x, self.fc2_weight))
        return self.matmul3(x, self.fc3_weight)


def create_dataset(batch_size):
    """MNIST scaled, normalised and laid out CHW, with int32 labels."""
    dataset = ds.MnistDataset(os.getenv("DATA_PATH"))
    image_transforms = [ds.vision.Rescale(1.0 / 255.0, 0), ds.vision.Normalize(mean=(0.1307,), std=(0.3081,)),
                        ds.vision.HWC2CHW()]
    dataset = dataset.map(image_transforms, 'image')
    dataset = dataset.map(ds.transforms.TypeCast(ms.int32), 'label')
    return dataset.batch(batch_size)


def test_distributed_operator_parallel():
    """Ten epochs of SGD; the step function is the parallel network."""
    data_set = create_dataset(32)
    with no_init_parameters():  # values come when the parallel step first runs
        net = Network()
        optimizer = nn.SGD(net.trainable_params(), 1e-2)
    loss_fn = nn.CrossEntropyLoss()

    def forward_fn(data, target):
        logits = net(data)
        return loss_fn(logits, target), logits

    grad_fn = ms.value_and_grad(forward_fn, None, net.trainable_params(), has_aux=True)

    def train_step(inputs, targets):
        (loss_value, _), grads = grad_fn(inputs, targets)
        optimizer(grads)
        return loss_value

    parallel_net = AutoParallel(train_step, parallel_mode="semi_auto")
    for epoch in range(10):
        for i, (image, label) in enumerate(data_set):
            loss_output = parallel_net(image, label)
            if i % 10 == 0:
                print("epoch: %s, step: %s, loss is %s" % (epoch, i, loss_output))


if __name__ == "__main__":
    test_distributed_operator_parallel()
