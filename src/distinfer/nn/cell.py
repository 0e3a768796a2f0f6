"""``nn.Cell``: MindSpore's module type, with parameter names from the attribute path.

Assigning a :class:`~distinfer.Parameter` to a Cell attribute registers it; assigning a Cell
registers a child and prefixes its parameters' names with the attribute name, so a Dense layer
stored as ``self.layer1`` owns ``layer1.weight`` and ``layer1.bias`` (MindSpore's auto-prefix).

>>> import numpy as np, distinfer as ms
>>> from distinfer import nn
>>> class Net(nn.Cell):
...     def __init__(self):
...         super().__init__()
...         self.fc = nn.Dense(3, 2)
...     def construct(self, x):
...         return self.fc(x)
>>> [name for name, _ in Net().parameters_and_names()]
['fc.weight', 'fc.bias']
"""
from __future__ import annotations

import contextlib

from collections import OrderedDict
from typing import Any, Iterator

from .. import context
from ..common import api
from ..tensor import Parameter, ParameterTuple

__all__ = ["Cell", "SequentialCell", "CellList"]


class Cell:
    """Base class of every network and layer (``construct`` defines the forward pass).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn, ops
    >>> class Scale(nn.Cell):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.k = ms.Parameter(ms.Tensor(np.array([2.0], np.float32)), name="k")
    ...     def construct(self, x):
    ...         return ops.mul(x, self.k)
    >>> net = Scale()
    >>> net(ms.Tensor(np.array([1.0, 3.0], np.float32))).asnumpy().tolist(), list(net.parameters_dict())
    ([2.0, 6.0], ['k'])
    """

    def __init__(self, auto_prefix: bool = True, flags: dict | None = None) -> None:
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_cells", OrderedDict())
        object.__setattr__(self, "training", False)
        object.__setattr__(self, "_auto_prefix", auto_prefix)
        object.__setattr__(self, "_pipeline_stage", None)
        object.__setattr__(self, "_mixed_precision", None)
        object.__setattr__(self, "_output_dtype", None)  # amp O1: a white-listed cell's outputs go back to float32
        object.__setattr__(self, "_parameter_layout_dict", {})
        object.__setattr__(self, "requires_grad", False)
        object.__setattr__(self, "_shard_region", None)  # set by Cell.shard

    # ---------------------------------------------------------------- registration
    def __setattr__(self, name: str, value: Any) -> None:
        if "_params" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        params, cells = self.__dict__["_params"], self.__dict__["_cells"]
        if isinstance(value, Parameter):
            if value._name is None or value._name == "Parameter":
                value.name = name
            params[name] = value
            cells.pop(name, None)
        elif isinstance(value, ParameterTuple):
            for i, p in enumerate(value):
                params[f"{name}.{i}"] = p
        elif isinstance(value, Cell):
            if self._auto_prefix:
                value.update_parameters_name(name + ".")
            cells[name] = value
            params.pop(name, None)
        else:
            if name in params and value is not None and not isinstance(value, Parameter):
                raise TypeError(f"{type(self).__name__}.{name} is a Parameter; assign a Parameter, not "
                                f"{type(value).__name__}")
            params.pop(name, None)
            cells.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._params.pop(name, None)
        self._cells.pop(name, None)
        object.__delattr__(self, name)

    def insert_child_to_cell(self, child_name: str, child_cell: "Cell") -> None:
        setattr(self, child_name, child_cell)

    def insert_param_to_cell(self, param_name: str, param: Parameter, check_name_contain_dot: bool = True) -> None:
        setattr(self, param_name, param)

    def update_parameters_name(self, prefix: str = "", recurse: bool = True) -> None:
        """Prefix every parameter name below this cell (MindSpore's auto-prefix)."""
        for _, p in self.parameters_and_names(expand=recurse):
            if not p.name.startswith(prefix):
                p.name = prefix + p.name

    # --------------------------------------------------------------------- traversal
    def cells_and_names(self, cells=None, name_prefix: str = "") -> Iterator[tuple[str, "Cell"]]:
        """``(path, cell)`` for this cell and every descendant, depth first, each once."""
        seen = set() if cells is None else cells
        if id(self) not in seen:
            seen.add(id(self))
            yield name_prefix, self
        for name, child in self._cells.items():
            if child is None or id(child) in seen:
                continue
            yield from child.cells_and_names(seen, f"{name_prefix}.{name}" if name_prefix else name)

    def cells(self) -> list["Cell"]:
        return [c for c in self._cells.values() if c is not None]

    def name_cells(self) -> "OrderedDict[str, Cell]":
        return OrderedDict((k, v) for k, v in self._cells.items() if v is not None)

    def parameters_and_names(self, name_prefix: str = "", expand: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(name, parameter)`` pairs in registration order; shared parameters appear once."""
        seen: set[int] = set()
        cells = self.cells_and_names(name_prefix=name_prefix) if expand else [(name_prefix, self)]
        for _, cell in cells:
            for p in cell._params.values():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield p.name, p

    def get_parameters(self, expand: bool = True) -> Iterator[Parameter]:
        for _, p in self.parameters_and_names(expand=expand):
            yield p

    def trainable_params(self, recurse: bool = True) -> list[Parameter]:
        return [p for p in self.get_parameters(expand=recurse) if p.requires_grad]

    def untrainable_params(self, recurse: bool = True) -> list[Parameter]:
        return [p for p in self.get_parameters(expand=recurse) if not p.requires_grad]

    def parameters_dict(self, recurse: bool = True) -> "OrderedDict[str, Parameter]":
        return OrderedDict(self.parameters_and_names(expand=recurse))

    @property
    def parameter_layout_dict(self) -> dict:
        """MindSpore's ``{name: [dev_matrix, tensor_map, slice_shape, ...]}`` after a layout run."""
        return self._parameter_layout_dict

    # ------------------------------------------------------------------------ running
    def construct(self, *inputs: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define construct()")

    @property
    def pipeline_stage(self) -> int:
        """The pipeline stage this cell's ops run on (set it to split a network into stages)."""
        return self._pipeline_stage or 0

    @pipeline_stage.setter
    def pipeline_stage(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{type(self).__name__}.pipeline_stage must be an int >= 0, got {value!r}")
        object.__setattr__(self, "_pipeline_stage", value)

    # A call of this cell is a graph of its own for sharding propagation (traced for shapes, then
    # run with propagated strategies). Cells that run no ops of their own (training wrappers,
    # optimizers) say False: the cells they call are the graphs.
    _plan_boundary = True

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        if _top_level_graph():
            first = not self.__dict__.get("_compiled", False)
            object.__setattr__(self, "_compiled", True)
            return api.run_as_graph(self, inputs, kwargs, first)
        if self._shard_region is not None or context.parallel_mode() == context.ParallelMode.AUTO_PARALLEL:
            from ..parallel import propagation

            return propagation.call_cell(self, inputs, kwargs)
        return self._call(*inputs, **kwargs)

    def _call(self, *inputs: Any, **kwargs: Any) -> Any:
        if self._pipeline_stage is None and self._mixed_precision is None:
            return self.construct(*inputs, **kwargs)
        from ..parallel import _executor as ex

        with contextlib.ExitStack() as scopes:
            if self._pipeline_stage is not None:
                scopes.enter_context(ex.stage_scope(self._pipeline_stage))
            if self._mixed_precision is not None:
                scopes.enter_context(ex.mixed_precision_scope(self._mixed_precision))
                if self._mixed_precision is not ex.AMP_O1:
                    inputs = ex.cast_float_inputs(inputs, self._mixed_precision)
            out = self.construct(*inputs, **kwargs)
        if self._output_dtype is None:
            return out
        back = ex.cast_float_inputs(out if isinstance(out, tuple) else (out,), self._output_dtype)
        return tuple(back) if isinstance(out, tuple) else back[0]

    def set_train(self, mode: bool = True) -> "Cell":
        for _, cell in self.cells_and_names():
            object.__setattr__(cell, "training", mode)
        return self

    def set_grad(self, requires_grad: bool = True) -> "Cell":
        object.__setattr__(self, "requires_grad", requires_grad)
        return self

    def to_float(self, dst_type) -> "Cell":
        """Run this cell and its sub-cells in ``dst_type`` (``float16``, ``bfloat16`` or ``float32``).

        Inside, every op casts its floating inputs, parameters included, to ``dst_type`` (by the
        ``Cast`` primitive, so gradients flow back to the float32 parameters in float32); so are the
        cell's own inputs. A sub-cell's later ``to_float`` overrides it for that sub-cell (e.g. a
        norm layer kept in float32). Reductions across ranks of low-precision partial sums add in float32.

        >>> import numpy as np, distinfer as ms
        >>> from distinfer import nn
        >>> net = nn.SequentialCell([nn.Dense(3, 4), nn.ReLU(), nn.Dense(4, 2)]).to_float(ms.float16)
        >>> _ = net[2].to_float(ms.float32)
        >>> net(ms.Tensor(np.ones((1, 3), np.float32))).dtype, net[0](ms.Tensor(np.ones((1, 3)))).dtype
        (Float32, Float16)
        """
        from .. import dtype as mstype

        dt = mstype.get_dtype(dst_type)
        if dt not in (mstype.float16, mstype.float32, mstype.bfloat16):
            raise ValueError(f"For '{type(self).__name__}.to_float', the 'dst_type' should be float32, float16 or "
                             f"bfloat16, but got {dst_type}")
        for _, cell in self.cells_and_names():
            object.__setattr__(cell, "_mixed_precision", dt)
        return self

    def set_inputs(self, *inputs: Any) -> None:
        """Dynamic-shape declaration; distinfer runs eagerly on every shape, so nothing is needed."""

    def compile(self, *inputs: Any, **kwargs: Any) -> None:
        """MindSpore's compile: in (semi-)auto parallel mode, lay the parameters out for these inputs
        (a layout-only run: no arithmetic, no messages) and write the strategy file if one is asked
        for; otherwise nothing (the network runs eagerly).

        >>> import numpy as np, distinfer as ms
        >>> from distinfer import nn
        >>> ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=2, full_batch=True)
        >>> net = nn.Dense(4, 2); net.compile(ms.Tensor(np.ones((2, 4), np.float32)))
        >>> net.weight.layout is not None, net.weight.has_init  # laid out; its values still wait
        (True, False)
        >>> ms.reset_auto_parallel_context()
        """
        if context.is_sharded_mode() and not api.in_graph():
            object.__setattr__(self, "_compiled", True)
            api.run_as_graph(self, inputs, kwargs, True, layout_only=True)

    def set_comm_fusion(self, fusion_type: int, recurse: bool = True) -> "Cell":
        """Set the gradient-communication fusion group of this cell's parameters (and its sub-cells'
        with ``recurse``). MindSpore fuses the collectives of one group into one; distinfer records the
        group on each parameter (``Parameter.comm_fusion``) and reduces each gradient as it is needed.

        >>> from distinfer import nn
        >>> net = nn.SequentialCell([nn.Dense(2, 2), nn.Dense(2, 2)])
        >>> _ = net[1].set_comm_fusion(3)
        >>> [p.comm_fusion for p in net.get_parameters()]
        [1, 1, 3, 3]
        """
        for p in self.get_parameters(expand=recurse):
            p.comm_fusion = fusion_type
        return self

    def init_parameters_data(self, auto_parallel_mode: bool = False) -> dict:
        """Give every lazily initialised parameter its values now (this rank's block if it is laid
        out); returns ``{parameter: parameter}`` as MindSpore does.

        >>> from distinfer import nn
        >>> from distinfer.nn.utils import no_init_parameters
        >>> with no_init_parameters():
        ...     net = nn.Dense(3, 2)
        >>> sorted(p.name for p in net.init_parameters_data()), net.weight.has_init
        (['bias', 'weight'], False)
        """
        params = list(self.get_parameters())
        for p in params:
            if p.has_init:
                p.init_data()
        return {p: p for p in params}

    def set_jit_config(self, jit_config: Any) -> None:
        """Compilation options for this cell (a ``JitConfig`` or a dict); recorded, no effect on CPUs."""
        object.__setattr__(self, "_jit_config", jit_config)

    def shard(self, in_strategy, out_strategy=None, parameter_plan=None, device: str = "Ascend", level: int = 0):
        """Lay this cell's inputs out as ``in_strategy`` says (a split tuple or a ``Layout`` per
        input; ``None`` leaves an input as it comes), its outputs as ``out_strategy``, and the
        parameters named in ``parameter_plan`` (``{"self.block.dense.weight": (4, 1)}``) as given;
        in semi-auto and auto parallel the ops inside without a strategy of their own are then
        derived by sharding propagation (in other modes the cell runs as it is).

        Arguments are checked as MindSpore checks them (TypeError, ValueError). With one device it
        does nothing, as in MindSpore. Returns a function that calls the cell (MindSpore 2.x returns
        None; older releases returned such a function, which their samples assign and call).

        >>> import numpy as np, distinfer as ms
        >>> from distinfer import nn
        >>> ms.set_auto_parallel_context(device_num=8)
        >>> block = nn.Dense(4, 4)
        >>> block.shard(in_strategy=[(2, 1)])
        Traceback (most recent call last):
        ...
        TypeError: For 'Shard', the 'in_strategy' should be a tuple, but got list.
        >>> ms.reset_auto_parallel_context()
        """
        from ..parallel.shard_region import shard_cell

        return shard_cell(self, in_strategy, out_strategy, parameter_plan, device, level)

    def extend_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}<{self.extend_repr()}>"]
        for name, child in self._cells.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines)


def _top_level_graph() -> bool:
    """A Cell called from outside any graph in GRAPH_MODE under (semi-)auto parallel runs as a graph,
    as MindSpore compiles it (``distinfer.common.api``); inside a graph it is a plain call."""
    return (context.get_context("mode") == context.GRAPH_MODE and context.is_sharded_mode()
            and not api.in_graph())


class SequentialCell(Cell):
    """Cells run in order; built from a list or an OrderedDict.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> w = ms.Tensor(np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], np.float32))
    >>> seq = nn.SequentialCell([nn.Dense(3, 2, weight_init=w, bias_init="zeros"), nn.ReLU()])
    >>> len(seq), [name for name, _ in seq.parameters_and_names()]
    (2, ['0.weight', '0.bias'])
    >>> seq(ms.Tensor(np.array([[1.0, 2.0, 3.0]], np.float32))).asnumpy().tolist()  # [6, -6] after Dense
    [[6.0, 0.0]]
    """

    def __init__(self, *args: Any) -> None:
        super().__init__()
        items = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple, OrderedDict)) else args
        if isinstance(items, OrderedDict):
            for name, cell in items.items():
                setattr(self, name, cell)
        else:
            for i, cell in enumerate(items):
                setattr(self, str(i), cell)

    def __getitem__(self, index: int) -> Cell:
        return list(self._cells.values())[index]

    def __len__(self) -> int:
        return len(self._cells)

    def append(self, cell: Cell) -> None:
        setattr(self, str(len(self._cells)), cell)

    def construct(self, x):
        for cell in self._cells.values():
            x = cell(x)
        return x


class CellList(Cell):
    """A list of cells whose parameters are registered as ``<index>.<name>``.

    >>> from distinfer import nn
    >>> layers = nn.CellList([nn.Dense(3, 2), nn.Dense(2, 1)])
    >>> len(layers), [name for name, _ in layers.parameters_and_names()]
    (2, ['0.weight', '0.bias', '1.weight', '1.bias'])
    >>> [layer.out_channels for layer in layers]
    [2, 1]
    """

    def __init__(self, *args: Any) -> None:
        super().__init__()
        for cell in (args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args):
            self.append(cell)

    def __getitem__(self, index: int) -> Cell:
        return list(self._cells.values())[index]

    def __len__(self) -> int:
        return len(self._cells)

    def __iter__(self):
        return iter(list(self._cells.values()))

    def append(self, cell: Cell) -> None:
        setattr(self, str(len(self._cells)), cell)

    def extend(self, cells) -> "CellList":
        for c in cells:
            self.append(c)
        return self

    def construct(self, *inputs):
        raise RuntimeError("CellList is a container; call its cells")