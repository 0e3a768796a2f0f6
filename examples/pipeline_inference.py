# MindSpore's pipeline-parallel inference sample (docs/sample_code/distributed_pipeline_parallel/
# distributed_pipeline_parallel_inference.py, MindSpore 2.3-2.6) for distinfer: the MindSpore imports
# become distinfer ones. Four stages of 2 ranks; the embedding table of stage 0 is also the output head's
# weight on stage 3, and the result is broadcast from the last stage to all.
# Run on 8 ranks: python -m distinfer.launch -n 8 examples/pipeline_inference.py
"""Pipeline parallel inference over 4 micro-batches with a weight shared by the first and last stage."""

import numpy as np
import distinfer as ms
from distinfer import lazy_inline, nn, ops, Tensor, Parameter
from distinfer.communication import init
from distinfer import sync_pipeline_shared_parameters

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.SEMI_AUTO_PARALLEL, dataset_strategy="full_batch",
                             pipeline_stages=4, pipeline_result_broadcast=True)
init()
ms.set_seed(1)


class VocabEmbedding(nn.Cell):
    """Looks tokens up in a table of ones and hands the table on (the head reuses it)."""

    def __init__(self, vocab_size, embedding_size):
        super().__init__()
        self.embedding_table = Parameter(Tensor(np.ones([vocab_size, embedding_size]), ms.float32),
                                         name='embedding_table')
        self.gather = ops.Gather()

    def construct(self, x):
        output = self.gather(self.embedding_table, x, 0)
        return output.squeeze(1), self.embedding_table.value()


class Head(nn.Cell):
    """Logits against the embedding table: state @ table^T."""

    def __init__(self):
        super().__init__()
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, state, embed):
        return self.matmul(state, embed)


class Network(nn.Cell):
    """Embedding, two Dense layers, head: one Cell per stage."""

    @lazy_inline
    def __init__(self):
        super().__init__()
        self.word_embedding = VocabEmbedding(vocab_size=32, embedding_size=32)
        self.layer1 = nn.Dense(32, 32)
        self.layer2 = nn.Dense(32, 32)
        self.head = Head()

    def construct(self, x):
        x, embed = self.word_embedding(x)
        x = self.layer2(self.layer1(x))
        return self.head(x, embed)


net = Network()
net.word_embedding.pipeline_stage = 0
net.layer1.pipeline_stage = 1
net.layer2.pipeline_stage = 2
net.head.pipeline_stage = 3


class PipelineCellInference(nn.Cell):
    """Runs the network on equal micro-batches of the input and concatenates the outputs."""

    def __init__(self, network, micro_batch_num):
        super().__init__()
        self.network = network
        self.micro_batch_num = micro_batch_num
        self.concat = ops.Concat()

    def construct(self, x):
        ret = ()
        micro_batch_size = x.shape[0] // self.micro_batch_num
        for i in range(self.micro_batch_num):
            ret = ret + (self.network(x[micro_batch_size * i:micro_batch_size * (i + 1)]),)
        return self.concat(ret)


inference_network = PipelineCellInference(network=net, micro_batch_num=4)
inference_network.set_train(False)

input_ids = Tensor(np.random.randint(low=0, high=32, size=(8, 1)), ms.int32)
inference_network.compile(input_ids)
sync_pipeline_shared_parameters(inference_network)
logits = inference_network(input_ids)
print(logits.asnumpy())
