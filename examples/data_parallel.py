# MindSpore's data-parallel tutorial sample (docs/sample_code/distributed_data_parallel/
# distributed_data_parallel.py, MindSpore 2.3-2.6) for distinfer: the MindSpore imports become distinfer
# ones. Each rank trains the whole network on its own shard of MNIST; gradients are averaged across ranks.
# Run on 8 ranks: python -m distinfer.launch -n 8 examples/data_parallel.py
"""Data parallel: one model replica per rank, gradients averaged by DistributedGradReducer."""

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
    """Flatten and a Dense-ReLU-Dense-ReLU-Dense stack with normal weights and zero biases."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.dense_relu_sequential = nn.SequentialCell(
            nn.Dense(28 * 28, 512, weight_init="normal", bias_init="zeros"),
            nn.ReLU(),
            nn.Dense(512, 512, weight_init="normal", bias_init="zeros"),
            nn.ReLU(),
            nn.Dense(512, 10, weight_init="normal", bias_init="zeros"),
        )

    def construct(self, x):
        return self.dense_relu_sequential(self.flatten(x))


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
optimizer = nn.SGD(net.trainable_params(), 1e-2)
loss_fn = nn.CrossEntropyLoss()


def forward_fn(data, target):
    """The loss, and the logits as auxiliary output."""
    logits = net(data)
    return loss_fn(logits, target), logits


grad_fn = ms.value_and_grad(forward_fn, None, net.trainable_params(), has_aux=True)
grad_reducer = nn.DistributedGradReducer(optimizer.parameters)

for epoch in range(10):
    for i, (image, label) in enumerate(data_set):
        (loss_value, _), grads = grad_fn(image, label)
        optimizer(grad_reducer(grads))
        if i % 10 == 0:
            print("epoch: %s, step: %s, loss is %s" % (epoch, i, loss_value))
