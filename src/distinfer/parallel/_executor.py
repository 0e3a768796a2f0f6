"""The eager SPMD executor: every rank runs the same ops on its own blocks.

A primitive call (1) resolves its strategy (``.shard()``, a loaded strategy file, or the op's
default) and the layouts its rule derives (cached per op, strategy and shapes), (2) redistributes
each input to the layout it needs — the planner's steps (:func:`~distinfer.plan.plan_steps`):
reduce pending partial results, then a :class:`~distinfer.plan.Plan` executed with
point-to-point messages — (3) runs the local kernel, and (4) returns Tensors whose
:class:`~distinfer.layout.DistSpec` carries their layout and, for a split contraction, the
pending partial sum.

A *layout-only* run (``abstract()``) does all of that except arithmetic and messages: it is how
``Model.infer_predict_layout`` learns every parameter's layout. Parameters are materialised
(their block only) by the first op that consumes them.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .. import context
from .. import dtype as mstype
from ..communication import _backend
from ..errors import CommError
from ..layout import DistSpec, Layout, replicated
from ..ops import primitive as _prim
from ..ops._elementwise import Cast
from ..ops.primitive import FollowsInput, KernelContext, OpLayouts
from ..plan import Plan, Reduce, Step, assemble, extract, make_plan, plan_steps
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
    # Sharding propagation (parallel/propagation.py): a Tracer records calls for shapes only; a
    # Plan gives the calls of a followed graph their propagated strategies.
    tracer: Any = None
    plan: Any = None


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


def tracing(tracer):
    """Ops called inside are only recorded by ``tracer`` (``tracer.record(prim, args)``)."""
    return _override("tracer", tracer)


def following(plan):
    """Ops called inside take the strategies ``plan`` propagated (``plan.strategy(prim, shapes)``)."""
    return _override("plan", plan)


def _strategy_for(prim, tensors, shapes, n: int, consts):
    """The strategy ``prim`` runs with: its ``.shard()``, else one loaded from a strategy file,
    else its default (for ops that keep their input's layout: that Layout)."""
    raw = prim.in_strategy
    if raw is None and _State.plan is not None:
        raw = _State.plan.strategy(prim, shapes)
    if raw is None and _State.loaded:
        first = next((t for t in tensors if isinstance(t, Parameter)), None)
        if first is not None:
            raw = _State.loaded.get(f"{prim.name}_{first.name}")
    if raw is None:
        raw = prim.strategy_for(shapes, n, consts, [t.layout for t in tensors])
    return raw


def stage_scope(stage: int):
    """Ops called inside run on pipeline stage ``stage`` (a Cell with ``pipeline_stage`` set)."""
    return _override("stage_stack", _State.stage_stack + [int(stage)])


def mixed_precision_scope(dtype):
    """Ops called inside cast their floating inputs to ``dtype`` (a Cell after ``to_float(dtype)``);
    with :data:`AMP_O1`, only the ops of MindSpore's amp white list run in float16."""
    return _override("mixed_precision", _State.mixed_precision + [dtype])


#: The ``amp_level="O1"`` marker: white-listed ops run in float16, their outputs cast back to float32.
AMP_O1 = "O1"


def _in_dtype(prim, args, dtype):
    """``prim`` on its floating inputs cast to ``dtype``. Sharded, each cast runs in the layout the op
    wants that input in, so a parameter is still laid out by the op that consumes it (and its
    gradient comes back in that layout), exactly as without mixed precision."""
    tensors, consts = _split_args(prim, args)
    wanted = iter(())
    if context.is_sharded_mode():  # the op's layouts for its inputs as they will be: cast
        dtypes = [dtype if mstype.is_float(t.dtype) else t.dtype for t in tensors]
        out_shapes = [s for s, _ in prim.infer([t.global_shape for t in tensors], dtypes, consts)]
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


class _CastIn(FollowsInput, Cast):
    """``Cast`` run in a given layout, or where its input is (mixed precision's casts)."""

    def __init__(self, layout: Layout | None) -> None:
        super().__init__("Cast")
        self.layout = layout

    def follow(self, current, out_shape, consts):
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
    n = context.setting("device_num")
    if not _State.abstract and n != world.size:
        raise CommError(f"device_num is {n} but this job has {world.size} rank(s); launch with "
                        f"`mpirun -n {n}` (or set device_num to {world.size})")
    stages = context.setting("pipeline_stages")
    if n % stages:
        raise CommError(f"device_num {n} is not divisible by pipeline_stages {stages}")
    return n // stages


def _comm_inited() -> bool:
    from ..communication import GlobalComm

    return GlobalComm.INITED


def _global_rank() -> int:
    world = _backend.world()
    return world.rank if world.size > 1 or not _State.abstract else context.setting("global_rank")


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
    stages = [t.spec.stage for t in tensors if t.spec.stage is not None]
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


def _drop_const_strategies(strategy, n_args: int, consts: dict) -> tuple:
    """Accept MindSpore's ``()`` entries for scalar arguments (strategy per argument)."""
    if len(strategy) == n_args and consts:
        return tuple(s for i, s in enumerate(strategy) if i not in consts)
    return strategy


# ---------------------------------------------------------------------------- executor
def _op_layouts(prim, tensors, consts, n_args: int, out_shapes) -> tuple[OpLayouts, tuple | None]:
    """The layouts ``prim`` runs in on these inputs (sharded mode), and the split strategy that gave
    them (None for an op that kept its input's layout)."""
    n = stage_devices()
    shapes = [t.global_shape for t in tensors]
    raw = _strategy_for(prim, tensors, shapes, n, consts)
    if isinstance(raw, tuple):
        raw = _drop_const_strategies(raw, n_args, consts)
    strategy, lay = _prim.layouts(prim, raw, shapes, out_shapes, n, consts)
    wanted = lay.inputs
    if prim.in_layouts is not None:
        wanted = _prim.user_input_layouts(prim, shapes, n)
        _adopt_user_layouts(prim, tensors, wanted)
    if not prim.follows_input:  # shape ops take a parameter as it is laid out
        _check_parameter_users(prim, tensors, wanted)
    if isinstance(strategy, _prim.Arranged):
        strategy = strategy.strategy  # recorded as the split tuples it arranges
    return lay, (None if isinstance(strategy, Layout) else strategy)


def _check_parameter_users(prim, tensors, wanted) -> None:
    """A parameter is laid out as its first consumer wants; another op wanting other blocks of it is
    refused with MindSpore's error (a RuntimeError naming both layouts)."""
    for t, want in zip(tensors, wanted):
        if not isinstance(t, Parameter) or t.layout is None or want is None:
            continue
        held = t.layout.without_opt_shard()
        if held != want and not held.same_blocks(want):
            raise RuntimeError(f"The parameter: {t.name} has multiple users, but the TensorInfo are different, they "
                               f"are {held} and {want} ({prim.name} wants it split differently from the op that "
                               f"laid it out; give its users strategies that split it the same way)")


def _adopt_user_layouts(prim, tensors, users: list[Layout]) -> None:
    """``.shard()`` with Layouts: a parameter not laid out yet takes its Layout (what the strategy file
    and checkpoints record); the op's inputs are then redistributed to the rule's layouts as usual."""
    for t, user in zip(tensors, users):
        if isinstance(t, Parameter) and t.layout is None and not t.sliced:
            t._materialize(user, stage_rank())


def execute(prim, args) -> Any:
    """Run ``prim`` on ``args`` (Tensors, arrays and constants) on this rank."""
    if _State.tracer is not None:
        return _State.tracer.record(prim, args)
    if _State.plan is not None and _State.plan.idle:  # one logical call (casts inside are part of it)
        with _State.plan.calling(prim):
            return execute(prim, args)
    first = next((a.name for a in args if isinstance(a, Parameter)), None)  # names the op in comm errors
    with _backend.op_scope(prim.name, f"{prim.name}({first})" if first else prim.name):
        return _execute(prim, args)


def _execute(prim, args) -> Any:
    if _State.mixed_precision and prim.name != "Cast":
        mode = _State.mixed_precision[-1]
        if mode is not AMP_O1:
            return _in_dtype(prim, args, mode)
        if prim.amp == "white":
            return _in_float16(prim, args)
    tensors, consts = _split_args(prim, args)
    shapes = [t.global_shape for t in tensors]
    dtypes = [t.dtype for t in tensors]
    specs = prim.infer(shapes, dtypes, consts)
    out_shapes = [s for s, _ in specs]
    out_dtypes = [d for _, d in specs]
    if not context.is_sharded_mode():
        return _finish(prim, tensors, *_run_local(prim, tensors, consts, shapes, out_shapes, out_dtypes))
    me = stage_rank()
    lay, strategy = _op_layouts(prim, tensors, consts, len(args), out_shapes)
    stage = _op_stage(tensors) if context.setting("pipeline_stages") > 1 else None
    if _State.recorder is not None and stage in (None, my_stage()):
        _State.recorder.record(prim, strategy, tensors, stage or 0)
    if stage is not None and stage != my_stage():
        return _run_elsewhere(tensors, lay, stage, out_shapes, out_dtypes)
    locals_ = [_fetch(t, L, stage) for t, L in zip(tensors, lay.inputs)]
    ctx = KernelContext(consts, [L.box(me) for L in lay.inputs], [L.box(me) for L in lay.outputs],
                        shapes, out_shapes, out_dtypes, lay)
    outs = [None] * len(specs) if _State.abstract else _typed(prim.kernel(ctx, *locals_), out_dtypes)
    results = [Tensor._make(o, s, DistSpec(L, p, lay.partial_op, stage), d)
               for o, s, L, p, d in zip(outs, out_shapes, lay.outputs, _partials(lay), out_dtypes)]
    if lay.final:
        results = [to_layout(r, F) for r, F in zip(results, lay.final)]
    return _finish(prim, tensors, results, ctx, locals_, outs, lay)


def _partials(lay: OpLayouts) -> tuple:
    return lay.partial or tuple(() for _ in lay.outputs)


# ---------------------------------------------------------------------- pipeline stages
def _run_elsewhere(tensors, lay: OpLayouts, stage: int, out_shapes, out_dtypes):
    """An op of another stage: send it the inputs this stage holds; return shape-only results."""
    for t, L in zip(tensors, lay.inputs):
        if t.spec.stage == my_stage():
            _send_to_stage(t, L, stage)
    partial = tuple(() for _ in out_shapes) if lay.final else _partials(lay)
    results = [Tensor._make(None, s, DistSpec(L, p, lay.partial_op, stage), d)
               for s, L, p, d in zip(out_shapes, lay.final or lay.outputs, partial, out_dtypes)]
    return results[0] if len(results) == 1 else tuple(results)


def output_block(t: Tensor, target: Layout, broadcast: bool | None = None) -> np.ndarray:
    """A network output laid out as ``target``, as a numpy block on every rank.

    With pipeline stages the output lives on its stage; ``pipeline_result_broadcast`` sends it to
    the same local rank of every other stage, otherwise those ranks get zeros (as in MindSpore, only
    the stage that computed it holds the result).
    """
    stages = context.get_auto_parallel_context("pipeline_stages")
    held = t.spec.stage
    if stages == 1 or held is None:
        return to_layout(t, target).asnumpy()
    n, me, mine = target.num_devices, stage_rank(), my_stage()
    local = to_layout(t, target).asnumpy() if held == mine else None
    if broadcast is None:
        broadcast = context.get_auto_parallel_context("pipeline_result_broadcast")
    if not broadcast:
        return local if local is not None else np.zeros(target.local_shape, dtype=t.dtype.np)
    world, what = _backend.world(), f"pipeline result {target!r}"
    if local is not None:
        world.exchange({s * n + me: [local] for s in range(stages) if s != mine}, {}, what=what)
        return local
    got = world.exchange({}, {held * n + me: [(target.local_shape, t.dtype.np)]}, what=what)
    return got[held * n + me][0]


def _fetch(t: Tensor, target: Layout, stage: int | None) -> np.ndarray | None:
    """``t`` laid out as ``target`` for an op on ``stage``: received from the stage holding it if needed."""
    held = t.spec.stage
    if stage is None or held is None or held == stage:
        return redistribute(t, target)
    if _State.abstract:
        return None
    n = target.num_devices
    plan = make_plan(_current_layout(t, n), target)
    _notify_comm("stage_recv", tensor=t, layout=target, src_stage=held)
    return receive_from_stage(plan, held, t.dtype.np)


def receive_from_stage(plan: Plan, src_stage: int, dtype) -> np.ndarray:
    """This rank's block of ``plan.dst``, from the ranks of ``src_stage`` holding ``plan.src``."""
    me = stage_rank()
    src_offset = src_stage * plan.dst.num_devices
    recvs: dict[int, list] = {}
    for p in plan.pieces_for(me):
        recvs.setdefault(src_offset + p.src, []).append((p.shape, dtype))
    received = _backend.world().exchange({}, recvs, what=f"from stage {src_stage}: {_moving(plan.src, plan.dst)}")
    incoming = {src - src_offset: iter(arrays) for src, arrays in received.items()}
    return assemble(plan, me, lambda piece: next(incoming[piece.src]), dtype=dtype)


def send_to_stage(plan: Plan, local: np.ndarray, dst_stage: int) -> None:
    """Send this rank's pieces of ``plan`` (its source block ``local``) to the ranks of ``dst_stage``."""
    me = stage_rank()
    dst_offset = dst_stage * plan.dst.num_devices
    sends: dict[int, list] = {}
    for p in plan.pieces_from(me):
        sends.setdefault(dst_offset + p.dst, []).append(extract(local, plan.src, me, p.box))
    _backend.world().exchange(sends, {}, what=f"from stage {my_stage()}: {_moving(plan.src, plan.dst)}")


def _send_to_stage(t: Tensor, target: Layout, stage: int) -> None:
    """This stage's part of moving ``t`` to the ranks of ``stage`` (laid out as ``target`` there)."""
    src = _current_layout(t, target.num_devices)
    local = t.local
    for step in plan_steps(t.spec.laid_out(src), src):  # reduce within this stage before it leaves
        local = _run_step(step, local, t)
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
    results = [Tensor._make(o, s, None, d) for o, s, d in zip(outs, out_shapes, out_dtypes)]
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
    return t.layout if t.layout is not None else replicated(t.global_shape, n)


def redistribute(t: Tensor, target: Layout) -> np.ndarray | None:
    """``t``'s data laid out as ``target`` on this rank (partial results reduced first)."""
    if isinstance(t, Parameter) and t.layout is None and not t.sliced:
        t._materialize(target, stage_rank())  # the first consumer decides a parameter's layout
        return t.local
    local = t.local
    for step in plan_steps(t.spec.laid_out(_current_layout(t, target.num_devices)), target):
        local = _run_step(step, local, t)
    return local


def to_layout(t: Tensor, target: Layout) -> Tensor:
    """A new Tensor holding ``t`` laid out as ``target`` (no pending partial results)."""
    local = redistribute(t, target)
    return Tensor._make(local, t.global_shape, DistSpec(target, stage=t.spec.stage), t.dtype)


# A tensor's AllReduced block, kept for its later consumers (the reduction is done once).
_ALLREDUCED: "weakref.WeakKeyDictionary[Tensor, np.ndarray]" = weakref.WeakKeyDictionary()


def _run_step(step: Step, local: np.ndarray | None, t: Tensor) -> np.ndarray | None:
    """Execute one planner step on this rank's block of ``t`` (nothing in a layout-only run)."""
    if isinstance(step, Reduce):
        return _reduce(step, local, t)
    if _State.abstract:
        return None
    _notify_comm("redistribute", plan=step)
    return run_plan(step, local, stage_rank())


def _reduce(step: Reduce, local: np.ndarray | None, t: Tensor) -> np.ndarray | None:
    """AllReduce (kept for ``t``'s later consumers) or ReduceScatter of ``t``'s partial results."""
    if step.scatter_dim is None and t in _ALLREDUCED:
        return _ALLREDUCED[t]
    if _State.abstract:
        return None
    partition = _world_groups(step.groups)
    world = _backend.world()
    what = _summing(step.layout)
    if step.scatter_dim is not None:
        _notify_comm("reduce_scatter", layout=step.layout, partition=partition, axis=step.scatter_dim, op=step.op,
                     result_layout=step.result)
        return world.reduce_scatter(local, partition, step.scatter_dim, step.op, what=what)
    _notify_comm("allreduce", layout=step.layout, partition=partition, op=step.op)
    reduced = _ALLREDUCED[t] = world.allreduce(local, partition, step.op, what=what)
    return reduced


@functools.lru_cache(maxsize=4096)
def _moving(src: Layout, dst: Layout) -> str:
    """What a redistribution is, as a communication step names it (its fingerprint and errors)."""
    return f"redistribute {src!r} -> {dst!r}"


@functools.lru_cache(maxsize=4096)
def _summing(layout: Layout) -> str:
    return f"partial sums of {layout!r}"


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
    received = _backend.world().exchange(sends, recvs, what=_moving(plan.src, plan.dst)) if sends or recvs else {}
    incoming = {src - offset: iter(arrays) for src, arrays in received.items()}

    def fetch(piece):
        return extract(local, plan.src, me, piece.box) if piece.src == me else next(incoming[piece.src])

    return assemble(plan, me, fetch, dtype=local.dtype)


_prim._EXECUTE = execute
