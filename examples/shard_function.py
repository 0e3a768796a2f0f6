# MindSpore's shard function sample (docs/sample_code/shard_function_parallel/shard_function_example.py),
# with only the imports changed from mindspore to distinfer (its comments in English).
# Run on 8 ranks: DATA_PATH=<MNIST train folder> python -m distinfer.launch -n 8 examples/shard_function.py
"""Shard Function Parallel Example"""
import os
import distinfer as ms
from distinfer import nn
import distinfer.dataset as ds
from distinfer.communication import init

ms.set_context(mode=ms.PYNATIVE_MODE)
ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.AUTO_PARALLEL,
                             search_mode="sharding_propagation", device_num=8)
init()
ms.set_seed(1)

class BasicBlock(nn.Cell):
    """A base layer with two dense layer"""
    def __init__(self):
        super(BasicBlock, self).__init__()
        self.dense1 = nn.Dense(128, 256)
        self.gelu = nn.GELU()
        self.dense2 = nn.Dense(256, 128)
    def construct(self, x):
        x = self.dense1(x)
        x = self.gelu(x)
        x = self.dense2(x)
        return x

class Net(nn.Cell):
    """A network with three basicblock"""
    def __init__(self):
        super(Net, self).__init__()
        self.block1 = BasicBlock()
        self.block2 = BasicBlock()
        self.block3 = BasicBlock()
    def construct(self, x):
        # All blocks here run in PyNative mode
        x = self.block1(x)
        x = self.block2(x)
        x = self.block3(x)
        return x

class Net1(Net):
    """A shard function example"""
    def __init__(self):
        super(Net1, self).__init__()
        self.flatten = nn.Flatten()
        self.layer1 = nn.Dense(28*28, 128)
        self.layer2 = nn.Dense(128, 10)
        # Slice the input along its second axis, so that the output has a data-parallel layout
        self.block1_shard = self.block1.shard(in_strategy=((1, 8),),
                                              parameter_plan={'self.block1.dense2.weight': (8, 1)})

    def construct(self, x):
        x = self.flatten(x)
        x = self.layer1(x)
        # block1 runs in graph mode
        x = self.block1_shard(x)
        # block2 and block3 run in PyNative mode
        x = self.block2(x)
        x = self.block3(x)
        x = self.layer2(x)
        return x

net = Net1()

def create_dataset(batch_size):
    """create dataset"""
    dataset_path = os.getenv("DATA_PATH")
    dataset = ds.MnistDataset(dataset_path)
    image_transforms = [
        ds.vision.Rescale(1.0 / 255.0, 0),
        ds.vision.Normalize(mean=(0.1307,), std=(0.3081,)),
        ds.vision.HWC2CHW()
    ]
    label_transform = ds.transforms.TypeCast(ms.int32)
    dataset = dataset.map(image_transforms, 'image')
    dataset = dataset.map(label_transform, 'label')
    dataset = dataset.batch(batch_size)
    return dataset

data_set = create_dataset(32)
optimizer = nn.SGD(net.trainable_params(), 1e-1)
loss_fn = nn.CrossEntropyLoss()

def forward_fn(data, target):
    """forward propagation"""
    logits = net(data)
    loss = loss_fn(logits, target)
    return loss, logits

grad_fn = ms.value_and_grad(forward_fn, None, net.trainable_params(), has_aux=True)

for epoch in range(5):
    i = 0
    for image, label in data_set:
        (loss_value, _), grads = grad_fn(image, label)
        optimizer(grads)
        if i % 100 == 0:
            print("epoch: %s, step: %s, loss is %s" % (epoch, i, loss_value))
        i += 1

print("=========Finish=========")
