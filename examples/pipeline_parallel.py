# MindSpore's pipeline-parallel training sample (docs/sample_code/distributed_pipeline_parallel/
# distributed_pipeline_parallel.py, MindSpore 2.3-2.6) for distinfer: the MindSpore imports become
# distinfer ones. Two stages of 4 ranks, 4 micro-batches, a functional training step with
# PipelineGradReducer, and an ops.Print inside the first stage.
# Run on 8 ranks: python -m distinfer.launch -n 8 examples/pipeline_parallel.py
"""Pipeline parallel training, functional form: stage 0 = layer1..layer2, stage 1 = relu2..layer3."""

import os
import math
import distinfer as ms
import distinfer.dataset as ds
from distinfer import nn, ops, Parameter
from distinfer.communication import init
from distinfer.common.initializer import initializer, HeUniform

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.SEMI_AUTO_PARALLEL, pipeline_stages=2)
init()
ms.set_seed(1)


class MatMulCell(nn.Cell):
    """A bias-free linear layer that prints its output (on the ranks of its stage)."""

    def __init__(self, param=None, shape=None):
        super().__init__()
        if shape is None:
            shape = [28 * 28, 512]
        self.param = Parameter(initializer(HeUniform(math.sqrt(5)), shape), name="param")
        if param is not None:
            self.param = param
        self.print = ops.Print()
        self.matmul = ops.MatMul()

    def construct(self, x):
        out = self.matmul(x, self.param)
        self.print("out is:", out)
        return out


class Network(nn.Cell):
    """Flatten, MatMulCell, two Dense layers, ReLUs between them."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.layer1 = MatMulCell()
        self.relu1 = nn.ReLU()
        self.layer2 = nn.Dense(512, 512)
        self.relu2 = nn.ReLU()
        self.layer3 = nn.Dense(512, 10)

    def construct(self, x):
        x = self.relu1(self.layer1(self.flatten(x)))
        x = self.relu2(self.layer2(x))
        return self.layer3(x)


net = Network()
net.layer1.pipeline_stage = 0
net.relu1.pipeline_stage = 0
net.layer2.pipeline_stage = 0
net.relu2.pipeline_stage = 1
net.layer3.pipeline_stage = 1


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
net_with_loss = nn.PipelineCell(nn.WithLossCell(net, loss_fn), 4)  # the summed loss of 4 micro-batches
net_with_loss.set_train()


def forward_fn(inputs, target):
    return net_with_loss(inputs, target)


grad_fn = ops.value_and_grad(forward_fn, None, optimizer.parameters)
pp_grad_reducer = nn.PipelineGradReducer(optimizer.parameters)


@ms.jit
def train_one_step(inputs, target):
    """One step: the loss is on the last stage (0 on the others), as in MindSpore."""
    loss, grads = grad_fn(inputs, target)
    grads = pp_grad_reducer(grads)
    optimizer(grads)
    return loss, grads


for epoch in range(10):
    for i, (data, label) in enumerate(data_set):
        loss_value, grads_value = train_one_step(data, label)
        if i % 10 == 0:
            print("epoch: %s, step: %s, loss is %s" % (epoch, i, loss_value))
