"""Training wrappers: ``WithLossCell``, ``TrainOneStepCell``, ``WithEvalCell``.

In semi-auto parallel the gradients come out of the sharded backward already reduced
(partial sums over the batch axes are AllReduced when a parameter's gradient is read), so the
step equals single-process training on the global batch. In ``data_parallel`` mode every rank
runs the whole network on its own batch and the gradients are AllReduced here, averaged when
``gradients_mean`` is set — MindSpore's ``DistributedGradReducer``.
"""
from __future__ import annotations

from .. import context
from ..autograd import Tape, gradients
from ..communication import _backend
from ..layout import replicated
from ..parallel import _executor as ex
from ..ops import function as F
from ..ops import operations as P
from ..tensor import Tensor
from .cell import Cell

__all__ = ["WithLossCell", "TrainOneStepCell", "WithEvalCell", "DistributedGradReducer", "PipelineCell",
           "PipelineGradReducer"]


class WithLossCell(Cell):
    """``WithLossCell(backbone, loss_fn)``: ``loss_fn(backbone(data), label)``.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> net = nn.Dense(2, 1, weight_init="ones", bias_init="zeros")
    >>> with_loss = nn.WithLossCell(net, nn.MSELoss())
    >>> x, y = ms.Tensor(np.array([[1.0, 2.0]], np.float32)), ms.Tensor(np.array([[5.0]], np.float32))
    >>> float(with_loss(x, y).asnumpy()), with_loss.backbone_network is net  # (3 - 5) ** 2
    (4.0, True)
    """

    def __init__(self, backbone: Cell, loss_fn: Cell) -> None:
        super().__init__(auto_prefix=False)
        self._backbone = backbone
        self._loss_fn = loss_fn

    @property
    def backbone_network(self) -> Cell:
        return self._backbone

    def construct(self, data, label):
        return self._loss_fn(self._backbone(data), label)


class PipelineCell(Cell):
    """``PipelineCell(network, micro_size)``: the batch cut into ``micro_size`` micro-batches along dim 0,
    run one after another; returns the sum of their outputs (losses), as MindSpore's does.

    Stages do not overlap (no 1F1B schedule): each micro-batch goes through every stage in turn.

    Without ``mpirun`` there is one stage, so the example shows the micro-batch split only: the
    sum of two half-batch losses equals the whole batch's summed loss.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> net = nn.WithLossCell(nn.Dense(2, 1, weight_init="ones", bias_init="zeros"), nn.L1Loss(reduction="sum"))
    >>> x = ms.Tensor(np.array([[1.0, 2.0], [0.0, 1.0]], np.float32))
    >>> y = ms.Tensor(np.array([[4.0], [3.0]], np.float32))
    >>> float(nn.PipelineCell(net, micro_size=2)(x, y).asnumpy()), float(net(x, y).asnumpy())
    (3.0, 3.0)
    """

    def __init__(self, network: Cell, micro_size: int, stage_config=None) -> None:
        super().__init__(auto_prefix=False)
        if isinstance(micro_size, bool) or not isinstance(micro_size, int) or micro_size < 1:
            raise ValueError(f"PipelineCell: micro_size must be an int >= 1, got {micro_size!r}")
        self.network = network
        self.micro_size = micro_size
        self.split = P.Split(0, micro_size)
        self.add = P.Add()

    def construct(self, *inputs):
        pieces = []
        for x in inputs:
            if isinstance(x, Tensor):
                if not x.shape or x.shape[0] % self.micro_size:
                    raise ValueError(f"PipelineCell: a batch of {x.shape[0] if x.shape else 0} rows cannot be cut "
                                     f"into micro_size={self.micro_size} equal micro-batches (input shape "
                                     f"{tuple(x.shape)})")
                pieces.append(self.split(x) if self.micro_size > 1 else (x,))
            else:
                pieces.append((x,) * self.micro_size)
        total = None
        for i in range(self.micro_size):
            out = self.network(*(p[i] for p in pieces))
            total = out if total is None else self.add(total, out)
        return total


class WithEvalCell(Cell):
    """``WithEvalCell(network, loss_fn)`` -> ``(loss, outputs, label)``.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> net = nn.Dense(2, 1, weight_init="ones", bias_init="zeros")
    >>> x, y = ms.Tensor(np.array([[1.0, 2.0]], np.float32)), ms.Tensor(np.array([[5.0]], np.float32))
    >>> loss, out, label = nn.WithEvalCell(net, nn.L1Loss())(x, y)
    >>> float(loss.asnumpy()), out.asnumpy().tolist(), label is y
    (2.0, [[3.0]], True)
    """

    def __init__(self, network: Cell, loss_fn: Cell, add_cast_fp32: bool = False) -> None:
        super().__init__(auto_prefix=False)
        self._network = network
        self._loss_fn = loss_fn

    def construct(self, data, label):
        outputs = self._network(data)
        return self._loss_fn(outputs, label), outputs, label


class DistributedGradReducer(Cell):
    """AllReduce of whole gradients across data-parallel ranks (mean when ``mean``).

    The reduction needs an MPI job; in one process (one rank) the gradients are returned as they are.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> net = nn.Dense(2, 1)
    >>> grads = (ms.Tensor(np.ones((1, 2), np.float32)), ms.Tensor(np.ones(1, np.float32)))
    >>> nn.DistributedGradReducer(net.trainable_params(), mean=True)(grads) is grads
    True
    """

    _plan_boundary = False  # runs no ops of its own: not a graph for sharding propagation

    def __init__(self, parameters, mean: bool = True, degree: int | None = None) -> None:
        super().__init__(auto_prefix=False)
        self.mean = mean
        self.degree = degree

    def construct(self, grads):
        world = _backend.world()
        if world.size == 1:
            return grads
        degree = self.degree or world.size
        out = []
        for g in grads:
            total = world.allreduce(g.asnumpy(), ((tuple(range(world.size))),))
            out.append(Tensor(total / degree if self.mean else total))
        return tuple(out)


class PipelineGradReducer(Cell):
    """``PipelineGradReducer(parameters, scale_sense=1.0, opt_shard=None)``: the gradient step of
    functional pipeline training (``grads = reducer(grads)`` before the optimizer).

    In MindSpore the pipeline graph accumulates each micro-batch's gradients into ``accu_grads``
    buffers that this cell reads, divides by ``scale_sense`` and clears. distinfer's backward pass
    through :class:`PipelineCell` already yields the gradients summed over the micro-batches and
    reduced over the data-parallel ranks, so the cell only divides them by ``scale_sense``.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> net = nn.Dense(2, 1)
    >>> grads = (ms.Tensor(np.full((1, 2), 4.0, np.float32)), ms.Tensor(np.full(1, 2.0, np.float32)))
    >>> [g.asnumpy().tolist() for g in nn.PipelineGradReducer(net.trainable_params(), scale_sense=2.0)(grads)]
    [[[2.0, 2.0]], [1.0]]
    """

    def __init__(self, parameters, scale_sense: float = 1.0, opt_shard: bool | None = None) -> None:
        super().__init__(auto_prefix=False)
        if isinstance(scale_sense, bool) or not isinstance(scale_sense, (int, float)) or scale_sense <= 0:
            raise ValueError(f"For 'PipelineGradReducer', 'scale_sense' must be a positive number, got {scale_sense!r}")
        self.parameters = tuple(parameters)
        self.scale_sense = float(scale_sense)
        self.opt_shard = context.get_auto_parallel_context("enable_parallel_optimizer") if opt_shard is None \
            else opt_shard

    def construct(self, grads):
        if self.scale_sense == 1.0:
            return tuple(grads)
        return tuple(F.div(g, self.scale_sense) for g in grads)


def _replicated_value(t: Tensor) -> Tensor:
    """A whole-tensor view of a (possibly laid-out or partial) scalar such as a loss, on every rank
    (with pipeline stages, sent from the stage that computed it)."""
    if t.layout is None:
        return t
    return Tensor(ex.output_block(t, replicated(t.global_shape, t.layout.num_devices), broadcast=True))


class TrainOneStepCell(Cell):
    """``TrainOneStepCell(network, optimizer, sens=1.0)``: forward, backward, update; returns the loss.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> net = nn.Dense(2, 1, weight_init="zeros", bias_init="zeros")
    >>> step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.SGD(net.trainable_params(), 0.1))
    >>> x, y = ms.Tensor(np.array([[1.0, 2.0]], np.float32)), ms.Tensor(np.array([[3.0]], np.float32))
    >>> [round(float(step(x, y).asnumpy()), 4) for _ in range(3)]  # the loss before each update
    [9.0, 0.36, 0.0144]
    >>> net.weight.asnumpy().astype(float).round(4).tolist()
    [[0.504, 1.008]]
    """

    _plan_boundary = False  # runs no ops of its own: not a graph for sharding propagation

    def __init__(self, network: Cell, optimizer: Cell, sens: float = 1.0, return_grad: bool = False) -> None:
        super().__init__(auto_prefix=False)
        self.network = network
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.sens = sens
        self.return_grad = return_grad
        self.grad_reducer = None
        if context.parallel_mode() in (context.ParallelMode.DATA_PARALLEL, context.ParallelMode.HYBRID_PARALLEL):
            self.grad_reducer = DistributedGradReducer(self.weights,
                                                       context.get_auto_parallel_context("gradients_mean"))

    def construct(self, *inputs):
        self.network.set_train(True)
        tape = Tape(list(self.weights))
        with ex.observing(tape):
            loss = self.network(*inputs)
        grads = gradients(tape, loss, list(self.weights), self.sens)
        if self.grad_reducer is not None:
            grads = self.grad_reducer(grads)
        self.optimizer(grads)
        loss = _replicated_value(loss)
        return (loss, grads) if self.return_grad else loss