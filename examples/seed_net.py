"""The seed network of MindSpore's "Model Saving"/"Model Loading" tutorials, written against the MindSpore API.

``Dense.weight`` is ``[in, out]`` and ``construct`` is ``MatMul(x, weight)`` then ``Add(bias)``,
exactly as in the tutorials' samples.
"""
import distinfer as ms
from distinfer import nn, ops
from distinfer.common.initializer import initializer


class Dense(nn.Cell):
    """Dense layer"""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.weight = ms.Parameter(initializer("normal", [in_channels, out_channels], ms.float32))
        self.bias = ms.Parameter(initializer("normal", [out_channels], ms.float32))
        self.matmul = ops.MatMul()
        self.add = ops.Add()

    def construct(self, x):
        x = self.matmul(x, self.weight)
        x = self.add(x, self.bias)
        return x


class Network(nn.Cell):
    """Network"""

    def __init__(self):
        super().__init__()
        self.flatten = ops.Flatten()
        self.layer1 = Dense(28 * 28, 512)
        self.relu1 = ops.ReLU()
        self.layer2 = Dense(512, 512)
        self.relu2 = ops.ReLU()
        self.layer3 = Dense(512, 10)

    def construct(self, x):
        x = self.flatten(x)
        x = self.layer1(x)
        x = self.relu1(x)
        x = self.layer2(x)
        x = self.relu2(x)
        logits = self.layer3(x)
        return logits


def seed_network(shard: bool = True) -> Network:
    """The network, with the tutorials' strategies when ``shard``."""
    net = Network()
    if shard:
        net.layer1.matmul.shard(((2, 1), (1, 2)))
        net.layer3.matmul.shard(((2, 2), (2, 1)))
    return net
