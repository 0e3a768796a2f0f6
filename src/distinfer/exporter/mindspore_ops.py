"""MindSpore 2.10's primitives in MindIR files, as the exporter and the interpreter meet them.

What each distinfer op becomes (MindSpore's primitive name, its constant inputs, attributes) is
declared by the op class itself, as its ``mindir`` form (:mod:`distinfer.ops.mindspore_form`,
found through :mod:`distinfer.ops.registry`). This module adds what is not an op: MindSpore's graph
plumbing and the communication primitives distinfer runs, and the lookups in both directions.

>>> import numpy as np, distinfer as ms
>>> call = Call(ms.ops.MatMul(transpose_b=True), [Ref(0), Ref(1)], [(4, 3)], [np.dtype("float32")] * 2)
>>> [(c.name, c.inputs) for c in form_of(call.prim).calls(call)]
[('MatMul', [Ref(index=0), Ref(index=1), False, True])]
>>> prim, tensors, consts = from_mindspore("MatMul", ["a", "b", False, True], {}, "net.mindir")
>>> type(prim).__name__, prim.transpose_b, tensors, consts
('MatMul', True, ['a', 'b'], {})
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError
from ..ops import registry
from ..ops.mindspore_form import (PRIMITIVE, PRIMITIVE_FUNCTION, TYPE_IDS, Call, GetItem, MsCall, MsOp, Prev,
                                  Ref)
from ..ops.primitive import Primitive

__all__ = ["form_of", "mindir_ops", "from_mindspore", "mindspore_name", "runnable", "STRUCTURAL", "COMMUNICATION",
           "MsOp", "Call", "MsCall", "Ref", "Prev", "GetItem", "PRIMITIVE", "PRIMITIVE_FUNCTION", "TYPE_IDS"]

# MindSpore's graph plumbing (values, monads, tuples) and the communication primitives distinfer runs.
STRUCTURAL = frozenset({"Constant", "Load", "UpdateState", "Depend", "MakeTuple", "TupleGetItem", "Return"})
COMMUNICATION = frozenset({"AllReduce", "ReduceScatter", "AllGather", "AlltoAll", "Send", "Receive"})


def form_of(prim: Primitive) -> MsOp | None:
    """How MindSpore writes ``prim``: the form of the registered op it is (by its name, else its
    nearest registered base class); None when it has none."""
    cls = registry.lookup(prim.name)
    if cls is None or not isinstance(prim, cls):
        cls = next((c for c in type(prim).__mro__ if registry.lookup(c.__name__) is c), None)
    return registry.mindir_form(cls) if cls is not None else None


def mindir_ops() -> dict[str, MsOp]:
    """Every registered op with a MindIR form, by distinfer op name.

    >>> mindir_ops()["TensorGetItem"].name, mindir_ops()["Add"].name
    ('StridedSlice', 'Add')
    """
    return {name: form for name, cls in registry.ops().items() if (form := registry.mindir_form(cls)) is not None}


def mindspore_name(op: str) -> str | None:
    """The distinfer op that MindSpore's primitive ``op`` is (None if distinfer has none).

    >>> mindspore_name("StridedSlice"), mindspore_name("MatMul"), mindspore_name("Conv3D")
    ('TensorGetItem', 'MatMul', None)
    """
    cls = registry.lookup(op)
    form = registry.mindir_form(cls) if cls is not None else None
    return cls.__name__ if form is not None and form.name == op else None


def runnable(op: str) -> bool:
    """True when distinfer can run MindSpore's primitive ``op``.

    >>> runnable("Depend"), runnable("AllGather"), runnable("StridedSlice"), runnable("Conv3D")
    (True, True, True, False)
    """
    return op in STRUCTURAL or op in COMMUNICATION or mindspore_name(op) is not None


def from_mindspore(op: str, values: list, attrs: dict, where: str) -> tuple[Primitive, list, dict]:
    """The distinfer primitive, tensor inputs and call constants of a MindSpore node ``op``
    with input ``values`` (arrays for tensors) and primitive ``attrs``.

    >>> prim, tensors, consts = from_mindspore("Gather", ["table", "ids", 0, 0], {}, "net.mindir")
    >>> type(prim).__name__, tensors, consts
    ('Gather', ['table', 'ids'], {2: 0})
    """
    cls = registry.lookup(mindspore_name(op) or "")
    if cls is None:
        raise FormatError(f"{where}: distinfer has no op for MindSpore's {op}")
    spec = registry.mindir_form(cls)
    expected = 1 + len(spec.inputs) if spec.tuple_input else spec.tensors + len(spec.inputs)
    if len(values) != expected:
        raise FormatError(f"{where}: {op} has {len(values)} inputs; MindSpore 2.10's {op} takes {expected}")
    try:
        return spec.to_distinfer(cls, values, attrs)
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise FormatError(f"{where}: {op} inputs {_show(values)}: {e}") from None


def _show(values: list) -> list:
    return [f"<tensor {np.shape(v)}>" if isinstance(v, np.ndarray) else v for v in values]
