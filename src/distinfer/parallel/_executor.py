"""The eager SPMD executor: every rank runs the same ops on its own blocks.

A primitive call (1) resolves its strategy (``.shard()`` or the batch-parallel default) and
the layouts its rule derives, (2) redistributes each input to the layout it needs — a
:class:`~distinfer.plan.Plan` executed with point-to-point messages, after reducing any pending
partial sums — (3) runs the local kernel, and (4) returns Tensors that carry their layout and,
for a split contraction, a pending partial sum.

A *layout-only* run (``abstract()``) does all of that except arithmetic and messages: it is how
``Model.infer_predict_layout`` learns every parameter's layout. Parameters are materialised
(their block only) by the first op that consumes them.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .. import context
from .. import dtype as mstype
from ..communication import _backend
from ..errors import CommError, StrategyError
from ..layout import Layout, replicated
from ..ops import primitive as _prim
from ..ops._elementwise import Cast
from ..ops.primitive import KernelContext, OpLayouts, check_strategy
from ..plan import Plan, assemble, extract, make_plan
from ..tensor import Parameter, Tensor

log = logging.getLogger(__name__)

__all__ = ["execute", "redistribute", "to_layout", "abstract", "recording", "observing", "Recorder",
           "stage_devices", "stage_rank", "my_stage", "stage_scope", "is_abstract", "run_plan", "output_block"]


# ------------------------------------------------------------------------------ run state
class _State:
    abstract = False
    recorder: "Recorder | None" = None
    loaded: dict = {}  # "<Prim>_<param>" -> strategy, from strategy_ckpt_config["load_file"]
    # Observers see every op and every communication of a concrete run (autograd tapes,
    # export tracers): objects with ``op(...)`` and ``comm(kind, **info)`` methods.
    observers: list = []
    stage_stack: list = []  # pipeline stages of the Cells being called (innermost last)
    mixed_precision: list = []  # ``Cell.to_float`` dtypes of the Cells being called (innermost last)


@dataclass
class Recorder:
    """The strategies a traced run used, keyed ``<Primitive>_<first parameter>`` as MindSpore keys
    them (each parameter's layout is on the parameter itself)."""

    strategies: dict[str, tuple[int, tuple]] = field(default_factory=dict)  # key -> (stage, strategy)
    trainable_only: bool = True

    def record(self, prim, strategy, tensors, stage: int = 0) -> None:
        first = next((t for t in tensors if isinstance(t, Parameter)), None)
        if first is not None and strategy is not None and (first.requires_grad or not self.trainable_only):
            self.strategies.setdefault(f"{prim.name}_{first.name}", (stage, strategy))


@contextlib.contextmanager
def _override(attr: str, value: Any) -> Iterator[Any]:
    """Set ``_State.<attr>`` for the duration of a block (restored even on errors)."""
    old = getattr(_State, attr)
    setattr(_State, attr, value)
    try:
        yield value
    finally:
        setattr(_State, attr, old)


def abstract():
    """Run ops for shapes and layouts only: no arithmetic, no messages."""
    return _override("abstract", True)


def recording(rec: Recorder | None):
    """Record the strategies of the ops run inside the block into ``rec`` (None: record nothing)."""
    return _override("recorder", rec)


def loaded_strategies(items: dict):
    """Apply strategies read from a strategy file to ops (without their own) by key."""
    return _override("loaded", items)


def _strategy_for(prim, tensors, shapes, n, consts):
    if prim.in_strategy is not None:
        return prim.in_strategy
    if _State.loaded:
        first = next((t for t in tensors if isinstance(t, Parameter)), None)
        if first is not None and f"{prim.name}_{first.name}" in _State.loaded:
            return _State.loaded[f"{prim.name}_{first.name}"]
    return prim.default_strategy(shapes, n, consts)


def stage_scope(stage: int):
    """Ops called inside run on pipeline stage ``stage`` (a Cell with ``pipeline_stage`` set)."""
    return _override("stage_stack", _State.stage_stack + [int(stage)])


def mixed_precision_scope(dtype):
    """Ops called inside cast their floating inputs to ``dtype`` (a Cell after ``to_float(dtype)``);
    with :data:`AMP_O1`, only the ops of MindSpore's amp white list run in float16."""
    return _override("mixed_precision", _State.mixed_precision + [dtype])


#: The ``amp_level="O1"`` marker: white-listed ops run in float16, their outputs cast back to float32.
AMP_O1 = "O1"
# MindSpore's amp white list, as far as distinfer has these primitives (no Conv, PReLU or Ger here).
_AMP_WHITE_OPS = frozenset({"MatMul", "BatchMatMul", "ReLU"})


def _in_dtype(prim, args, dtype):
    """``prim`` on its floating inputs cast to ``dtype``. Sharded, each cast runs in the layout the op
    wants that input in, so a parameter is still laid out by the op that consumes it (and its
    gradient comes back in that layout), exactly as without mixed precision."""
    tensors, consts = _split_args(prim, args)
    wanted = iter(())
    if context.is_sharded_mode():  # the op's layouts for its inputs as they will be: cast
        dtypes = [dtype if mstype.is_float(t.dtype) else t.dtype for t in tensors]
        out_shapes = [s for s, _ in prim.infer([t._shape for t in tensors], dtypes, consts)]
        wanted = iter(_op_layouts(prim, tensors, consts, len(args), out_shapes)[0].inputs)
    cast = []
    for i, a in enumerate(args):
        if i in consts:
            cast.append(a)
            continue
        t = tensors.pop(0)
        layout = next(wanted, None)
        cast.append(_cast(t, dtype, layout) if mstype.is_float(t.dtype) and t.dtype != dtype else t)
    with _override("mixed_precision", []):  # the op runs on the casts as they are
        return execute(prim, cast)


def _in_float16(prim, args):
    """amp O1: ``prim`` in float16, its float16 outputs cast back to float32 where they are."""
    out = _in_dtype(prim, args, mstype.float16)
    outs = [_cast(o, mstype.float32) if isinstance(o, Tensor) and o.dtype == mstype.float16 else o
            for o in (out if isinstance(out, tuple) else (out,))]
    return tuple(outs) if isinstance(out, tuple) else outs[0]


def cast_float_inputs(args, dtype) -> list:
    """``args`` with every floating Tensor (Parameters included) not already ``dtype`` cast to it
    where it is laid out (a Cell's inputs under ``to_float``)."""
    return [_cast(a, dtype) if isinstance(a, Tensor) and mstype.is_float(a.dtype) and a.dtype != dtype else a
            for a in args]


class _CastIn(Cast):
    """``Cast`` run in a given layout, or where its input is (mixed precision's casts)."""

    follows_input = True

    def __init__(self, layout: Layout | None) -> None:
        super().__init__("Cast")
        self.layout = layout

    def rule_follow(self, current, out_shape, consts):
        return (self.layout or current), (self.layout or current)


def _cast(t: Tensor, dtype, layout: Layout | None = None) -> Tensor:
    """``t`` cast to ``dtype`` by a ``Cast`` op that runs in ``layout`` (default: where ``t`` is): the
    casts are ops like any other, so gradients (back to ``t``'s dtype) and exports see them."""
    return _CastIn(layout)(t, dtype)


def is_abstract() -> bool:
    return _State.abstract


# ------------------------------------------------------------------------- device count
def stage_devices() -> int:
    """Devices of one pipeline stage: ``device_num / pipeline_stages``."""
    world = _backend.world()
    if world.size > 1 and not _comm_inited():
        from ..communication import init

        init()
    n = context.get_auto_parallel_context("device_num")
    if not _State.abstract and n != world.size:
        raise CommError(f"device_num is {n} but this job has {world.size} rank(s); launch with "
                        f"`mpirun -n {n}` (or set device_num to {world.size})")
    stages = context.get_auto_parallel_context("pipeline_stages")
    if n % stages:
        raise CommError(f"device_num {n} is not divisible by pipeline_stages {stages}")
    return n // stages


def _comm_inited() -> bool:
    from ..communication import GlobalComm

    return GlobalComm.INITED


def _global_rank() -> int:
    world = _backend.world()
    return world.rank if world.size > 1 or not _State.abstract else context.get_auto_parallel_context("global_rank")


def stage_rank() -> int:
    """This process's rank within its stage (the context's global_rank in a simulated layout run)."""
    return _global_rank() % stage_devices()


def my_stage() -> int:
    """The pipeline stage this process belongs to: stage s holds global ranks ``s*n .. s*n+n-1``."""
    return _global_rank() // stage_devices()


def _stage_offset() -> int:
    """World rank of this stage's local rank 0 (0 without pipeline stages)."""
    return my_stage() * stage_devices()


def _op_stage(tensors) -> int:
    """An op runs on its Cell's stage, or follows its inputs (the latest stage among them)."""
    if _State.stage_stack:
        return _State.stage_stack[-1]
    stages = [t._stage for t in tensors if t._stage is not None]
    return max(stages, default=0)


# --------------------------------------------------------------------------- arguments
def _split_args(prim, args) -> tuple[list[Tensor], dict[int, Any]]:
    tensors, consts = [], {}
    for i, a in enumerate(args):
        is_tensor = isinstance(a, Tensor) if prim.tensor_args is None else i in prim.tensor_args
        if is_tensor:
            if not isinstance(a, Tensor):
                a = Tensor(a) if isinstance(a, np.ndarray) else Tensor(np.asarray(a))
            tensors.append(a)
        else:
            consts[i] = a
    return tensors, consts


def _check_layouts(prim, lay: OpLayouts, shapes, n: int) -> None:
    """``prim`` was sharded with Layouts: each must give every rank the block the op's rule gives it
    for the same split counts (the rule decides placement; a different placement is refused, not
    silently replaced)."""
    for i, (user, shape, got) in enumerate(zip(prim.in_layouts, shapes, lay.inputs)):
        want = user.to_layout(shape)
        if want.num_devices != n:
            raise StrategyError(f"{prim.name}.shard: input {i}'s {user} covers {want.num_devices} devices, but the "
                                f"stage has {n}")
        if got is not None and not want.same_blocks(got):
            g = got.normalized()
            raise NotImplementedError(
                f"{prim.name}.shard: input {i}'s {user} (device matrix {want.dev_matrix}, tensor map "
                f"{want.tensor_map}) places the blocks of shape {tuple(shape)} differently from distinfer's "
                f"{prim.name} rule for the same splits {user.splits()} (device matrix {g.dev_matrix}, tensor map "
                f"{g.tensor_map}); name the device axes to match that, or shard with split tuples")


def _drop_const_strategies(strategy, n_args: int, consts: dict) -> tuple:
    """Accept MindSpore's ``()`` entries for scalar arguments (strategy per argument)."""
    if len(strategy) == n_args and consts:
        return tuple(s for i, s in enumerate(strategy) if i not in consts)
    return strategy


# ---------------------------------------------------------------------------- executor
def _op_layouts(prim, tensors, consts, n_args: int, out_shapes) -> tuple[OpLayouts, tuple | None]:
    """The layouts ``prim`` runs in on these inputs (sharded mode), and the strategy that gave them
    (None for ops that follow their input's layout)."""
    n = stage_devices()
    shapes = [t._shape for t in tensors]  # global shapes (a sliced Parameter reports its local one)
    if prim.follows_input and prim.in_strategy is None:
        req, out = prim.rule_follow(_current_layout(tensors[0], n), out_shapes[0], consts)
        return OpLayouts(req.dev_matrix, [req], [out], [()]), None
    raw = _strategy_for(prim, tensors, shapes, n, consts)
    strategy = check_strategy(prim.name, _drop_const_strategies(raw, n_args, consts), shapes, n)
    lay = _prim.apply_rule(prim, strategy, shapes, out_shapes, n, consts)
    if prim.in_strategy is not None and prim.in_layouts is not None:
        _check_layouts(prim, lay, shapes, n)
    return lay, strategy


def execute(prim, args) -> Any:
    """Run ``prim`` on ``args`` (Tensors, arrays and constants) on this rank."""
    if _State.mixed_precision and prim.name != "Cast":
        mode = _State.mixed_precision[-1]
        if mode is not AMP_O1:
            return _in_dtype(prim, args, mode)
        if prim.name in _AMP_WHITE_OPS:
            return _in_float16(prim, args)
    tensors, consts = _split_args(prim, args)
    shapes = [t._shape for t in tensors]  # global shapes (a sliced Parameter reports its local one)
    dtypes = [t.dtype for t in tensors]
    specs = prim.infer(shapes, dtypes, consts)
    out_shapes = [s for s, _ in specs]
    out_dtypes = [d for _, d in specs]
    if not context.is_sharded_mode():
        return _finish(prim, tensors, *_run_local(prim, tensors, consts, shapes, out_shapes, out_dtypes))
    me = stage_rank()
    lay, strategy = _op_layouts(prim, tensors, consts, len(args), out_shapes)
    stage = _op_stage(tensors) if context.get_auto_parallel_context("pipeline_stages") > 1 else None
    if _State.recorder is not None and stage in (None, my_stage()):
        _State.recorder.record(prim, strategy, tensors, stage or 0)
    if stage is not None and stage != my_stage():
        return _run_elsewhere(tensors, lay, stage, out_shapes, out_dtypes)
    locals_ = [_fetch(t, L, stage) for t, L in zip(tensors, lay.inputs)]
    ctx = KernelContext(consts, [L.box(me) for L in lay.inputs], [L.box(me) for L in lay.outputs],
                        shapes, out_shapes, out_dtypes, lay)
    outs = [None] * len(specs) if _State.abstract else _typed(prim.kernel(ctx, *locals_), out_dtypes)
    partial = lay.partial or [() for _ in outs]
    results = [Tensor._make(o, s, L, p, lay.partial_op, d)
               for o, s, L, p, d in zip(outs, out_shapes, lay.outputs, partial, out_dtypes)]
    if lay.final:
        results = [to_layout(r, F) for r, F in zip(results, lay.final)]
    for r in results:
        r._stage = stage
    return _finish(prim, tensors, results, ctx, locals_, outs, lay)


# ---------------------------------------------------------------------- pipeline stages
def _run_elsewhere(tensors, lay: OpLayouts, stage: int, out_shapes, out_dtypes):
    """An op of another stage: send it the inputs this stage holds; return shape-only results."""
    for t, L in zip(tensors, lay.inputs):
        if t._stage == my_stage():
            _send_to_stage(t, L, stage)
    partial = lay.partial or [() for _ in out_shapes]
    results = [Tensor._make(None, s, L, p, lay.partial_op, d)
               for s, L, p, d in zip(out_shapes, lay.final or lay.outputs, partial, out_dtypes)]
    for r in results:
        r._stage = stage
        r._partial = () if lay.final else r._partial
    return results[0] if len(results) == 1 else tuple(results)


def output_block(t: Tensor, target: Layout, broadcast: bool | None = None) -> np.ndarray:
    """A network output laid out as ``target``, as a numpy block on every rank.

    With pipeline stages the output lives on its stage; ``pipeline_result_broadcast`` sends it to
    the same local rank of every other stage, otherwise those ranks get zeros (as in MindSpore, only
    the stage that computed it holds the result).
    """
    stages = context.get_auto_parallel_context("pipeline_stages")
    if stages == 1 or t._stage is None:
        return to_layout(t, target).asnumpy()
    n, me, mine = target.num_devices, stage_rank(), my_stage()
    local = to_layout(t, target).asnumpy() if t._stage == mine else None
    if broadcast is None:
        broadcast = context.get_auto_parallel_context("pipeline_result_broadcast")
    if not broadcast:
        return local if local is not None else np.zeros(target.local_shape, dtype=t.dtype.np)
    world = _backend.world()
    if local is not None:
        world.exchange({s * n + me: [local] for s in range(stages) if s != mine}, {})
        return local
    got = world.exchange({}, {t._stage * n + me: [(target.local_shape, t.dtype.np)]})
    return got[t._stage * n + me][0]


def _fetch(t: Tensor, target: Layout, stage: int | None) -> np.ndarray | None:
    """``t`` laid out as ``target`` for an op on ``stage``: received from the stage holding it if needed."""
    if stage is None or t._stage is None or t._stage == stage:
        return redistribute(t, target)
    if _State.abstract:
        return None
    n = target.num_devices
    plan = make_plan(_current_layout(t, n), target)
    _notify_comm("stage_recv", tensor=t, layout=target, src_stage=t._stage)
    return receive_from_stage(plan, t._stage, t.dtype.np)


def receive_from_stage(plan: Plan, src_stage: int, dtype) -> np.ndarray:
    """This rank's block of ``plan.dst``, from the ranks of ``src_stage`` holding ``plan.src``."""
    me = stage_rank()
    src_offset = src_stage * plan.dst.num_devices
    recvs: dict[int, list] = {}
    for p in plan.pieces_for(me):
        recvs.setdefault(src_offset + p.src, []).append((p.shape, dtype))
    received = _backend.world().exchange({}, recvs)
    incoming = {src - src_offset: iter(arrays) for src, arrays in received.items()}
    return assemble(plan, me, lambda piece: next(incoming[piece.src]), dtype=dtype)


def send_to_stage(plan: Plan, local: np.ndarray, dst_stage: int) -> None:
    """Send this rank's pieces of ``plan`` (its source block ``local``) to the ranks of ``dst_stage``."""
    me = stage_rank()
    dst_offset = dst_stage * plan.dst.num_devices
    sends: dict[int, list] = {}
    for p in plan.pieces_from(me):
        sends.setdefault(dst_offset + p.dst, []).append(extract(local, plan.src, me, p.box))
    _backend.world().exchange(sends, {})


def _send_to_stage(t: Tensor, target: Layout, stage: int) -> None:
    """This stage's part of moving ``t`` to the ranks of ``stage`` (laid out as ``target`` there)."""
    src = _current_layout(t, target.num_devices)
    local = t._local
    if t._partial:
        local, src = _resolve_partial(t, src, src)  # reduce within this stage before it leaves
    if _State.abstract:
        return
    _notify_comm("stage_send", tensor=t, layout=target, dst_stage=stage)
    send_to_stage(make_plan(src, target), local, stage)


def _run_local(prim, tensors, consts, shapes, out_shapes, out_dtypes):
    """Stand-alone / data-parallel execution: every rank holds whole tensors."""
    locals_ = [t.asnumpy() for t in tensors]
    full = lambda s: tuple((0, d) for d in s)  # noqa: E731
    ctx = KernelContext(consts, [full(s) for s in shapes], [full(s) for s in out_shapes], shapes, out_shapes,
                        out_dtypes)
    outs = [None] * len(out_shapes) if _State.abstract else _typed(prim.kernel(ctx, *locals_), out_dtypes)
    results = [Tensor._make(o, s, None, dtype=d) for o, s, d in zip(outs, out_shapes, out_dtypes)]
    return results, ctx, locals_, outs, None


def _finish(prim, tensors, results, ctx, locals_, outs, lay):
    if not _State.abstract:
        for obs in _State.observers:
            obs.op(prim, ctx, tensors, lay, locals_, outs, results)
    return results[0] if len(results) == 1 else tuple(results)


def observing(observer):
    """Let ``observer`` see the ops and communications of the runs inside the block."""
    return _override("observers", _State.observers + [observer])


def is_observed() -> bool:
    """True while an observer (an autograd tape, an export tracer) sees the ops being run."""
    return bool(_State.observers)


def _notify_comm(kind: str, **info: Any) -> None:
    for obs in _State.observers:
        obs.comm(kind, **info)


def _typed(out, dtypes) -> list:
    """A kernel's outputs as a list, each in the dtype its op declares: numpy promotes some
    types (bfloat16 matmuls and scalar products come back as float32), so round them back as
    the op's output (a no-op when the dtype already matches)."""
    outs = list(out) if isinstance(out, tuple) else [out]
    return [o.astype(d.np, copy=False) if isinstance(o, np.ndarray) and d is not None and o.dtype != d.np else o
            for o, d in zip(outs, dtypes)]


# ----------------------------------------------------------------------- redistribution
def _current_layout(t: Tensor, n: int) -> Layout:
    return t._layout if t._layout is not None else replicated(t._shape, n)


def redistribute(t: Tensor, target: Layout) -> np.ndarray | None:
    """``t``'s data laid out as ``target`` on this rank (partial sums reduced first)."""
    me = stage_rank()
    if isinstance(t, Parameter) and t._layout is None and not t.sliced:
        t._materialize(target, me)  # the first consumer decides a parameter's layout
        return t._local
    src = _current_layout(t, target.num_devices)
    local = t._local
    if t._partial:
        local, src = _resolve_partial(t, src, target)
    if src.same_blocks(target):
        return local
    if _State.abstract:
        return None
    plan = make_plan(src, target)
    _notify_comm("redistribute", plan=plan)
    return run_plan(plan, local, me)


def to_layout(t: Tensor, target: Layout) -> Tensor:
    """A new Tensor holding ``t`` laid out as ``target`` (no pending partial sums)."""
    local = redistribute(t, target)
    return Tensor._make(local, t._shape, target, dtype=t.dtype)


def _scatter_axis(src: Layout, partial: tuple[int, ...], target: Layout) -> tuple[int, int] | None:
    """``(device axis, tensor dim)`` for a ReduceScatter: ``target`` splits a dim that ``src`` keeps
    whole over exactly one of the partial axes (ignoring size-1 axes), on the same device matrix."""
    if target.dev_matrix != src.dev_matrix or len(partial) != 1:
        return None
    p = partial[0]
    m = len(src.dev_matrix)

    def axes(entry) -> set[int]:
        values = entry if isinstance(entry, tuple) else (entry,)
        return {m - 1 - v for v in values if v != -1 and src.dev_matrix[m - 1 - v] > 1}

    for d, (s_entry, t_entry) in enumerate(zip(src.tensor_map, target.tensor_map)):
        if not axes(s_entry) and axes(t_entry) == {p} and src.shape[d] % src.dev_matrix[p] == 0:
            return p, d
    return None


def _resolve_partial(t: Tensor, src: Layout, target: Layout):
    """Reduce ``t``'s pending partial sums: straight into ``target``'s split with a ReduceScatter
    when it splits a dim over the partial axis, else one AllReduce, kept on ``t`` for later uses."""
    scatter = _scatter_axis(src, t._partial, target)
    if scatter is not None:
        p, d = scatter
        tm = list(src.tensor_map)
        tm[d] = len(src.dev_matrix) - 1 - p  # replaces at most a size-1 axis
        scattered = Layout(src.dev_matrix, tuple(tm), src.shape)
        if _State.abstract:
            return None, scattered
        partition = _world_groups(_backend.partition_along(src.dev_matrix, (p,)))
        _notify_comm("reduce_scatter", layout=src, partition=partition, axis=d, op=t._partial_op,
                     result_layout=scattered)
        return _backend.world().reduce_scatter(t._local, partition, d, t._partial_op), scattered
    if t._reduced is None:
        reduced = _reduce_partial(t._local, src, t._partial, t._partial_op)
        if _State.abstract:
            return None, src
        t._reduced = reduced
    return t._reduced, src


def _reduce_partial(local, layout: Layout, axes, op: str):
    if _State.abstract:
        return None
    partition = _world_groups(_backend.partition_along(layout.dev_matrix, axes))
    _notify_comm("allreduce", layout=layout, partition=partition, op=op)
    return _backend.world().allreduce(local, partition, op)


def _world_groups(partition):
    """A partition of this stage's local ranks, in world ranks."""
    offset = _stage_offset()
    return partition if not offset else tuple(tuple(offset + r for r in g) for g in partition)


def run_plan(plan: Plan, local: np.ndarray, me: int, offset: int | None = None) -> np.ndarray:
    """Execute ``plan`` for this rank (local rank ``me``; world rank ``offset + me``, the stage's
    offset by default): send my pieces, receive the others', assemble my block."""
    offset = _stage_offset() if offset is None else offset
    sends: dict[int, list[np.ndarray]] = {}
    recvs: dict[int, list] = {}
    for p in plan.pieces:
        if p.src == me and p.dst != me:
            sends.setdefault(offset + p.dst, []).append(extract(local, plan.src, me, p.box))
        elif p.dst == me and p.src != me:
            recvs.setdefault(offset + p.src, []).append((p.shape, local.dtype))
    received = _backend.world().exchange(sends, recvs) if sends or recvs else {}
    incoming = {src - offset: iter(arrays) for src, arrays in received.items()}

    def fetch(piece):
        return extract(local, plan.src, me, piece.box) if piece.src == me else next(incoming[piece.src])

    return assemble(plan, me, fetch, dtype=local.dtype)


_prim._EXECUTE = execute
