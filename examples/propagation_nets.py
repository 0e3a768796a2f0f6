"""The networks of MindSpore's sharding propagation and shard function samples, importable by tests
(``sharding_propagation.py`` and ``shard_function.py`` train as soon as they run).

``FFN`` is the propagation tutorial's network, built from the tutorials' ``Dense`` (``MatMul`` then
``Add``); ``ShardFunctionNet`` is the shard function sample's ``Net1``: ``block1`` runs with its input
split along the second axis and ``block1.dense2.weight`` split by rows, over the stage's devices.
:func:`gpt_key_ops_only` configures a GPT block the way MindSpore's split-technique guide advises for
sharding propagation: strategies on its key ops only.
"""
import distinfer as ms
from distinfer import nn, ops

from seed_net import Dense


class FFN(nn.Cell):
    """FeedForward Network"""

    def __init__(self):
        super().__init__()
        self.flatten = ops.Flatten()
        self.dense1 = Dense(28 * 28, 64)
        self.relu = ops.ReLU()
        self.dense2 = Dense(64, 10)

    def construct(self, x):
        x = self.flatten(x)
        x = self.dense1(x)
        x = self.relu(x)
        x = self.dense2(x)
        return x


class BasicBlock(nn.Cell):
    """A base layer with two dense layers"""

    def __init__(self):
        super().__init__()
        self.dense1 = nn.Dense(128, 256)
        self.gelu = nn.GELU()
        self.dense2 = nn.Dense(256, 128)

    def construct(self, x):
        return self.dense2(self.gelu(self.dense1(x)))


class ShardFunctionNet(nn.Cell):
    """Three blocks between two Dense layers; ``block1`` sharded as the sample does (over ``device_num``)."""

    def __init__(self):
        super().__init__()
        self.block1, self.block2, self.block3 = BasicBlock(), BasicBlock(), BasicBlock()
        self.flatten = nn.Flatten()
        self.layer1 = nn.Dense(28 * 28, 128)
        self.layer2 = nn.Dense(128, 10)
        n = ms.get_auto_parallel_context("device_num")
        self.block1_shard = self.block1.shard(in_strategy=((1, n),), parameter_plan={"self.block1.dense2.weight": (n, 1)})

    def construct(self, x):
        x = self.layer1(self.flatten(x))
        x = self.block1_shard(x)
        return self.layer2(self.block3(self.block2(x)))


# The GPT block's ops with weights and those that change dims (the guide's "key operators").
KEY_OPS = ("gather", "qkv", "split_qkv", "scores", "context", "proj", "fc", "fc_proj", "head")


def gpt_key_ops_only(net, dp: int, mp: int):
    """``net`` (a ``gpt_block.GPTBlock``) with the Megatron strategies of ``shard_gpt`` on its key ops only."""
    from gpt_block import GPTBlock, shard_gpt

    megatron = shard_gpt(GPTBlock(vocab=net.vocab, hidden=net.hidden, heads=net.heads, seq=net.seq, ffn=net.ffn),
                         dp, mp)
    for name in KEY_OPS:
        getattr(net, name).shard(getattr(megatron, name).in_strategy)
    return net
