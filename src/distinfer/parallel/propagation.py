"""Sharding propagation: strategies for the ops a user left unconfigured (MindSpore's
``parallel_mode="auto_parallel"`` with ``search_mode="sharding_propagation"``, and the inside of
``Cell.shard`` / ``ms.shard`` regions).

distinfer runs ops eagerly, so it learns a graph by running it once for shapes only: a
:class:`Tracer` records every primitive call and which tensors feed it (another call's output,
a parameter, a graph input or a constant), computing and laying out nothing. :func:`propagate`
then decides the strategies, following MindSpore's algorithm:

* configured ops keep their strategies (``.shard()``, a loaded strategy file, the layouts of a
  shard region's boundary); the graph's inputs keep the layout the dataset strategy gives them;
* from each configured op in turn (MindSpore's order: by operator name), a breadth-first walk
  along edges, both ways, visits the ops not decided yet; each takes, among the strategies its
  layout rule accepts for its shapes and the device count, the one whose redistribution to its
  decided neighbours moves the fewest bytes (:func:`move_cost`, from the planner's own steps),
  ties broken as MindSpore breaks them: fewer bytes copied locally, less communication inside
  the op, more pieces, then the larger strategy;
* an op fed by several ops waits until they are all decided (or the walk runs dry);
* a parameter first reached through one consumer takes the layout that consumer wants, and its
  other consumers are then chosen to match it;
* ops reached from nothing configured keep the default (batch-parallel) strategy.

Shape ops that keep their input's layout (:class:`~distinfer.ops.primitive.FollowsInput`) are
not decided: they pass the layout through, and the cost of an edge counts what they move.

The result is a :class:`Plan`. While it is followed, the k-th call of an op kind takes its
propagated strategy (the executor asks :meth:`Plan.strategy`), and the strategy file records
it like a configured one.

>>> import numpy as np, distinfer as ms
>>> from distinfer import nn, ops
>>> ms.set_auto_parallel_context(parallel_mode="auto_parallel", search_mode="sharding_propagation",
...                              device_num=8, full_batch=True)
>>> class Net(nn.Cell):
...     def __init__(self):
...         super().__init__()
...         self.w = ms.Parameter(ms.Tensor(np.ones((16, 8), np.float32)), name="w")
...         self.matmul = ops.MatMul().shard(((2, 1), (1, 4)))
...         self.relu = ops.ReLU()
...     def construct(self, x):
...         return self.relu(self.matmul(x, self.w))
>>> net = Net()
>>> _ = ms.Model(net).infer_predict_layout(ms.Tensor(np.ones((4, 16), np.float32)))
>>> [(name, s) for name, s, configured in last_plan(net).decisions if not configured]
[('ReLU', ((2, 4),))]
>>> ms.reset_auto_parallel_context()
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from .. import context
from ..layout import DistSpec, Layout, replicated
from ..ops import primitive as _prim
from ..plan import move_volumes, reduce_step
from ..tensor import Parameter, Tensor
from . import _executor as ex
from .inputs import distribute_inputs

log = logging.getLogger(__name__)

__all__ = ["Tracer", "Plan", "propagate", "move_cost", "candidates", "planned_call", "call_cell", "last_plan",
           "check_search_mode", "SEARCH_MODES"]

#: The auto-parallel search modes and whether distinfer runs them.
SEARCH_MODES = {"sharding_propagation": True, "recursive_programming": False, "dynamic_programming": False}

# Above this many strategy combinations an op's candidates are limited to at most one split dim
# per input (the exhaustive search stays for the small ops it was written for).
_MAX_COMBINATIONS = 20000


# ----------------------------------------------------------------------------- the graph
@dataclass(eq=False)
class Source:
    """A tensor the graph did not compute: a graph input, a parameter or a constant."""

    tensor: Tensor
    kind: str  # "input" | "param" | "const"


@dataclass(frozen=True)
class Out:
    """Output ``index`` of traced call ``node``."""

    node: int
    index: int


@dataclass(eq=False)
class Node:
    """One traced primitive call."""

    index: int
    prim: Any
    inputs: list  # per tensor input: Source | Out
    consts: dict
    n_args: int
    shapes: list
    out_shapes: list
    itemsizes: list  # per tensor input
    out_itemsizes: list
    in_region: bool  # called inside a Cell.shard / ms.shard region
    loaded: Any = None  # the strategy a loaded strategy file gives it

    @property
    def name(self) -> str:
        """MindSpore's operator-info name, which orders the walks (``MatMulInfo3``)."""
        return f"{self.prim.name}Info{self.index + 1}"


class Tracer:
    """Records primitive calls for shapes only (installed by :func:`ex.tracing`); nothing is
    computed, laid out or materialised."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.sources: dict[int, Source] = {}
        self.inputs: list[Source] = []
        self.pins: dict[Parameter, Any] = {}  # parameter_plan entries met in shard regions
        self._made: dict[int, Out] = {}
        self._keep: list[Tensor] = []  # keeps traced tensors alive, so ids stay unique
        self._regions = 0

    def add_input(self, t: Tensor) -> None:
        src = Source(t, "input")
        self.sources[id(t)] = src
        self.inputs.append(src)
        self._keep.append(t)

    @contextlib.contextmanager
    def region(self, pins: dict) -> Iterator[None]:
        """Calls inside are in a shard region; ``pins`` are its parameter_plan entries."""
        for p, strategy in pins.items():
            self.pins.setdefault(p, strategy)
        self._regions += 1
        try:
            yield
        finally:
            self._regions -= 1

    def _ref(self, t: Tensor) -> Source | Out:
        made = self._made.get(id(t))
        if made is not None:
            return made
        src = self.sources.get(id(t))
        if src is None:
            src = self.sources[id(t)] = Source(t, "param" if isinstance(t, Parameter) else "const")
            self._keep.append(t)
        return src

    def record(self, prim, args) -> Any:
        """The executor's ``execute`` while tracing: record the call, return shape-only outputs."""
        tensors, consts = ex._split_args(prim, args)
        shapes = [t.global_shape for t in tensors]
        specs = prim.infer(shapes, [t.dtype for t in tensors], consts)
        first = next((t for t in tensors if isinstance(t, Parameter)), None)
        loaded = ex._State.loaded.get(f"{prim.name}_{first.name}") if first is not None and ex._State.loaded else None
        node = Node(len(self.nodes), prim, [self._ref(t) for t in tensors], consts, len(args), shapes,
                    [tuple(s) for s, _ in specs], [t.dtype.itemsize for t in tensors],
                    [d.itemsize for _, d in specs], self._regions > 0, loaded)
        self.nodes.append(node)
        outs = []
        for j, (shape, dtype) in enumerate(specs):
            t = Tensor._make(None, shape, None, dtype)
            self._made[id(t)] = Out(node.index, j)
            self._keep.append(t)
            outs.append(t)
        return outs[0] if len(outs) == 1 else tuple(outs)


# ---------------------------------------------------------------------------------- costs
def move_cost(spec: DistSpec, target: Layout, itemsize: int = 4) -> tuple[int, int]:
    """``(bytes sent between ranks, bytes copied within a rank)`` to bring a tensor distributed as
    ``spec`` into ``target``: the planner's own steps (a pending reduction, then a move), summed
    over all ranks.

    >>> from distinfer.layout import DistSpec, Layout
    >>> rows4, cols4 = Layout((4,), (0, -1), (8, 8)), Layout((4,), (-1, 0), (8, 8))
    >>> move_cost(DistSpec(rows4), rows4), move_cost(DistSpec(rows4), cols4)  # 3/4 of each block moves
    ((0, 0), (192, 64))
    """
    n = target.num_devices
    src = spec.layout if spec.layout is not None else replicated(target.shape, n)
    sent = copied = 0.0
    reduce = reduce_step(spec.laid_out(src), target)
    if reduce is not None:
        group = len(reduce.groups[0])
        passes = 1 if reduce.scatter_dim is not None else 2  # ReduceScatter; AllReduce = RS + AllGather
        sent += n * math.prod(src.local_shape) * passes * (group - 1) / group
        src = reduce.result
    if not src.same_blocks(target):
        moved, local = move_volumes(src, target)
        sent, copied = sent + moved, copied + local
    return int(round(sent * itemsize)), int(round(copied * itemsize))


def _own_cost(lay: _prim.OpLayouts, itemsizes: Sequence[int]) -> int:
    """Bytes an op's partial outputs will cost to reduce (MindSpore counts them inside the op)."""
    total = 0.0
    for out, axes, size in zip(lay.outputs, lay.partial or (), itemsizes):
        if axes:
            group = math.prod(lay.dev_matrix[a] for a in axes)
            total += out.num_devices * math.prod(out.local_shape) * 2 * (group - 1) / group * size
    return int(round(total))


# ----------------------------------------------------------------------------- candidates
def _splits(shape: Sequence[int], n: int, max_split_dims: int | None = None) -> list[tuple[int, ...]]:
    """Every split tuple of one tensor over ``n`` devices: each dim cut by a divisor of ``n`` that
    divides it, the product dividing ``n``."""
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    out: list[tuple[int, ...]] = []

    def walk(d: int, prefix: tuple[int, ...], used: int) -> None:
        if d == len(shape):
            out.append(prefix)
            return
        for v in divisors:
            if shape[d] % v or n % (used * v) or (v > 1 and max_split_dims is not None
                                                   and sum(x > 1 for x in prefix) >= max_split_dims):
                continue
            walk(d + 1, prefix + (v,), used * v)

    walk(0, (), 1)
    return out


_CANDIDATES: dict = {}


def _prim_key(prim) -> tuple:
    """What a primitive's rule depends on besides shapes and constants (its type and settings)."""
    skip = {"_rules", "in_strategy", "out_strategy", "in_layouts", "out_layouts", "instance_name", "attrs"}
    settings = sorted((k, repr(v)) for k, v in vars(prim).items() if k not in skip)
    attrs = sorted((k, repr(v)) for k, v in prim.attrs.items() if k != "in_strategy")
    return type(prim), prim.name, tuple(settings), tuple(attrs)


def candidates(prim, shapes: Sequence[Sequence[int]], out_shapes: Sequence[Sequence[int]], n: int,
               consts: dict) -> list[tuple[tuple, _prim.OpLayouts]]:
    """``(strategy, layouts)`` for every split strategy ``prim``'s rule accepts on these shapes and
    ``n`` devices (those using fewer devices included: the rest replicate).

    >>> from distinfer import ops
    >>> [s for s, _ in candidates(ops.ReLU(), [(4, 2)], [(4, 2)], 2, {})]
    [((1, 1),), ((1, 2),), ((2, 1),)]
    """
    try:
        key = (_prim_key(prim), tuple(map(tuple, shapes)), tuple(map(tuple, out_shapes)), n,
               tuple((i, _prim._frozen(v)) for i, v in sorted(consts.items())))
        hit = _CANDIDATES.get(key)
    except TypeError:
        key, hit = None, None
    if hit is not None:
        return hit
    options = [_splits(s, n) for s in shapes]
    if math.prod(len(o) for o in options) > _MAX_COMBINATIONS:
        options = [_splits(s, n, max_split_dims=1) for s in shapes]
    found = []
    for combo in itertools.product(*options):
        try:
            strategy, lay = _prim._checked_rule(prim, combo, shapes, out_shapes, n, consts)
        except (ValueError, ZeroDivisionError):  # StrategyError and LayoutError are ValueErrors
            continue
        found.append((strategy, lay))
    if key is not None:
        _CANDIDATES[key] = found
    return found


def _splits_of(strategy) -> tuple:
    """A strategy as split tuples (an arranged one: the split tuples it arranges)."""
    return strategy.strategy if isinstance(strategy, _prim.Arranged) else strategy


def _arrangements(mine: Layout, target: Layout, dev: Sequence[int]) -> list[tuple[tuple[int, ...], ...]]:
    """Ways to map the device axes ``dev`` of an op's rule onto ``target``'s so that its tensor laid
    out as ``mine`` lands as ``target`` (same split counts): per rule axis, the target axes standing
    for it. The axes splitting the tensor's dims map dim by dim, in order; the others share out the
    target axes left over, each taking a group whose sizes multiply to its own."""
    tdev = target.dev_matrix
    axes: dict[int, tuple[int, ...]] = {}
    used: set[int] = set()
    for d in range(mine.ndim):
        pool = [a for a in target.dim_axes(d) if tdev[a] > 1]
        for q in mine.dim_axes(d):
            group: list[int] = []
            while math.prod(tdev[a] for a in group) < dev[q] and pool:
                group.append(pool.pop(0))
            if math.prod(tdev[a] for a in group) != dev[q]:
                return []
            axes[q] = tuple(group)
            used.update(group)
        if pool:
            return []
    rest = [q for q in range(len(dev)) if q not in axes and dev[q] > 1]
    free = [a for a in range(len(tdev)) if a not in used and tdev[a] > 1]
    out: list[tuple[tuple[int, ...], ...]] = []

    def share(k: int, left: list[int], chosen: dict[int, tuple[int, ...]]) -> None:
        if k == len(rest):
            if not left:
                full = {**axes, **chosen}
                out.append(tuple(full.get(q, ()) for q in range(len(dev))))
            return
        q = rest[k]
        for size in range(1, len(left) + 1):
            for group in itertools.combinations(left, size):
                if math.prod(tdev[a] for a in group) == dev[q]:
                    share(k + 1, [a for a in left if a not in group], {**chosen, q: group})

    share(0, free, {})
    return out


def _flat(strategy) -> tuple[int, ...]:
    return tuple(v for s in strategy for v in s)


# ------------------------------------------------------------------------------ the plan
@dataclass
class Plan:
    """Strategies for a traced graph, replayed call by call.

    ``entries`` maps an op kind (its class and name) to one ``(input shapes, strategy or None)``
    per traced call of that kind, in call order; ``params`` holds parameter layouts a shard
    region pins; ``decisions`` lists ``(op name, strategy, configured)`` per decided call, in call
    order (configured ones too), for inspection.
    """

    entries: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    decisions: list = field(default_factory=list)
    idle: bool = True
    _seen: dict = field(default_factory=dict)
    _current: tuple | None = None
    _warned: bool = False

    @contextlib.contextmanager
    def following(self) -> Iterator["Plan"]:
        """Replay: counts restart, pinned parameters take their layouts."""
        self._seen = {}
        for p, layout in self.params.items():
            if p.layout is None and not p.sliced:
                p._materialize(layout, ex.stage_rank())
        with ex.following(self):
            yield self

    @contextlib.contextmanager
    def calling(self, prim) -> Iterator[None]:
        """One logical op call (the executor's outermost ``execute``): which traced call it is."""
        kind = (type(prim), prim.name)
        k = self._seen.get(kind, 0)
        self._seen[kind] = k + 1
        calls = self.entries.get(kind)
        self._current = (prim, calls[k]) if calls is not None and k < len(calls) else None
        self.idle = False
        try:
            yield
        finally:
            self.idle, self._current = True, None

    def strategy(self, prim, shapes) -> Any:
        """The propagated strategy of the call in progress (None: the op's own or default)."""
        if self._current is None or self._current[0] is not prim:
            return None
        traced_shapes, strategy = self._current[1]
        if strategy is not None and [tuple(s) for s in shapes] != traced_shapes:
            if not self._warned:
                log.warning("rank %d: %s ran on shapes %s but was traced with %s; it keeps its default strategy",
                            ex._global_rank(), prim.name, [tuple(s) for s in shapes], traced_shapes)
                self._warned = True
            return None
        return strategy


# --------------------------------------------------------------------------- propagation
class _Graph:
    """A traced graph seen through its shape ops: edges join an op's output (or a source) to an
    op's input through the layout-following ops between them."""

    def __init__(self, tracer: Tracer, n: int, everything: bool) -> None:
        self.n = n
        self.nodes = tracer.nodes
        self.fixed: dict[int, tuple] = {}  # node -> (strategy, layouts, declared input layouts)
        self.follows: set[int] = set()
        for node in self.nodes:
            self._classify(node, everything)
        self.origin: dict[int, list] = {}  # node -> per input (base, chain)
        self.users: dict[Any, list] = {}  # base -> [(chain, node index, input index)]
        for node in self.nodes:
            if node.index in self.follows:
                continue
            resolved = [self._resolve(ref) for ref in node.inputs]
            self.origin[node.index] = resolved
            for i, (base, chain) in enumerate(resolved):
                self.users.setdefault(base, []).append((chain, node.index, i))

    def _classify(self, node: Node, everything: bool) -> None:
        prim = node.prim
        configured = prim.in_strategy is not None or node.loaded is not None or getattr(prim, "pins_layout", False)
        if not configured and prim.follows_input:
            self.follows.add(node.index)
        elif configured or not (everything or node.in_region):
            raw = prim.in_strategy if prim.in_strategy is not None else node.loaded
            if getattr(prim, "pins_layout", False):
                raw = replicated(node.shapes[0], self.n)  # its follow() ignores what comes in
            elif raw is None:
                raw = prim.default_strategy(node.shapes, self.n, node.consts)
            if not isinstance(raw, Layout):
                raw = ex._drop_const_strategies(raw, node.n_args, node.consts)
            strategy, lay = _prim.layouts(prim, raw, node.shapes, node.out_shapes, self.n, node.consts)
            declared = _prim.user_input_layouts(prim, node.shapes, self.n) if prim.in_layouts is not None \
                else list(lay.inputs)
            self.fixed[node.index] = (strategy, lay, declared)

    def _resolve(self, ref) -> tuple[Any, tuple[int, ...]]:
        """(the op output or source behind ``ref``, the layout-following calls in between)."""
        chain: list[int] = []
        while isinstance(ref, Out) and ref.node in self.follows:
            chain.append(ref.node)
            ref = self.nodes[ref.node].inputs[0]
        return ref, tuple(reversed(chain))

    def follow_layouts(self, f: int, layout: Layout) -> _prim.OpLayouts:
        node = self.nodes[f]
        return _prim.layouts(node.prim, layout, node.shapes, node.out_shapes, self.n, node.consts)[1]


class _Propagation:
    """One run of the algorithm over a :class:`_Graph` (see the module doc)."""

    def __init__(self, graph: _Graph, tracer: Tracer) -> None:
        self.g = graph
        self.n = graph.n
        self.choice: dict[int, tuple] = dict(graph.fixed)  # node -> (strategy, layouts, declared)
        self.param_layout: dict[Source, Layout] = {}
        self.pinned: dict[Source, Layout] = {}
        for src in tracer.sources.values():
            if src.kind == "param" and src.tensor.layout is not None:
                self.param_layout[src] = src.tensor.layout.without_opt_shard()
        for p, strategy in tracer.pins.items():
            src = tracer.sources.get(id(p))
            if src is not None and src not in self.param_layout:
                self.pinned[src] = self.param_layout[src] = _pinned_layout(p, strategy, self.n)
        self.inputs = tracer.inputs
        self.visited: set = set()

    # ------------------------------------------------------------------ what is known
    def base_spec(self, base) -> DistSpec | None:
        """How ``base`` is distributed once decided (None: not decided yet)."""
        if isinstance(base, Out):
            got = self.choice.get(base.node)
            if got is None:
                return None
            lay = got[1]
            if lay.final:
                return DistSpec(lay.final[base.index])
            partial = lay.partial[base.index] if lay.partial else ()
            return DistSpec(lay.outputs[base.index], partial, lay.partial_op)
        if base.kind == "param":
            layout = self.param_layout.get(base)
            return None if layout is None else DistSpec(layout)
        spec = base.tensor.spec
        return spec if spec.layout is not None else spec.laid_out(replicated(base.tensor.global_shape, self.n))

    def edge_cost(self, spec: DistSpec, chain: tuple[int, ...], target: Layout, itemsize: int) -> tuple[int, int]:
        sent = copied = 0
        for f in chain:
            layout = spec.layout
            lay = self.g.follow_layouts(f, layout)
            s, c = move_cost(spec, lay.inputs[0], itemsize)
            sent, copied = sent + s, copied + c
            spec = DistSpec(lay.outputs[0])
        s, c = move_cost(spec, target, itemsize)
        return sent + s, copied + c

    def is_free_param(self, base) -> bool:
        return isinstance(base, Source) and base.kind == "param" and base not in self.param_layout

    # ------------------------------------------------------------------------ choosing
    def score(self, v: int, strategy, lay: _prim.OpLayouts) -> tuple:
        node = self.g.nodes[v]
        conflicts = sent = copied = 0
        for i, (base, chain) in enumerate(self.g.origin[v]):
            if self.is_free_param(base) and not chain:
                continue  # it will take this op's layout
            spec = self.base_spec(base)
            if spec is None and self.is_free_param(base):
                spec = DistSpec(replicated(base.tensor.global_shape, self.n))  # a shape op lays it out whole
            if spec is None:
                continue
            if isinstance(base, Source) and base.kind == "param" and not chain \
                    and not base_layout_matches(spec.layout, lay.inputs[i]):
                conflicts += 1
            s, c = self.edge_cost(spec, chain, lay.inputs[i], node.itemsizes[i])
            sent, copied = sent + s, copied + c
        for j in range(len(node.out_shapes)):
            out_spec = DistSpec(lay.final[j]) if lay.final else \
                DistSpec(lay.outputs[j], lay.partial[j] if lay.partial else (), lay.partial_op)
            for chain, w, i in self.g.users.get(Out(v, j), ()):
                got = self.choice.get(w)
                if got is None:
                    continue
                s, c = self.edge_cost(out_spec, chain, got[1].inputs[i], node.out_itemsizes[j])
                sent, copied = sent + s, copied + c
        own = _own_cost(lay, node.out_itemsizes)
        flat = _flat(_splits_of(strategy))
        return conflicts, sent, copied, own, -math.prod(flat), tuple(-x for x in flat)

    def decide(self, v: int) -> list:
        """Give op ``v`` its cheapest strategy; returns the parameters it laid out (now decided)."""
        node = self.g.nodes[v]
        options = candidates(node.prim, node.shapes, node.out_shapes, self.n, node.consts)
        options = options + self.arranged(v, options)
        if not options:
            log.info("%s: no strategy fits shapes %s on %d devices; it keeps its default", node.name, node.shapes,
                     self.n)
            return []
        strategy, lay = min(options, key=lambda o: self.score(v, *o))
        self.choice[v] = (strategy, lay, list(lay.inputs))
        laid = []
        for i, (base, chain) in enumerate(self.g.origin[v]):
            if self.is_free_param(base) and not chain:
                self.param_layout[base] = lay.inputs[i]
                laid.append(base)
        return laid

    def neighbour_layouts(self, v: int) -> list[tuple[Any, int, bool]]:
        """Layouts decided neighbours give op ``v``'s tensors: ``(layout, index, is_output)`` for an
        input as its producer delivers it and for an output as a consumer wants it."""
        node = self.g.nodes[v]
        found = []
        for i, (base, chain) in enumerate(self.g.origin[v]):
            spec = self.base_spec(base)
            if spec is None:
                continue
            for f in chain:
                spec = DistSpec(self.g.follow_layouts(f, spec.layout).outputs[0])
            found.append((spec.layout, i, False))
        for j in range(len(node.out_shapes)):
            for chain, w, i in self.g.users.get(Out(v, j), ()):
                if not chain and w in self.choice:
                    found.append((self.choice[w][1].inputs[i], j, True))
        return found

    def arranged(self, v: int, options: list) -> list:
        """Candidates running op ``v`` in a decided neighbour's device arrangement: each split strategy
        whose layout of that tensor has the neighbour's split counts, its device axes mapped onto the
        neighbour's so the tensor needs no move (MindSpore adds the same, "under the neighbour's
        device matrix")."""
        node = self.g.nodes[v]
        found, keys = [], set()
        for target, k, is_output in self.neighbour_layouts(v):
            target = target.without_opt_shard()
            for strategy, lay in options:
                mine = (lay.outputs if is_output else lay.inputs)[k]
                if mine is None or mine.splits != target.splits or mine.same_blocks(target):
                    continue
                for axes in _arrangements(mine, target, lay.dev_matrix):
                    key = (strategy, target.dev_matrix, axes)
                    if key in keys:
                        continue
                    keys.add(key)
                    try:
                        found.append(_prim._checked_rule(node.prim, _prim.Arranged(strategy, target.dev_matrix, axes),
                                                         node.shapes, node.out_shapes, self.n, node.consts))
                    except ValueError:
                        continue
        return found

    # --------------------------------------------------------------------------- walks
    def neighbours(self, u) -> Iterator[Any]:
        """Consumers first (in call order), then producers (in input order)."""
        if isinstance(u, Source):
            yield from sorted({w for _, w, _ in self.g.users.get(u, ())})
            return
        node = self.g.nodes[u]
        users = set()
        for j in range(len(node.out_shapes)):
            users.update(w for _, w, _ in self.g.users.get(Out(u, j), ()))
        yield from sorted(users)
        for base, chain in self.g.origin[u]:
            if isinstance(base, Out):
                yield base.node
            elif base.kind == "param" and not chain:
                yield base

    def waits(self, v: int) -> bool:
        """An op fed by several ops waits until all of them are decided."""
        producers = [base.node for base, _ in self.g.origin[v] if isinstance(base, Out)]
        return len(producers) > 1 and any(p not in self.choice for p in producers)

    def walk(self, start: list, next_root: int | None, waiting: dict) -> None:
        """MindSpore's breadth-first walk from one configured op (or source)."""
        queue = deque(start)
        while True:
            if not queue:
                if not waiting:
                    return
                w = min(waiting)
                if next_root is not None and w > next_root:
                    return  # a configured op earlier in the graph gets there first
                del waiting[w]
                if w in self.choice:
                    continue
                queue.extend(self.decide(w))
                queue.append(w)
                continue
            u = queue.popleft()
            self.visited.add(u)
            for v in self.neighbours(u):
                if v in self.visited:
                    continue
                if isinstance(v, Source):
                    if v in self.param_layout:
                        continue
                    if isinstance(u, int) and u in self.choice:  # the consumer that reached it lays it out
                        i = next(i for i, (b, c) in enumerate(self.g.origin[u]) if b is v and not c)
                        self.param_layout[v] = self.choice[u][2][i]
                        queue.append(v)
                    continue
                if v in self.choice:
                    continue
                if self.waits(v):
                    waiting[v] = None
                    continue
                queue.extend(self.decide(v))
                queue.append(v)

    def run(self) -> None:
        roots: list[tuple[str, int, list]] = []  # (MindSpore's operator name, graph position, start)
        if self.inputs:
            roots.append(("VirtualDatasetInfo0", -1, list(self.inputs)))
        for v in self.g.fixed:
            roots.append((self.g.nodes[v].name, v, [v]))
        for src in self.pinned:
            first = min((w for _, w, _ in self.g.users.get(src, ())), default=None)
            if first is not None:
                roots.append((self.g.nodes[first].name, first, [src]))
        roots.sort(key=lambda r: r[0])
        waiting: dict[int, None] = {}
        for k, (_, _, start) in enumerate(roots):
            later = [pos for _, pos, _ in roots[k + 1:]]
            self.walk(start, later[0] if later else None, waiting)
        while waiting:
            self.walk([], None, waiting)


def base_layout_matches(held: Layout, wanted: Layout) -> bool:
    return held == wanted or held.same_blocks(wanted)


def _pinned_layout(param: Parameter, strategy, n: int) -> Layout:
    """The layout a parameter_plan entry gives ``param``: a split tuple over ``n`` devices, or a Layout."""
    shape = param.global_shape
    if hasattr(strategy, "to_layout"):
        return strategy.to_layout(shape)
    return Layout.from_splits(tuple(strategy), shape, n)


def propagate(tracer: Tracer, n: int, everything: bool = True) -> Plan:
    """Strategies for the traced graph over ``n`` devices (see the module doc). ``everything``:
    every unconfigured op is decided (auto_parallel); else only those inside shard regions
    (semi_auto_parallel), the others keeping their defaults."""
    graph = _Graph(tracer, n, everything)
    run = _Propagation(graph, tracer)
    run.run()
    plan = Plan(params={src.tensor: layout for src, layout in run.pinned.items()})
    for node in graph.nodes:
        kind = (type(node.prim), node.prim.name)
        strategy = None
        if node.index in run.choice and node.index not in graph.fixed:
            strategy = run.choice[node.index][0]
        plan.entries.setdefault(kind, []).append(([tuple(s) for s in node.shapes], strategy))
        if node.index in run.choice and not getattr(node.prim, "pins_layout", False):
            chosen = run.choice[node.index][0]
            shown = None if isinstance(chosen, Layout) else _splits_of(chosen)
            plan.decisions.append((node.prim.name, shown, node.index in graph.fixed))
    decided = sum(1 for node in graph.nodes if node.index in run.choice and node.index not in graph.fixed)
    log.info("rank %d: sharding propagation decided %d of %d ops over %d devices", ex._global_rank(), decided,
             len(graph.nodes), n)
    return plan


# ------------------------------------------------------------------------ where plans apply
def check_search_mode() -> None:
    """auto_parallel runs sharding propagation; MindSpore's other search modes are refused."""
    mode = context.get_auto_parallel_context("search_mode")
    if not SEARCH_MODES.get(mode) and not context.get_auto_parallel_context("sharding_propagation"):
        supported = [m for m, ok in SEARCH_MODES.items() if ok]
        raise RuntimeError(f"Auto-parallel strategy searching mode {mode!r} is not supported by distinfer; set "
                           f"search_mode to one of {supported} (strategies given with .shard(), Cell.shard or "
                           f"ms.shard are propagated to the other ops), or use parallel_mode='semi_auto_parallel'")


def _boundary(owner, region) -> bool:
    """Does a call of ``owner`` (a Cell or a shard region's function) plan its own graph?"""
    if ex._State.tracer is not None or ex._State.plan is not None:
        return False  # inside a graph being traced or followed
    mode = context.parallel_mode()
    if mode == context.ParallelMode.AUTO_PARALLEL:
        check_search_mode()
        return getattr(owner, "_plan_boundary", True)
    return mode == context.ParallelMode.SEMI_AUTO_PARALLEL and region is not None


_PLANS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_LAST: "weakref.WeakKeyDictionary[Any, Plan]" = weakref.WeakKeyDictionary()


def last_plan(owner) -> Plan | None:
    """The plan the last planned call of ``owner`` (a Cell or shard function) followed."""
    return _LAST.get(owner)


def _signature(args: Sequence, kwargs: dict) -> tuple:
    def one(a):
        if isinstance(a, Tensor):
            return ("tensor", a.global_shape, a.dtype, a.spec)
        if isinstance(a, (tuple, list)):
            return (type(a).__name__,) + tuple(one(x) for x in a)
        try:
            hash(a)
            return ("value", a)
        except TypeError:
            return ("object", id(a))

    loaded = id(ex._State.loaded) if ex._State.loaded else None  # which strategy file's strategies apply
    return (context.setting("device_num"), context.setting("pipeline_stages"), loaded,
            tuple(one(a) for a in args), tuple(sorted((k, one(v)) for k, v in kwargs.items())))


def _shape_only(a, tracer: Tracer):
    """``a`` as the tracer sees it: Tensors become shape-only graph inputs (Parameters stay)."""
    if isinstance(a, Parameter):
        return a
    if isinstance(a, Tensor):
        t = Tensor._make(None, a.global_shape, a.spec, a.dtype)
        tracer.add_input(t)
        return t
    if isinstance(a, (tuple, list)):
        return type(a)(_shape_only(x, tracer) for x in a)
    return a


def trace(run: Callable, args: Sequence, kwargs: dict) -> Tracer:
    """Run ``run(*args, **kwargs)`` for shapes only and return what it called."""
    tracer = Tracer()
    shaped = [_shape_only(a, tracer) for a in args]
    shaped_kw = {k: _shape_only(v, tracer) for k, v in kwargs.items()}
    with ex.tracing(tracer):
        run(*shaped, **shaped_kw)
    return tracer


def planned_call(owner, run: Callable, args: Sequence, kwargs: dict, everything: bool | None = None) -> Any:
    """Call ``run(*args, **kwargs)`` following a plan propagated for ``owner``'s graph on these
    inputs (traced and propagated on first use, then kept per input signature).

    ``everything`` (default: in auto_parallel) decides every unconfigured op; otherwise only
    those inside shard regions. This is the entry point for wrappers (``AutoParallel``) too.
    """
    if everything is None:
        everything = context.parallel_mode() == context.ParallelMode.AUTO_PARALLEL
    if everything:  # a compiled graph's data inputs follow the dataset strategy (Model's already do)
        n = ex.stage_devices()
        args = distribute_inputs(list(args), n)
        kwargs = dict(zip(kwargs, distribute_inputs(list(kwargs.values()), n)))
    plans = _PLANS.setdefault(owner, {})
    key = (_signature(args, kwargs), everything)
    plan = plans.get(key)
    if plan is None:
        n = ex.stage_devices()
        plan = plans[key] = propagate(trace(run, args, kwargs), n, everything)
    _LAST[owner] = plan
    with plan.following():
        return run(*args, **kwargs)


def call_cell(cell, inputs: tuple, kwargs: dict) -> Any:
    """``cell(*inputs, **kwargs)`` in (semi-)auto parallel: through its shard region, if it has
    one, and under a propagated plan when the call is a graph of its own."""
    region = cell._shard_region if context.is_sharded_mode() else None
    body = cell._call if region is None else (lambda *a, **kw: region.run(cell._call, a, kw))
    if _boundary(cell, region):
        return planned_call(cell, body, inputs, kwargs)
    return body(*inputs, **kwargs)
