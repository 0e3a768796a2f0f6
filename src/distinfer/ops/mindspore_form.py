"""How MindSpore 2.10 writes an op in a MindIR file: the form each op class declares as ``mindir``.

Since MindSpore 2.x most primitives are *primitive functions* (``prim_type`` PRIMITIVE_FUNCTION):
what their Python constructors take (MatMul's ``transpose_a``, LayerNorm's ``epsilon``, Split's
``output_num``) and what distinfer passes as constant call arguments (Gather's ``axis``, Reshape's
shape) are node inputs after the tensors, held by Constant nodes, and the primitive carries no
attributes. A handful of older ops (the fused losses) are plain PRIMITIVEs with attributes. Every
op's form was read off a file that MindSpore 2.10 exported for a one-op network.

A scalar where MindSpore wants a tensor (``Mul(x, 0.5)``) becomes a 0-d tensor of the op's
tensor dtype, as MindSpore converts it. ``x[index]`` (distinfer's TensorGetItem) is written as
MindSpore compiles it: ``ExpandDims`` for each new axis, then one ``StridedSlice``. An
:class:`MsOp` with no ``name`` is written under its op's class name.

>>> import numpy as np, distinfer as ms
>>> call = Call(ms.ops.MatMul(transpose_b=True), [Ref(0), Ref(1)], [(4, 3)], [np.dtype("float32")] * 2)
>>> [(c.name, c.inputs) for c in ms.ops.MatMul.mindir.named("MatMul").calls(call)]
[('MatMul', [Ref(index=0), Ref(index=1), False, True])]
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from .. import dtype as mstype
from ..tensor import Tensor

__all__ = ["MsOp", "Input", "Call", "MsCall", "Ref", "Prev", "GetItem", "PRIMITIVE", "PRIMITIVE_FUNCTION",
           "TYPE_IDS", "flag", "integer", "axes", "one_axis", "local_shape", "local_depth", "type_id", "from_type_id",
           "scalar_tensor", "as_tensor", "FORMATS"]

PRIMITIVE, PRIMITIVE_FUNCTION = 1, 2

# MindSpore's TypeId numbers, the value of Cast's dtype input.
TYPE_IDS: dict[mstype.Type, int] = {
    mstype.bool_: 30, mstype.int8: 32, mstype.int16: 33, mstype.int32: 34, mstype.int64: 35, mstype.uint8: 37,
    mstype.uint16: 38, mstype.uint32: 39, mstype.uint64: 40, mstype.float16: 42, mstype.float32: 43,
    mstype.float64: 44, mstype.bfloat16: 45,
}
_BY_TYPE_ID = {v: k for k, v in TYPE_IDS.items()}
FORMATS = ("NCHW", "NHWC")  # BiasAdd's data_format input: the index in MindSpore's Format enum


@dataclass(frozen=True)
class Ref:
    """The ``index``-th tensor argument of the distinfer call (a value of the graph)."""

    index: int


@dataclass(frozen=True)
class Prev:
    """The output of the previous node of the same op (see :class:`GetItem`)."""


@dataclass
class Call:
    """One distinfer primitive call as a trace saw it.

    ``args`` are the call's arguments in order, :class:`Ref` for tensors and plain values for
    constants; ``out_shapes`` are this rank's output shapes; ``dtypes`` the tensors' numpy dtypes.
    """

    prim: Any  # the distinfer primitive
    args: list
    out_shapes: list
    dtypes: list


@dataclass
class MsCall:
    """One MindSpore node: primitive ``name``, its inputs (:class:`Ref`, :class:`Prev` or constants),
    primitive type and attributes, and MindSpore's output dtypes where they differ from distinfer's."""

    name: str
    inputs: list
    prim_type: int = PRIMITIVE_FUNCTION
    attrs: dict = field(default_factory=dict)
    out_dtypes: tuple = ()
    tuple_output: bool = False


@dataclass(frozen=True)
class Input:
    """A non-tensor input of a MindSpore primitive and where distinfer keeps its value: the
    primitive's attribute ``attr`` (also its constructor argument), the call's argument at
    position ``arg``, or nowhere (``value``, fixed by MindSpore)."""

    name: str
    attr: str | None = None
    arg: int | None = None
    value: Any = None
    encode: Callable[[Any, Call], Any] | None = None  # distinfer value -> MindSpore's
    decode: Callable[[Any], Any] | None = None  # MindSpore value -> distinfer's
    get: Callable[[Any], Any] | None = None  # reads ``attr`` when it is not a plain attribute

    def to_mindspore(self, call: Call) -> Any:
        if self.arg is not None:
            v = call.args[self.arg]
        elif self.attr is not None:
            v = self.get(call.prim) if self.get else getattr(call.prim, self.attr)
        else:
            return self.value
        return self.encode(v, call) if self.encode else v

    def from_mindspore(self, v: Any) -> Any:
        return self.decode(v) if self.decode else v


@dataclass(frozen=True)
class MsOp:
    """How one distinfer op is written: the first ``tensors`` call arguments are tensor inputs
    (all of them in one tuple when ``tuple_input``), then ``inputs``; MindSpore primitive ``name``
    (empty: the op's class name); fixed primitive ``attrs`` and distinfer attributes written as
    primitive attributes (``prim_attrs``, for PRIMITIVE ops); ``tuple_output`` when MindSpore's op
    returns a tuple (even of one tensor, as Split does)."""

    tensors: int
    inputs: tuple[Input, ...] = ()
    name: str = ""
    prim_type: int = PRIMITIVE_FUNCTION
    attrs: tuple[tuple[str, Any], ...] = ()
    prim_attrs: tuple[str, ...] = ()
    tuple_input: bool = False
    out_dtypes: tuple = ()  # MindSpore's output dtypes where they differ (None: distinfer's)
    tuple_output: bool = False

    def named(self, name: str) -> "MsOp":
        """This form written under ``name`` unless it names its primitive itself."""
        return self if self.name else replace(self, name=name)

    def calls(self, call: Call) -> list[MsCall]:
        """The MindSpore node(s) of ``call`` (one, except for :class:`GetItem`)."""
        tensors = [_tensor_input(a, call) for a in call.args[:self.tensors]] if not self.tuple_input else \
            [tuple(call.args)]
        consts = [i.to_mindspore(call) for i in self.inputs]
        attrs = dict(self.attrs)
        attrs.update({k: getattr(call.prim, k) for k in self.prim_attrs})
        return [MsCall(self.name, tensors + consts, self.prim_type, attrs, self.out_dtypes, self.tuple_output)]

    def to_distinfer(self, cls: type, values: list, attrs: dict) -> tuple[Any, list, dict]:
        """``(primitive, tensor inputs, {call position: constant})`` from a MindSpore node's input
        ``values`` and primitive ``attrs``."""
        if self.tuple_input:
            tensors, rest = list(values[0]), values[1:]
        else:
            tensors, rest = list(values[:self.tensors]), values[self.tensors:]
        kwargs = {k: attrs[k] for k in self.prim_attrs if k in attrs}
        consts = {}
        for k, (spec, v) in enumerate(zip(self.inputs, rest)):
            try:
                v = spec.from_mindspore(v)
            except ValueError as e:
                raise ValueError(f"input {len(values) - len(rest) + k}: {e}") from None
            if spec.arg is not None:
                consts[spec.arg] = v
            elif spec.attr is not None:
                kwargs[spec.attr] = v
        return cls(**kwargs), tensors, consts


def _tensor_input(arg: Any, call: Call) -> Any:
    """A tensor argument, or a constant scalar as MindSpore's 0-d tensor: of the tensors' dtype,
    promoted as numpy promotes a Python scalar with it (0.5 with Float32 stays Float32, 2.5 with
    Int32 is Float64), so the op computes what distinfer computed."""
    if isinstance(arg, Ref):
        return arg
    if isinstance(arg, Tensor):
        return arg.asnumpy()
    tensor_dtype = next((d for d in call.dtypes if d is not None), np.dtype(np.float32))
    return np.asarray(arg, dtype=np.result_type(tensor_dtype, arg))


# --------------------------------------------------------------------- value converters
def axes(v: Any, call: Call | None = None) -> tuple:
    """An axis argument as MindSpore's tuple (None / () / int / sequence)."""
    if v is None:
        return ()
    return (int(v),) if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v)


def one_axis(v: Any, call: Call | None = None) -> int:
    """An axis argument that must name exactly one axis, as an int."""
    found = axes(v)
    if len(found) != 1:
        raise ValueError(f"MindSpore's primitive takes one axis here, got {v!r}")
    return found[0]


def local_shape(v: Any, call: Call) -> tuple:
    """This rank's output shape: a per-rank graph reshapes its own block."""
    return tuple(int(d) for d in call.out_shapes[0])


def local_depth(v: Any, call: Call) -> int:
    return int(call.out_shapes[0][-1])


def type_id(v: Any, call: Call | None = None) -> int:
    return TYPE_IDS[mstype.get_dtype(v)]


def from_type_id(v: int) -> mstype.Type:
    if v not in _BY_TYPE_ID:
        raise ValueError(f"Cast to MindSpore type id {v}, which distinfer has no dtype for "
                         f"(known: {sorted(_BY_TYPE_ID)})")
    return _BY_TYPE_ID[v]


def scalar_tensor(v: Any, call: Call) -> np.ndarray:
    """OneHot's on/off value: a Tensor's data, or a Python number as MindSpore's float32 tensor."""
    return np.asarray(v.asnumpy()) if isinstance(v, Tensor) else np.asarray(v, dtype=np.float32)


def as_tensor(v: Any) -> Tensor:
    return Tensor(np.asarray(v))


# -------------------------------------------------------------------------- getitem
class GetItem(MsOp):
    """``x[index]``: ``ExpandDims`` per new axis, then ``StridedSlice(x, begin, end, strides,
    begin_mask, end_mask, ellipsis_mask, new_axis_mask, shrink_axis_mask)``; a slice bound left
    open is a mask bit (so a per-rank graph slices its own block whole)."""

    def calls(self, call: Call) -> list[MsCall]:
        entries = call.args[1]
        out, x = [], call.args[0]
        for pos, e in enumerate(entries):
            if e[0] == "n":
                out.append(MsCall("ExpandDims", [x, pos]))
                x = Prev()
        bounds, begin_mask, end_mask, shrink_mask = [], 0, 0, 0
        for pos, e in enumerate(entries):
            if e[0] == "i":  # one index: the dim is dropped (end -1 + 1 wraps to 0, as MindSpore writes it)
                bounds.append((e[1], e[1] + 1 if e[1] != -1 else 0, 1))
                shrink_mask |= 1 << pos
                continue
            start, stop, step = e[1:] if e[0] == "s" else (None, None, None)
            bounds.append((start or 0, stop or 0, step or 1))
            begin_mask |= (start is None) << pos
            end_mask |= (stop is None) << pos
        begin, end, strides = (tuple(int(b[k]) for b in bounds) for k in range(3))
        out.append(MsCall("StridedSlice", [x, begin, end, strides, begin_mask, end_mask, 0, 0, shrink_mask]))
        return out

    def to_distinfer(self, cls: type, values: list, attrs: dict) -> tuple[Any, list, dict]:
        x, begin, end, strides, begin_mask, end_mask, ellipsis, new_axis, shrink = values
        if ellipsis or new_axis:
            raise ValueError(f"StridedSlice with ellipsis_mask={ellipsis}, new_axis_mask={new_axis} is not supported "
                             f"(MindSpore compiles those into ExpandDims and plain slices)")
        entries = []
        for pos, (b, e, s) in enumerate(zip(begin, end, strides)):
            if shrink >> pos & 1:
                entries.append(("i", int(b)))
            else:
                entries.append(("s", None if begin_mask >> pos & 1 else int(b),
                                None if end_mask >> pos & 1 else int(e), int(s)))
        entries += [("s", None, None, None)] * (np.ndim(x) - len(entries))
        return cls(), [x], {1: tuple(entries)}


def flag(name: str) -> Input:
    """A bool constructor argument written as a node input."""
    return Input(name, attr=name, encode=lambda v, call: bool(v), decode=lambda v: _scalar(v, bool, name))


def integer(name: str) -> Input:
    """An int constructor argument written as a node input."""
    return Input(name, attr=name, encode=lambda v, call: int(v), decode=lambda v: _scalar(v, int, name))


def _scalar(v: Any, kind: type, name: str) -> Any:
    """A file's value for a scalar constructor argument, or ValueError naming what it holds."""
    if isinstance(v, (str, bytes, tuple, list, dict)) or np.ndim(v) != 0:
        raise ValueError(f"the input setting {name!r} holds {type(v).__name__} {v!r:.60}, expected a "
                         f"{kind.__name__} scalar")
    return kind(np.asarray(v).item())

