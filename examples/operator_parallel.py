# MindSpore's operator-parallel tutorial sample (docs/sample_code/distributed_operator_parallel/
# distributed_operator_parallel.py, MindSpore 2.5) for distinfer: the MindSpore imports become distinfer ones.
# Three MatMuls with their own strategies train on MNIST in a jit-compiled functional step.
# Run on 8 ranks: python -m distinfer.launch -n 8 examples/operator_parallel.py
# (DATA_PATH: an MNIST folder; unset, the embedded subset is used)
"""Operator parallel: each MatMul and ReLU gets its own sharding strategy."""

import os
import distinfer as ms
import distinfer.dataset as ds
import distinfer.runtime as rt
from distinfer import nn, ops
from distinfer.communication import init
from distinfer.common.initializer import initializer

ms.set_context(mode=ms.GRAPH_MODE)
rt.set_memory(max_size="28GB")  # a device setting: accepted, no effect on CPUs
ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.SEMI_AUTO_PARALLEL)
init()
ms.set_seed(1)


class Network(nn.Cell):
    """Flatten, then three bias-free MatMuls with ReLUs between them."""

    def __init__(self):
        super().__init__()
        self.flatten = ops.Flatten()
        self.fc1_weight = ms.Parameter(initializer("normal", [28 * 28, 512], ms.float32))
        self.fc2_weight = ms.Parameter(initializer("normal", [512, 512], ms.float32))
        self.fc3_weight = ms.Parameter(initializer("normal", [512, 10], ms.float32))
        self.matmul1 = ops.MatMul()
        self.relu1 = ops.ReLU()
        self.matmul2 = ops.MatMul()
        self.relu2 = ops.ReLU()
        self.matmul3 = ops.MatMul()

    def construct(self, x):
        x = self.relu1(self.matmul1(self.flatten(x), self.fc1_weight))
        x = self.relu2(self.matmul2(x, self.fc2_weight))
        return self.matmul3(x, self.fc3_weight)


net = Network()
net.matmul1.shard(((2, 4), (4, 1)))   # rows in 2, the contraction in 4: a partial sum reduced over 4 ranks
net.relu1.shard(((4, 1),))
net.matmul2.shard(((1, 8), (8, 1)))   # the contraction in 8
net.relu2.shard(((8, 1),))            # matmul3 keeps the batch-parallel default


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


def forward_fn(data, target):
    """The loss, and the logits as auxiliary output."""
    logits = net(data)
    return loss_fn(logits, target), logits


grad_fn = ms.value_and_grad(forward_fn, None, net.trainable_params(), has_aux=True)


@ms.jit
def train_step(inputs, targets):
    """One SGD step; as a jit function it runs as one parallel graph."""
    (loss_value, _), grads = grad_fn(inputs, targets)
    optimizer(grads)
    return loss_value


for epoch in range(10):
    for i, (image, label) in enumerate(data_set):
        loss_output = train_step(image, label)
        if i % 10 == 0:
            print("epoch: %s, step: %s, loss is %s" % (epoch, i, loss_output))
