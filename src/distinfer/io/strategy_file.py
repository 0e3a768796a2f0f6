"""MindSpore strategy checkpoint files (``ParallelStrategyMap``), protobuf and JSON (spec §3).

A strategy file records, per parameter, its normalised tensor layout (``parallel_layout_item``)
and, per operator consuming a parameter, the operator's strategy (``parallel_strategy_item``).
The JSON form is used iff the file name ends with ``.json``, as in MindSpore.

:func:`write_strategy` writes what MindSpore's C++ ``StrategyCheckpointInfo::to_protobuf`` /
``to_json`` write (one ``dev_matrix``, one ``tensor_map``, one empty ``param_split_shape`` and one
empty ``indices_offset`` per layout), so its output is byte-identical to MindSpore's.

>>> import os, tempfile
>>> sf = StrategyFile(items={"MatMul_w": (0, [[2, 1], [1, 2]])},
...                   layouts={"w": ParamLayout([2, 2, 2], [-1, 1])})
>>> p = os.path.join(tempfile.mkdtemp(), "s.ckpt"); write_strategy(p, sf)
>>> read_strategy(p).layouts["w"].to_layout((784, 512)).block(2)
(slice(0, 784, None), slice(256, 512, None))
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

from google.protobuf.message import DecodeError, EncodeError

from .._proto import node_strategy_pb2 as pb
from ..errors import FormatError, LayoutError
from ..layout import Layout
from ._atomic import atomic_output

__all__ = ["ParamLayout", "StrategyFile", "StrategyTypeError", "read_strategy", "write_strategy",
           "build_searched_strategy", "merge_pipeline_strategys", "split_stage_name"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
MapEntry = Union[int, tuple[int, ...]]


class StrategyTypeError(FormatError, TypeError):
    """A strategy file that is neither valid protobuf nor valid JSON.

    MindSpore raises ``TypeError`` here; this is both that and a :class:`FormatError`.

    >>> import os, tempfile
    >>> from distinfer.errors import FormatError
    >>> p = os.path.join(tempfile.mkdtemp(), "bad.json")
    >>> with open(p, "w") as fh: _ = fh.write("{not json")
    >>> try:
    ...     read_strategy(p)
    ... except StrategyTypeError as e:  # caught as TypeError by MindSpore-style code too
    ...     print(isinstance(e, TypeError), isinstance(e, FormatError))
    True True
    """


@dataclass
class ParamLayout:
    """One ``parallel_layout_item``: a parameter's layout as MindSpore records it.

    ``tensor_map`` entries are ints, or tuples of ints for a dim split over several device
    axes (2.x Layout API). ``tensor_shape`` exists only in the JSON form.

    >>> pl = ParamLayout([2, 4], [1, -1])  # dim 0 split over device axis 1 (size 2), dim 1 whole
    >>> pl.to_layout((8, 3)).local_shape
    (4, 3)
    >>> ParamLayout([4], [-1, -1], opt_weight_shard_step=1, opt_weight_shard_size=-1).opt_shard_size()
    4
    """

    dev_matrix: list[int]
    tensor_map: list[MapEntry]
    param_split_shape: list[int] = field(default_factory=list)
    indices_offset: list[int] = field(default_factory=list)
    field: int = 0
    opt_weight_shard_step: int = 0
    opt_weight_shard_size: int = 0
    tensor_shape: Optional[list[int]] = None

    def opt_shard_size(self) -> int:
        """Optimizer shard group size with MindSpore's ``-1`` resolved (spec §4.6); 0 if none."""
        size = self.opt_weight_shard_size
        if size == -1:
            return math.prod(self.dev_matrix) // math.prod(Layout.map_splits(self.dev_matrix, self.tensor_map))
        return max(size, 0)

    def to_layout(self, shape: Optional[Sequence[int]] = None) -> Layout:
        """The :class:`~distinfer.layout.Layout` of a tensor of full ``shape``.

        ``shape`` defaults to the JSON ``tensor_shape``. Manual (uneven) splits and ``field``
        slicing have no Layout equivalent and raise LayoutError.

        >>> ParamLayout([4], [-1, -1], opt_weight_shard_step=1,
        ...             opt_weight_shard_size=-1).to_layout((512, 512)).local_shape
        (128, 512)
        """
        if shape is None:
            if self.tensor_shape is None:
                raise LayoutError("the strategy file records no tensor shape; pass shape=")
            shape = self.tensor_shape
        if self.param_split_shape:
            raise LayoutError(f"manual split param_split_shape={self.param_split_shape} is not "
                              f"supported by Layout")
        if self.field:
            raise LayoutError(f"field={self.field} slicing is not supported by Layout")
        return Layout.from_record(self.dev_matrix, self.tensor_map, shape, self.opt_weight_shard_size)


@dataclass
class StrategyFile:
    """The content of a strategy file.

    ``items`` maps ``"<Primitive>_<first param name>"`` to ``(stage, per-input strategy)``;
    ``layouts`` maps parameter names (``"<stage>-<name>"`` in merged pipeline files) to their
    :class:`ParamLayout`; ``current_stage`` is MindSpore's save counter (1 for a fresh run).
    Dict order is file order.

    >>> import os, tempfile
    >>> sf = StrategyFile(items={"MatMul_w": (0, [[1, 2], [2, 1]])}, layouts={"w": ParamLayout([2], [0, -1])})
    >>> d = tempfile.mkdtemp()
    >>> write_strategy(os.path.join(d, "s.ckpt"), sf); write_strategy(os.path.join(d, "s.json"), sf)
    >>> read_strategy(os.path.join(d, "s.ckpt")) == sf, read_strategy(os.path.join(d, "s.json")) == sf
    (True, True)
    """

    items: dict[str, tuple[int, list[list[int]]]] = field(default_factory=dict)
    layouts: dict[str, ParamLayout] = field(default_factory=dict)
    current_stage: int = 1


def split_stage_name(name: str) -> tuple[Optional[int], str]:
    """``"1-layer2.weight"`` -> ``(1, "layer2.weight")``; names without a stage -> ``(None, name)``.

    >>> split_stage_name("0-layer1.bias"), split_stage_name("layer1.bias")
    ((0, 'layer1.bias'), (None, 'layer1.bias'))
    """
    m = re.fullmatch(r"(\d+)-(.+)", name, flags=re.S)
    return (int(m.group(1)), m.group(2)) if m else (None, name)


# --------------------------------------------------------------------------------- protobuf
def _layout_from_pb(name: str, lay: pb.ParallelLayouts, path: str) -> ParamLayout:
    if len(lay.dev_matrix) != 1:
        raise FormatError(f"{path}: layout {name!r}: expected exactly one dev_matrix, found "
                          f"{len(lay.dev_matrix)}")
    maps = [list(m.dim) for m in lay.tensor_map]
    if len(maps) == 1:
        tensor_map: list[MapEntry] = maps[0]
    else:  # nested map: one TensorMap per tensor dim (spec §4.1)
        tensor_map = [m[0] if len(m) == 1 else tuple(m) for m in maps]
    return ParamLayout(
        dev_matrix=list(lay.dev_matrix[0].dim),
        tensor_map=tensor_map,
        param_split_shape=list(lay.param_split_shape[0].dim) if lay.param_split_shape else [],
        indices_offset=list(lay.indices_offset[0].dim) if lay.indices_offset else [],
        field=lay.field,
        opt_weight_shard_step=lay.opt_weight_shard_step,
        opt_weight_shard_size=lay.opt_weight_shard_size,
    )


def _layout_to_pb(lay: ParamLayout, out: pb.ParallelLayouts) -> None:
    out.dev_matrix.add().dim.extend(int(d) for d in lay.dev_matrix)
    if any(isinstance(e, (tuple, list)) for e in lay.tensor_map):
        for e in lay.tensor_map:
            out.tensor_map.add().dim.extend(int(v) for v in (e if isinstance(e, (tuple, list)) else (e,)))
    else:
        out.tensor_map.add().dim.extend(int(v) for v in lay.tensor_map)
    # Always present, usually empty: MindSpore's transform code indexes [0] (spec §3.1).
    out.param_split_shape.add().dim.extend(int(v) for v in lay.param_split_shape)
    out.indices_offset.add().dim.extend(int(v) for v in lay.indices_offset)
    out.field = int(lay.field)
    out.opt_weight_shard_step = int(lay.opt_weight_shard_step)
    out.opt_weight_shard_size = int(lay.opt_weight_shard_size)


def _from_pb(msg: pb.ParallelStrategyMap, path: str) -> StrategyFile:
    sf = StrategyFile(current_stage=msg.current_stage)
    for it in msg.parallel_strategy_item:
        sf.items[it.node_name] = (it.parallel_strategys.stage,
                                  [list(s.dim) for s in it.parallel_strategys.parallel_strategy])
    for it in msg.parallel_layout_item:
        sf.layouts[it.param_name] = _layout_from_pb(it.param_name, it.parallel_layouts, path)
    return sf


def _to_pb(sf: StrategyFile) -> pb.ParallelStrategyMap:
    msg = pb.ParallelStrategyMap(current_stage=int(sf.current_stage))
    for name, (stage, strategy) in sf.items.items():
        it = msg.parallel_strategy_item.add(node_name=name)
        it.parallel_strategys.stage = int(stage)
        for dims in strategy:
            it.parallel_strategys.parallel_strategy.add().dim.extend(int(d) for d in dims)
    for name, lay in sf.layouts.items():
        it = msg.parallel_layout_item.add(param_name=name)
        _layout_to_pb(lay, it.parallel_layouts)
    return msg


# ------------------------------------------------------------------------------------- JSON
def _int_list(value: Any, what: str, path: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in value):
        raise FormatError(f"{path}: {what} must be a list of integers, got {value!r}")
    return list(value)


def _from_json(obj: Any, path: str) -> StrategyFile:
    if not isinstance(obj, dict):
        raise FormatError(f"{path}: the JSON strategy must be an object, got {type(obj).__name__}")
    try:
        sf = StrategyFile(current_stage=int(obj.get("current_stage", 1)))
        for name, it in (obj.get("parallel_strategy_item") or {}).items():
            strategy = [_int_list(s, f"strategy of {name!r}", path) for s in it["parallel_strategy"]]
            sf.items[name] = (int(it["stage"]), strategy)
        for name, it in (obj.get("parallel_layout_item") or {}).items():
            tm = [tuple(_int_list(e, f"tensor_map of {name!r}", path)) if isinstance(e, list) else e
                  for e in it["tensor_map"]]
            if not all(isinstance(e, (int, tuple)) and not isinstance(e, bool) for e in tm):
                raise FormatError(f"{path}: tensor_map of {name!r} is malformed: {it['tensor_map']!r}")
            sf.layouts[name] = ParamLayout(
                dev_matrix=_int_list(it["dev_matrix"], f"dev_matrix of {name!r}", path),
                tensor_map=tm,
                param_split_shape=_int_list(it.get("param_split_shape", []),
                                            f"param_split_shape of {name!r}", path),
                indices_offset=_int_list(it.get("indices_offset", []),
                                         f"indices_offset of {name!r}", path),
                field=int(it.get("field", 0)),
                opt_weight_shard_step=int(it.get("opt_weight_shard_step", 0)),
                opt_weight_shard_size=int(it.get("opt_weight_shard_size", 0)),
                tensor_shape=(_int_list(it["tensor_shape"], f"tensor_shape of {name!r}", path)
                              if "tensor_shape" in it else None),
            )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{path}: malformed JSON strategy entry: {type(exc).__name__}: {exc}") from None
    return sf


def _to_json(sf: StrategyFile) -> str:
    layouts = {}
    for name, lay in sf.layouts.items():
        d: dict[str, Any] = {
            "dev_matrix": [int(v) for v in lay.dev_matrix],
            "tensor_map": [list(e) if isinstance(e, (tuple, list)) else int(e) for e in lay.tensor_map],
            "field": int(lay.field),
            "opt_weight_shard_step": int(lay.opt_weight_shard_step),
            "opt_weight_shard_size": int(lay.opt_weight_shard_size),
        }
        if lay.tensor_shape is not None:
            d["tensor_shape"] = [int(v) for v in lay.tensor_shape]
        # MindSpore writes these two keys only for manual splits.
        if lay.param_split_shape:
            d["param_split_shape"] = [int(v) for v in lay.param_split_shape]
            d["indices_offset"] = [int(v) for v in lay.indices_offset]
        layouts[name] = d
    obj = {
        "current_stage": int(sf.current_stage),
        "parallel_strategy_item": {name: {"stage": int(stage),
                                          "parallel_strategy": [[int(d) for d in s] for s in strat]}
                                   for name, (stage, strat) in sf.items.items()},
        "parallel_layout_item": layouts,
    }
    # nlohmann::json keeps keys in a std::map (sorted) and dump(4) indents by 4.
    return json.dumps(obj, indent=4, sort_keys=True, ensure_ascii=False) + "\n"


# -------------------------------------------------------------------------------- public I/O
def _is_json(path: str) -> bool:
    return path.endswith(".json")


def read_strategy(path: PathLike) -> StrategyFile:
    """Read a strategy file (JSON iff the name ends with ``.json``).

    Missing, empty, directory or unparsable files raise :class:`FormatError` (unparsable ones
    as :class:`StrategyTypeError`, which is also a ``TypeError`` like MindSpore's).

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "s.json")
    >>> write_strategy(p, StrategyFile(layouts={"b": ParamLayout([8], [-1], tensor_shape=[10])}))
    >>> read_strategy(p).layouts["b"].tensor_shape
    [10]
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a directory, not a strategy file")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise FormatError(f"{path}: no such strategy file") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot read strategy file: {exc.strerror}") from None
    if not data:
        raise FormatError(f"{path}: the strategy file should not be empty")
    if _is_json(path):
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StrategyTypeError(f"{path}: the strategy file type should be one of json or "
                                    f"protobuf; JSON parse failed: {exc}") from None
        return _from_json(obj, path)
    msg = pb.ParallelStrategyMap()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise StrategyTypeError(f"{path}: the strategy file type should be one of json or "
                                f"protobuf; ParallelStrategyMap parse failed: {exc}") from None
    if not msg.IsInitialized():
        raise StrategyTypeError(f"{path}: ParallelStrategyMap lacks required fields: "
                                f"{msg.FindInitializationErrors()}")
    return _from_pb(msg, path)


def write_strategy(path: PathLike, sf: StrategyFile) -> None:
    """Write ``sf`` as MindSpore does (JSON iff the name ends with ``.json``), atomically.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "s.ckpt")
    >>> write_strategy(p, StrategyFile(items={"Add_b": (0, [[8, 1], [1]])}))
    >>> read_strategy(p).items
    {'Add_b': (0, [[8, 1], [1]])}
    """
    path = os.fspath(path)
    if _is_json(path):
        data = _to_json(sf).encode("utf-8")
    else:
        try:
            data = _to_pb(sf).SerializeToString()
        except EncodeError as exc:
            raise ValueError(f"{path}: cannot serialise strategy: {exc}") from None
    with atomic_output(path) as fh:
        fh.write(data)


def build_searched_strategy(strategy_filename: Optional[PathLike]) -> Optional[dict[str, pb.ParallelLayouts]]:
    """MindSpore's ``build_searched_strategy``: ``{param name: ParallelLayouts protobuf}``.

    ``None`` gives ``None``; a JSON file is converted to the same protobuf objects (its
    ``tensor_shape`` is dropped, as MindSpore does).

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "s.ckpt")
    >>> write_strategy(p, StrategyFile(layouts={"b": ParamLayout([8], [-1])}))
    >>> list(build_searched_strategy(p)["b"].dev_matrix[0].dim)
    [8]
    """
    if strategy_filename is None:
        return None
    sf = read_strategy(strategy_filename)
    out: dict[str, pb.ParallelLayouts] = {}
    for name, lay in sf.layouts.items():
        msg = pb.ParallelLayouts()
        _layout_to_pb(lay, msg)
        out[name] = msg
    return out


def _natural_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", os.path.basename(path))]


def merge_pipeline_strategys(src_strategy_dirs: PathLike, dst_strategy_file: PathLike) -> None:
    """Merge per-rank pipeline strategy files into one, as MindSpore's function of that name.

    Reads every ``*.ckpt`` (or every ``*.json``; mixing is an error) in the directory, skips
    byte-identical files and stages already merged, prefixes each layout name with
    ``"<stage>-"`` (the stage of the file's strategy items), keeps the strategy items, and
    writes ``current_stage = 1``. As in MindSpore, a missing directory is a ``NotADirectoryError``
    and the destination's directory is created.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> write_strategy(os.path.join(d, "s0.ckpt"), StrategyFile(
    ...     items={"MatMul_w": (1, [[2, 1], [1, 2]])}, layouts={"w": ParamLayout([2, 2], [-1, 0])}))
    >>> merge_pipeline_strategys(d, os.path.join(d, "merged.out"))
    >>> list(read_strategy(os.path.join(d, "merged.out")).layouts)
    ['1-w']
    """
    src = os.fspath(src_strategy_dirs)
    if not os.path.isdir(src):
        raise NotADirectoryError(f"{src}: the pipeline strategy directory does not exist")
    ckpts = glob.glob(os.path.join(src, "*.ckpt"))
    jsons = glob.glob(os.path.join(src, "*.json"))
    if ckpts and jsons:
        raise FormatError(f"{src}: holds both .ckpt and .json strategy files; use one kind")
    files = sorted(ckpts or jsons, key=_natural_key)
    if not files:
        raise FormatError(f"{src}: no strategy files (*.ckpt or *.json) to merge")
    merged = StrategyFile(current_stage=1)
    seen_bytes: set[bytes] = set()
    seen_stages: set[int] = set()
    for path in files:
        with open(path, "rb") as fh:
            data = fh.read()
        if data in seen_bytes:
            continue
        seen_bytes.add(data)
        sf = read_strategy(path)
        stages = {stage for stage, _ in sf.items.values()}
        if len(stages) != 1:
            raise FormatError(f"{path}: expected the strategy items of exactly one pipeline stage, "
                              f"found stages {sorted(stages)}")
        stage = stages.pop()
        if stage in seen_stages:
            log.debug("%s: stage %d already merged; skipped", path, stage)
            continue
        seen_stages.add(stage)
        merged.items.update(sf.items)
        for name, lay in sf.layouts.items():
            merged.layouts[f"{stage}-{name}"] = lay
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(dst_strategy_file))), exist_ok=True)
    write_strategy(dst_strategy_file, merged)
