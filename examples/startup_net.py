# The network of MindSpore's startup-method tutorial (docs/sample_code/startup_method/net.py, MindSpore
# 2.3-2.6) for distinfer: the MindSpore imports become distinfer ones. The tutorial starts it with msrun,
# dynamic cluster, a rank table or mpirun; distinfer uses mpirun.
# Run on 8 ranks: python -m distinfer.launch -n 8 examples/startup_net.py
"""Data-parallel training of a one-layer network, each rank on its shard of MNIST."""

import os
import distinfer as ms
import distinfer.dataset as ds
from distinfer import nn
from distinfer.communication import init, get_rank, get_group_size

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
init()
ms.set_seed(1)


class Network(nn.Cell):
    """Flatten, Dense(784, 10), ReLU."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Dense(28 * 28, 10, weight_init="normal", bias_init="zeros")
        self.relu = nn.ReLU()

    def construct(self, x):
        return self.relu(self.fc(self.flatten(x)))


net = Network()


def create_dataset(batch_size):
    """This rank's shard of MNIST, scaled, normalised and laid out CHW, with int32 labels."""
    dataset = ds.MnistDataset(os.getenv("DATA_PATH"), num_shards=get_group_size(), shard_id=get_rank())
    image_transforms = [ds.vision.Rescale(1.0 / 255.0, 0), ds.vision.Normalize(mean=(0.1307,), std=(0.3081,)),
                        ds.vision.HWC2CHW()]
    dataset = dataset.map(image_transforms, 'image')
    dataset = dataset.map(ds.transforms.TypeCast(ms.int32), 'label')
    return dataset.batch(batch_size)


data_set = create_dataset(32)
loss_fn = nn.CrossEntropyLoss()
optimizer = nn.SGD(net.trainable_params(), 1e-2)


def forward_fn(inputs, target):
    """The loss, and the logits as auxiliary output."""
    logits = net(inputs)
    return loss_fn(logits, target), logits


grad_fn = ms.value_and_grad(forward_fn, None, net.trainable_params(), has_aux=True)
grad_reducer = nn.DistributedGradReducer(optimizer.parameters)

for epoch in range(10):
    for i, (data, label) in enumerate(data_set):
        (loss_value, _), grads = grad_fn(data, label)
        optimizer(grad_reducer(grads))
        if i % 10 == 0:
            print("epoch: %s, step: %s, loss is %s" % (epoch, i, loss_value))
