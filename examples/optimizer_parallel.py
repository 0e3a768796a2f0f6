# MindSpore's optimizer-parallel tutorial sample (docs/sample_code/distributed_optimizer_parallel/
# distributed_optimizer_parallel.py, MindSpore 2.3-2.6) for distinfer: the MindSpore imports become
# distinfer ones. Data parallel over 8 ranks with the parallel optimizer: each rank keeps and updates
# only its share of the weights and optimizer state.
# Run on 8 ranks: python -m distinfer.launch -n 8 examples/optimizer_parallel.py
"""Optimizer parallel: weights and optimizer state sharded across the data-parallel ranks."""

import os
import distinfer as ms
import distinfer.dataset as ds
from distinfer import nn
from distinfer.communication import init

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.SEMI_AUTO_PARALLEL, enable_parallel_optimizer=True)
init()
ms.set_seed(1)


class Network(nn.Cell):
    """Flatten and three Dense layers with ReLUs."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.layer1 = nn.Dense(28 * 28, 512)
        self.layer2 = nn.Dense(512, 512)
        self.layer3 = nn.Dense(512, 10)
        self.relu = nn.ReLU()

    def construct(self, x):
        x = self.relu(self.layer1(self.flatten(x)))
        x = self.relu(self.layer2(x))
        return self.layer3(x)


net = Network()
net.layer1.set_comm_fusion(0)  # one gradient-communication group per layer
net.layer2.set_comm_fusion(1)
net.layer3.set_comm_fusion(2)


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
    """One SGD step, run as one parallel graph."""
    (loss_value, _), grads = grad_fn(inputs, targets)
    optimizer(grads)
    return loss_value


for epoch in range(10):
    for i, (image, label) in enumerate(data_set):
        loss_output = train_step(image, label)
        if i % 10 == 0:
            print("epoch: %s, step: %s, loss is %s" % (epoch, i, loss_output))
