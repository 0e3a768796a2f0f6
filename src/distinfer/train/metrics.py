"""Evaluation metrics for ``Model.eval``: accuracy and mean loss over a dataset, across ranks."""
from __future__ import annotations

import numpy as np

from .. import context
from ..communication import _backend
from ..layout import replicated
from ..parallel import _executor as ex

__all__ = ["evaluate"]

_KNOWN = {"accuracy": "accuracy", "acc": "accuracy", "loss": "loss"}


def _names(metrics) -> dict[str, str]:
    if metrics is None:
        raise ValueError("Model.eval needs metrics, e.g. Model(net, loss_fn, metrics={'accuracy'})")
    keys = metrics.keys() if isinstance(metrics, dict) else metrics
    out = {}
    for k in keys:
        if k not in _KNOWN:
            raise ValueError(f"Model.eval: unsupported metric {k!r}; supported: {sorted(_KNOWN)}")
        out[k] = _KNOWN[k]
    return out


def _whole(t):
    return ex.to_layout(t, replicated(t.global_shape, t.layout.num_devices)) if t.layout is not None else t


def evaluate(model, dataset) -> dict:
    """``{metric: value}`` over ``dataset`` with the model's metrics; equal on every rank.

    >>> import numpy as np, distinfer as ms, distinfer.dataset as ds
    >>> from distinfer import nn
    >>> x, y = np.array([[1, 0], [0, 1], [2, 0]], np.float32), np.array([0, 1, 1], np.int32)
    >>> data = ds.NumpySlicesDataset((x, y), column_names=["x", "y"], shuffle=False).batch(3)
    >>> net = nn.Dense(2, 2, weight_init=ms.Tensor(np.eye(2, dtype=np.float32)), bias_init="zeros")  # logits = x
    >>> result = evaluate(ms.Model(net, nn.CrossEntropyLoss(), metrics=["accuracy", "loss"]), data)  # 2 of 3 right
    >>> round(result["accuracy"], 4), round(result["loss"], 4)
    (0.6667, 0.9178)
    """
    names = _names(model._metrics)
    if "loss" in names.values() and model._loss_fn is None:
        raise ValueError("Model.eval: the 'loss' metric needs a loss function: Model(network, loss_fn, ...)")
    model._network.set_train(False)
    correct = total = 0
    loss_sum, batches = 0.0, 0
    data_parallel = context.is_sharded_mode() and context.get_auto_parallel_context("dataset_strategy") == \
        "data_parallel"
    for batch in dataset.create_tuple_iterator(num_epochs=1):
        data, label = model._feed(batch)
        logits = model._network(data)
        if "loss" in names.values():
            loss_sum += float(np.asarray(_whole(model._loss_fn(logits, label)).asnumpy()))
            batches += 1
        pred = np.argmax(_whole(logits).asnumpy(), axis=-1)
        labels = batch[1].asnumpy()
        if data_parallel:
            labels = np.concatenate(_backend.world().allgather_object(labels))
        correct += int((pred.reshape(-1) == labels.reshape(-1)).sum())
        total += labels.size
    values = {"accuracy": correct / max(total, 1), "loss": loss_sum / max(batches, 1)}
    return {k: values[v] for k, v in names.items()}
