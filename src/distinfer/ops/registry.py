"""The op registry: every primitive distinfer runs, found by its name or by another name MindSpore writes for it.

Where is a new op registered? In its own class, and nowhere else. Defining a public subclass of
:class:`~distinfer.ops.primitive.Primitive` in a module of ``distinfer.ops`` adds it here, under its
class name and its ``ms_aliases`` (``Primitive.__init_subclass__`` calls :func:`register`). The class
carries every other fact about the op as class attributes and methods: layout rule, kernel and
``bprop``; ``amp`` (the MindSpore amp list it is on); ``onnx_op`` or ``to_onnx`` (its ONNX form) or
``onnx_refusal`` (why it has none); ``mindir`` (how MindSpore writes it in a MindIR file: primitive
name, constant node inputs, attributes; a MindSpore primitive name other than the class name is
registered as an alias). Code that holds a primitive asks the primitive; code that only has a name
(a node of a MindIR file) asks :func:`lookup`. Classes whose names start with ``_`` are shared
bases, not ops.

>>> from distinfer.ops import registry
>>> registry.lookup("MatMul").__name__, registry.lookup("FancyOp")
('MatMul', None)
>>> sorted(registry.amp_ops("white"))
['BatchMatMul', 'MatMul', 'ReLU']
"""
from __future__ import annotations

__all__ = ["register", "lookup", "ops", "amp_ops", "converts_to_onnx", "mindir_form"]

# Primitive subclasses (primitive.py imports this module, so it names no type from there).
_OPS: dict[str, type] = {}  # class name -> class
_BY_NAME: dict[str, type] = {}  # class names and MindSpore aliases -> class


def register(cls: type) -> None:
    """Add ``cls`` under its class name and its ``ms_aliases``; a name another class holds is an error.

    >>> from distinfer.ops import registry
    >>> Add = type("Add", (registry.lookup("Sub"),), {"__module__": "my_ops"})  # named like an existing op
    >>> registry.register(Add)
    Traceback (most recent call last):
    ...
    ValueError: op registry: the name 'Add' of my_ops.Add is already taken by distinfer.ops._elementwise.Add
    """
    form = cls.__dict__.get("mindir")  # a form the class declares itself may name MindSpore's primitive
    names = (cls.__name__, *cls.ms_aliases) + ((form.name,) if form is not None and form.name else ())
    for name in names:
        other = _BY_NAME.get(name)
        if other is not None and other is not cls:
            raise ValueError(f"op registry: the name {name!r} of {_qualname(cls)} is already taken by "
                             f"{_qualname(other)}")
    _OPS[cls.__name__] = cls
    _BY_NAME.update(dict.fromkeys(names, cls))


def lookup(name: str) -> type | None:
    """The op class for ``name`` (a class name or a MindSpore alias), or None if distinfer has no such op."""
    return _BY_NAME.get(name)


def ops() -> dict[str, type]:
    """Every registered op, by class name."""
    return dict(_OPS)


def amp_ops(kind: str) -> frozenset[str]:
    """Names of the ops on MindSpore's amp list ``kind`` ("white": run in float16 under ``amp_level="O1"``)."""
    return frozenset(name for name, cls in _OPS.items() if cls.amp == kind)


def converts_to_onnx(cls: type) -> bool:
    """Whether ``cls`` has an ONNX form: one operator (``onnx_op``) or a ``to_onnx`` method, and no refusal.

    >>> from distinfer.ops import registry
    >>> registry.converts_to_onnx(registry.lookup("ReLU")), registry.lookup("Dropout").onnx_refusal is not None
    (True, True)
    """
    return cls.onnx_refusal is None and (cls.onnx_op is not None or cls.to_onnx is not None)


def mindir_form(cls: type):
    """How MindSpore writes ``cls`` (its ``mindir`` form, named after the class unless the form names
    MindSpore's primitive itself), or None if the op has no MindIR form.

    >>> from distinfer.ops import registry
    >>> registry.mindir_form(registry.lookup("Div")).name, registry.mindir_form(registry.lookup("TensorGetItem")).name
    ('Div', 'StridedSlice')
    """
    return None if cls.mindir is None else cls.mindir.named(cls.__name__)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
