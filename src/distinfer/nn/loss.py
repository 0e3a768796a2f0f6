"""Losses with MindSpore's names and reductions, built from sharded primitives.

>>> import numpy as np, distinfer as ms
>>> from distinfer import nn
>>> loss = nn.CrossEntropyLoss()
>>> logits = ms.Tensor(np.zeros((2, 4), np.float32))
>>> round(float(loss(logits, ms.Tensor(np.array([1, 3], np.int32))).asnumpy()), 4)
1.3863
"""
from __future__ import annotations

from .. import dtype as mstype
from ..ops import function as F, operations as P
from .cell import Cell

__all__ = ["LossBase", "SoftmaxCrossEntropyWithLogits", "CrossEntropyLoss", "MSELoss", "L1Loss"]

_INT_LABELS = (mstype.int32, mstype.int64)


class LossBase(Cell):
    """Applies ``reduction`` ('mean', 'sum' or 'none') to a per-element loss.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> class Half(nn.LossBase):  # a custom loss: 0.5 * x, then the reduction
    ...     def construct(self, x):
    ...         return self.get_loss(x, 0.5)
    >>> x = ms.Tensor(np.array([1.0, 2.0, 3.0], np.float32))
    >>> float(Half()(x).asnumpy()), float(Half("sum")(x).asnumpy()), Half("none")(x).asnumpy().tolist()
    (1.0, 3.0, [0.5, 1.0, 1.5])
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction
        self.reduce_mean = P.ReduceMean()
        self.reduce_sum = P.ReduceSum()

    def get_loss(self, x, weights=1.0):
        if weights != 1.0:
            x = F.mul(x, weights)
        if self.reduction == "mean":
            return self.reduce_mean(x, ())
        if self.reduction == "sum":
            return self.reduce_sum(x, ())
        return x


def _check_logits(name: str, logits) -> None:
    if len(logits.shape) != 2:
        raise ValueError(f"{name}: logits must be [batch, classes], got shape {tuple(logits.shape)}")


class SoftmaxCrossEntropyWithLogits(LossBase):
    """``SoftmaxCrossEntropyWithLogits(sparse=False, reduction='none')``.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> logits = ms.Tensor(np.array([[2.0, 0.0], [0.0, 2.0]], np.float32))
    >>> loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True)  # reduction 'none': one loss per row
    >>> loss(logits, ms.Tensor(np.array([0, 0], np.int32))).asnumpy().astype(float).round(4).tolist()
    [0.1269, 2.1269]
    """

    def __init__(self, sparse: bool = False, reduction: str = "none") -> None:
        super().__init__(reduction)
        self.sparse = sparse
        self.sparse_ce = P.SparseSoftmaxCrossEntropyWithLogits()
        self.ce = P.SoftmaxCrossEntropyWithLogits()
        self.one_hot = P.OneHot()

    def construct(self, logits, labels):
        _check_logits(type(self).__name__, logits)
        if self.sparse:
            if labels.dtype not in _INT_LABELS:
                raise TypeError(f"{type(self).__name__}(sparse=True): labels must be Int32 or Int64 class indices, "
                                f"got {labels.dtype} with shape {tuple(labels.shape)}")
            if self.reduction == "mean":
                return self.sparse_ce(logits, labels)
            labels = self.one_hot(labels, logits.shape[-1], 1.0, 0.0)
        loss, _ = self.ce(logits, F.cast(labels, logits.dtype))
        return self.get_loss(loss)


class CrossEntropyLoss(LossBase):
    """``CrossEntropyLoss(weight=None, ignore_index=-100, reduction='mean', label_smoothing=0.0)``.

    Labels are class indices (Int32/Int64, shape ``[N]``) or class probabilities (``[N, C]``).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> logits, loss = ms.Tensor(np.array([[2.0, 0.0], [0.0, 2.0]], np.float32)), nn.CrossEntropyLoss()
    >>> round(float(loss(logits, ms.Tensor(np.array([0, 1], np.int32))).asnumpy()), 4)  # class indices
    0.1269
    >>> round(float(loss(logits, ms.Tensor(np.full((2, 2), 0.5, np.float32))).asnumpy()), 4)  # probabilities
    1.1269
    """

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        if weight is not None or label_smoothing:
            raise ValueError("CrossEntropyLoss: class weights and label smoothing are not supported")
        self.ignore_index = ignore_index
        self.inner = SoftmaxCrossEntropyWithLogits(sparse=True, reduction=reduction)
        self.dense = SoftmaxCrossEntropyWithLogits(sparse=False, reduction=reduction)

    def construct(self, logits, labels):
        _check_logits("CrossEntropyLoss", logits)
        if labels.dtype in _INT_LABELS:
            if tuple(labels.shape) != tuple(logits.shape[:1]):
                raise ValueError(f"CrossEntropyLoss: class-index labels must have shape {tuple(logits.shape[:1])}, "
                                 f"got {tuple(labels.shape)}")
            return self.inner(logits, labels)
        if tuple(labels.shape) != tuple(logits.shape):
            raise TypeError(f"CrossEntropyLoss: labels of dtype {labels.dtype} and shape {tuple(labels.shape)} are "
                            f"neither Int32/Int64 class indices of shape {tuple(logits.shape[:1])} nor class "
                            f"probabilities of shape {tuple(logits.shape)}")
        return self.dense(logits, labels)


class MSELoss(LossBase):
    """``MSELoss(reduction='mean')``.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> a, b = ms.Tensor(np.array([1.0, 2.0, 4.0], np.float32)), ms.Tensor(np.array([1.0, 0.0, 5.0], np.float32))
    >>> round(float(nn.MSELoss()(a, b).asnumpy()), 4), nn.MSELoss(reduction="none")(a, b).asnumpy().tolist()
    (1.6667, [0.0, 4.0, 1.0])
    """

    def construct(self, logits, labels):
        return self.get_loss(F.square(F.sub(logits, labels)))


class L1Loss(LossBase):
    """``L1Loss(reduction='mean')``.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> a, b = ms.Tensor(np.array([1.0, 2.0, 4.0], np.float32)), ms.Tensor(np.array([1.0, 0.0, 5.0], np.float32))
    >>> float(nn.L1Loss(reduction="sum")(a, b).asnumpy()), nn.L1Loss(reduction="none")(a, b).asnumpy().tolist()
    (3.0, [0.0, 2.0, 1.0])
    """

    def construct(self, logits, labels):
        return self.get_loss(F.abs(F.sub(logits, labels)))
