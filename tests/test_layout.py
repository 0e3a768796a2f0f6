"""Property tests for the layout algebra (``Layout.boxes``) and the planner (``make_plan``/``assemble``).

Random device matrices, tensor maps (plain and nested), shapes and optimizer shards; the oracle
for blocks is an independent restatement of spec Appendix A written here in plain Python.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from distinfer.errors import LayoutError, StrategyError
from distinfer.layout import Layout, replicated
from distinfer.plan import NearestCoords, PreferSelf, assemble, extract, make_plan

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ spec Appendix A oracle
def _coord(rank: int, dev: list[int]) -> list[int]:
    """Digits of ``rank % prod(dev)`` in the mixed radix ``dev``, most significant first."""
    local = rank % math.prod(dev)
    out = [0] * len(dev)
    for k in range(len(dev) - 1, -1, -1):
        out[k] = local % dev[k]
        local //= dev[k]
    return out


def _entry_values(entry) -> list[int]:
    vals = list(entry) if isinstance(entry, tuple) else [entry]
    return [v for v in vals if v != -1]


def spec_mp_block(dev: list[int], tm: list, shape: list[int], rank: int) -> list[tuple[int, int]]:
    """Appendix A ``block(rank)``; a nested entry splits over its axes, the first listed outermost."""
    c = _coord(rank, dev)
    out = []
    for d, entry in enumerate(tm):
        split, idx = 1, 0
        for v in _entry_values(entry):
            axis = len(dev) - 1 - v
            split *= dev[axis]
            idx = idx * dev[axis] + c[axis]
        size = shape[d] // split
        out.append((idx * size, (idx + 1) * size))
    return out


def spec_block(dev: list[int], tm: list, shape: list[int], rank: int, opt_size: int) -> list[tuple[int, int]]:
    """Appendix A block including the optimizer shard of spec §4.6."""
    mp = spec_mp_block(dev, tm, shape, rank)
    if not opt_size or not shape:
        return mp
    n = math.prod(dev)
    splits = math.prod((b - a) and s // (b - a) for (a, b), s in zip(mp, shape))
    size = n // splits if opt_size == -1 else min(opt_size, n // splits)
    if size <= 1:
        return mp
    group = sorted(r for r in range(n) if spec_mp_block(dev, tm, shape, r) == mp)
    start = (group.index(rank % n) // size) * size
    sub = group[start:start + size]
    k = sub.index(rank % n)
    piece = (mp[0][1] - mp[0][0]) // size
    return [(mp[0][0] + k * piece, mp[0][0] + (k + 1) * piece)] + mp[1:]


# --------------------------------------------------------------------------- generators
@st.composite
def dev_and_map(draw, ndim: int | None = None, max_axes: int = 3):
    dev = draw(st.lists(st.sampled_from([1, 2, 2, 3, 4]), min_size=1, max_size=max_axes))
    ndim = draw(st.integers(0, 3)) if ndim is None else ndim
    return dev, draw(tensor_maps(len(dev), ndim))


@st.composite
def tensor_maps(draw, axes: int, ndim: int):
    """A tensor map of ``ndim`` entries over ``axes`` device axes: each entry unsplit, one axis, or two."""
    free = list(range(axes))
    draw(st.permutations(free))
    tm: list = []
    for _ in range(ndim):
        kind = draw(st.sampled_from(["none", "one", "one", "nested"]))
        if kind == "none" or not free:
            tm.append(-1)
        elif kind == "one" or len(free) < 2:
            tm.append(free.pop(draw(st.integers(0, len(free) - 1))))
        else:
            a = free.pop(draw(st.integers(0, len(free) - 1)))
            b = free.pop(draw(st.integers(0, len(free) - 1)))
            tm.append((a, b))
    return tm


def _splits(dev, tm) -> list[int]:
    return [math.prod(dev[len(dev) - 1 - v] for v in _entry_values(e)) for e in tm]


@st.composite
def layouts(draw, ndim: int | None = None, opt: bool = True, shape=None):
    dev, tm = draw(dev_and_map(ndim=ndim if shape is None else len(shape)))
    splits = _splits(dev, tm)
    fixed = shape is not None
    if shape is None:
        shape = [s * draw(st.integers(1, 3)) for s in splits]
    assume(all(n % s == 0 for n, s in zip(shape, splits)))
    opt_size = 0
    if opt and shape and draw(st.booleans()):
        replicas = math.prod(dev) // math.prod(splits)
        opt_size = draw(st.sampled_from([-1] + [k for k in range(2, replicas + 1) if replicas % k == 0] or [-1]))
        k = replicas if opt_size == -1 else min(opt_size, replicas)
        if (shape[0] // splits[0]) % k:
            assume(not fixed)
            shape = [shape[0] * k] + list(shape[1:])
    return Layout(tuple(dev), tuple(tm), tuple(shape), opt_size)


@st.composite
def layout_pairs(draw):
    """Two layouts of one shape (device counts may differ, as in checkpoint resharding)."""
    ndim = draw(st.integers(1, 3))
    (d1, t1), (d2, t2) = draw(dev_and_map(ndim=ndim)), draw(dev_and_map(ndim=ndim))
    s1, s2 = _splits(d1, t1), _splits(d2, t2)
    shape = tuple(math.lcm(a, b) * draw(st.integers(1, 2)) for a, b in zip(s1, s2))
    return Layout(tuple(d1), tuple(t1), shape), Layout(tuple(d2), tuple(t2), shape)


def _full(shape) -> np.ndarray:
    return np.arange(math.prod(shape), dtype=np.int64).reshape(shape)


def _blocks(lay: Layout, arr: np.ndarray) -> list[np.ndarray]:
    return [np.array(arr[lay.block(r)]) for r in range(lay.num_devices)]  # (keeps 0-d blocks 0-d)


# ------------------------------------------------------------------------------ properties
@SETTINGS
@given(layouts())
def test_boxes_follow_spec_appendix_a(lay: Layout) -> None:
    dev, tm, shape = list(lay.dev_matrix), list(lay.tensor_map), list(lay.shape)
    for r in range(lay.num_devices):
        assert [tuple(b) for b in lay.box(r)] == spec_block(dev, tm, shape, r, lay.opt_shard_size), r


@SETTINGS
@given(layouts(opt=False))
def test_slice_then_merge_is_identity(lay: Layout) -> None:
    arr = _full(lay.shape)
    blocks = _blocks(lay, arr)
    merged = np.full(lay.shape, -1, dtype=np.int64)
    for r, (start_stop) in enumerate(lay.boxes):
        merged[tuple(slice(a, b) for a, b in start_stop)] = blocks[r]
    assert np.array_equal(merged, arr)
    # The same through the planner: every block assembled into one full copy.
    plan = make_plan(lay, replicated(lay.shape, 1))
    whole = assemble(plan, 0, lambda p: extract(blocks[p.src], lay, p.src, p.box), dtype=arr.dtype)
    assert np.array_equal(whole, arr)


@SETTINGS
@given(layouts())
def test_blocks_tile_the_tensor_once_per_replica(lay: Layout) -> None:
    """Distinct blocks cover every element exactly once; every rank's block has the local shape."""
    blocks, holders = lay.unique_blocks
    count = np.zeros(lay.shape, dtype=np.int64)
    for box in blocks:
        count[tuple(slice(a, b) for a, b in box)] += 1
    assert (count == 1).all()
    assert sum(len(h) for h in holders) == lay.num_devices
    assert all(tuple(b - a for a, b in lay.box(r)) == lay.local_shape for r in range(lay.num_devices))


@SETTINGS
@given(layout_pairs())
def test_any_layout_to_any_layout_matches_slicing(pair: tuple[Layout, Layout]) -> None:
    src, dst = pair
    arr = _full(src.shape)
    blocks = _blocks(src, arr)
    plan = make_plan(src, dst)
    for r in range(dst.num_devices):
        got = assemble(plan, r, lambda p: extract(blocks[p.src], src, p.src, p.box), dtype=arr.dtype)
        assert np.array_equal(got, dst.slice(arr, r)), r


@SETTINGS
@given(layouts(), st.data())
def test_layout_with_opt_shard_to_any(src: Layout, data) -> None:
    dst = data.draw(layouts(shape=src.shape))
    assume(dst.ndim == src.ndim)
    arr = _full(src.shape)
    blocks = _blocks(src, arr)
    plan = make_plan(src, dst)
    for r in range(dst.num_devices):
        got = assemble(plan, r, lambda p: extract(blocks[p.src], src, p.src, p.box), dtype=arr.dtype)
        assert np.array_equal(got, dst.slice(arr, r))


@SETTINGS
@given(layouts())
def test_normalisation_preserves_blocks(lay: Layout) -> None:
    norm = lay.normalized()
    assert norm.same_blocks(lay)
    assert norm.num_devices == lay.num_devices
    assert 1 not in norm.dev_matrix or norm.dev_matrix == (1,)
    assert norm.normalized() == norm


def _overlap(a, b) -> int:
    return math.prod(max(0, min(y, q) - max(x, p)) for (x, y), (p, q) in zip(a, b))


@SETTINGS
@given(layout_pairs())
def test_plan_moves_the_minimum(pair: tuple[Layout, Layout]) -> None:
    """Pieces tile each destination block; none crosses ranks for data the destination holds."""
    src, dst = pair
    plan = make_plan(src, dst)
    same_space = src.num_devices == dst.num_devices
    minimum = 0
    for r in range(dst.num_devices):
        mine = dst.box(r)
        pieces = plan.pieces_for(r)
        assert sum(p.size for p in pieces) == math.prod(b - a for a, b in mine)
        held = src.box(r) if same_space else None
        for p in pieces:
            assert _overlap(p.box, mine) == p.size  # inside the destination block
            assert _overlap(p.box, src.box(p.src)) == p.size  # the source really holds it
            if held is not None and p.src != r:
                assert _overlap(p.box, held) == 0, (r, p)
        if same_space:
            minimum += math.prod(b - a for a, b in mine) - _overlap(mine, src.box(r))
    if same_space:
        assert plan.moved_elements() == minimum


def _coords(rank: int, dev) -> list[int]:
    return _coord(rank, list(dev))


@SETTINGS
@given(layout_pairs(), st.data())
def test_replica_policies_pick_a_holder_by_their_rule(pair: tuple[Layout, Layout], data) -> None:
    """Every policy's plan assembles the same blocks; each piece comes from a rank the policy allows,
    chosen by its rule (PreferSelf: the destination itself, else ``holders[dst % len]``;
    NearestCoords: most coordinates equal to the hint's, lowest rank on ties, among available ranks)."""
    src, dst = pair
    arr = _full(src.shape)
    blocks = _blocks(src, arr)
    available = frozenset(data.draw(st.sets(st.integers(0, src.num_devices - 1), min_size=1)))
    hint = data.draw(st.integers(0, src.num_devices - 1))
    for policy in (PreferSelf(), NearestCoords(), NearestCoords(hint=hint), NearestCoords(available=available)):
        try:
            plan = make_plan(src, dst, policy)
        except LayoutError:  # some block has no available holder
            assert isinstance(policy, NearestCoords) and policy.available is not None
            continue
        for r in range(dst.num_devices):
            got = assemble(plan, r, lambda p: extract(blocks[p.src], src, p.src, p.box), dtype=arr.dtype)
            assert np.array_equal(got, dst.slice(arr, r))
            for p in plan.pieces_for(r):
                holders = [q for q in range(src.num_devices) if _overlap(p.box, src.box(q)) == p.size
                           and src.box(q) == src.box(p.src)]
                if isinstance(policy, PreferSelf):
                    want = r if r in holders else holders[r % len(holders)]
                else:
                    allowed = [q for q in holders if policy.available is None or q in policy.available]
                    me = _coords(r if policy.hint is None else policy.hint, src.dev_matrix)
                    want = max(allowed, key=lambda q: (sum(a == b for a, b in zip(_coords(q, src.dev_matrix), me)), -q))
                assert p.src == want, (policy, r, p, holders)


def test_a_block_no_given_rank_holds_names_its_holders() -> None:
    src = Layout((2,), (0, -1), (4, 2))
    with pytest.raises(LayoutError, match=r"held only by source ranks \[1\], none of which was given"):
        make_plan(src, replicated((4, 2), 1), NearestCoords(available=frozenset({0})))


# ------------------------------------------------------------------ other spellings of a layout
@SETTINGS
@given(layouts())
def test_constructors_agree_with_the_tensor_map(lay: Layout) -> None:
    """from_axes (positions from the left), from_local_shape (a rank's block) and map_splits all
    describe the layout the tensor map gives."""
    m = len(lay.dev_matrix)
    positions = [tuple(m - 1 - v for v in e) if isinstance(e, tuple) else (-1 if e == -1 else m - 1 - e)
                 for e in lay.tensor_map]
    assert Layout.from_axes(lay.dev_matrix, positions, lay.shape, lay.opt_shard_size) == lay
    assert Layout.map_splits(lay.dev_matrix, lay.tensor_map) == lay.splits
    back = Layout.from_local_shape(lay.dev_matrix, lay.tensor_map, lay.local_shape, lay.opt_shard_size)
    assert back.shape == lay.shape and back.same_blocks(lay)
    for d in range(lay.ndim):
        assert math.prod(lay.dev_matrix[k] for k in lay.dim_axes(d)) == lay.splits[d]


@SETTINGS
@given(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=1, max_size=4), st.data())
def test_groups_partition_ranks_along_axes(dev: list[int], data) -> None:
    axes = data.draw(st.sets(st.integers(0, len(dev) - 1)))
    lay = Layout(tuple(dev), (), ())
    groups = lay.groups(tuple(axes))
    assert sorted(r for g in groups for r in g) == list(range(math.prod(dev)))
    for g in groups:
        assert list(g) == sorted(g) and len(g) == math.prod(dev[k] for k in axes)
        for r in g:  # members differ only on ``axes``
            assert all(a == b for k, (a, b) in enumerate(zip(_coords(r, dev), _coords(g[0], dev))) if k not in axes)


def test_from_splits_is_the_dataset_strategy_rule() -> None:
    assert Layout.from_splits((2, 1), (8, 3), 8) == Layout((2, 1, 4), (2, -1), (8, 3))
    assert Layout.from_splits((4,), (8,), 4) == Layout((4,), (0,), (8,))
    with pytest.raises(LayoutError, match="does not divide 8"):
        Layout.from_splits((3, 1), (9, 3), 8)


@pytest.mark.parametrize("bad,fragment", [
    (dict(dev_matrix=(2, 2), tensor_map=(2, -1), shape=(4, 4)),     # axis outside the matrix
     "tensor_map [2, -1] entry 2 for dim 0 is outside device matrix [2, 2]"),
    (dict(dev_matrix=(2, 2), tensor_map=(0, 0), shape=(4, 4)),      # axis used twice
     "tensor_map [0, 0] uses a device axis twice (device matrix [2, 2], shape (4, 4))"),
    (dict(dev_matrix=(4,), tensor_map=(0,), shape=(6,)),            # indivisible
     "axis 0 of shape (6,) is split 4 ways, but 6 is not divisible by 4"),
    (dict(dev_matrix=(2,), tensor_map=(0,), shape=(4, 4)),          # map rank != shape rank
     "tensor_map [0] has 1 entries but the tensor of shape (4, 4) has 2 dims"),
])
def test_bad_layouts_raise_layout_error(bad: dict, fragment: str) -> None:
    with pytest.raises(LayoutError) as info:
        Layout(**bad)
    assert fragment in str(info.value), str(info.value)


def test_spec_seed_layer_slices() -> None:
    """Spec Appendix A, seed net on 8 ranks."""
    w1 = Layout((2, 2, 2), (-1, 1), (784, 512))
    w3 = Layout((2, 2, 2), (1, -1), (512, 10))
    for r in range(8):
        col = 256 * ((r // 2) % 2)
        assert w1.box(r) == ((0, 784), (col, col + 256))
        assert w3.box(r) == ((col, col + 256), (0, 10))


def test_spec_opt_shard_example() -> None:
    """Spec §4.6 [C]: layer3.weight on dev [2, 2], map [0, -1], step 2, size -1."""
    lay = Layout((2, 2), (0, -1), (512, 10), opt_shard_size=-1)
    assert [lay.box(r)[0] for r in range(4)] == [(0, 128), (256, 384), (128, 256), (384, 512)]
    assert lay.opt_shard_step() == 2
    w2 = Layout((4,), (-1, -1), (512, 512), opt_shard_size=-1)
    assert [lay_box[0] for lay_box in (w2.box(r) for r in range(4))] == [(128 * r, 128 * (r + 1)) for r in range(4)]
    assert w2.opt_shard_step() == 1


# ------------------------------------------------------------------ ms.Layout (strategies by named axes)
def test_user_layout_names_axes_from_the_right():
    import distinfer as ms

    layout = ms.Layout((2, 2, 4), ("dp", "sp", "mp"))
    d = layout(("dp", "sp"), "None", "mp").to_dict()
    assert d["tensor_map"] == ((2, 1), -1, 0) and d["device_matrix"] == (2, 2, 4) and d["rank_list"] == list(range(16))
    assert layout(("dp", "sp"), "None", "mp").splits() == (4, 1, 4)
    block = layout("mp", "dp").to_layout((8, 6))
    assert block.dev_matrix == (2, 2, 4) and block.tensor_map == (0, 2) and block.local_shape == (2, 3)
    assert ms.parallel.Layout is ms.Layout


@pytest.mark.parametrize("make,error,match", [
    (lambda L: L((2, 2), ("dp",)), TypeError, "one per device axis"),
    (lambda L: L((2, 2), ("dp", "dp")), ValueError, "distinct"),
    (lambda L: L((2, 2), ("dp", "mp"))("dp", "dp"), ValueError, "more than one dim"),
    (lambda L: L((2, 2), ("dp", "mp"))("tp", "None"), ValueError, "'tp' is not one of"),
    (lambda L: L((2, 2), ("dp", "mp")).to_dict(), ValueError, "tensor_map is not set"),
    (lambda L: L([2, 2], ("dp", "mp")), TypeError, "device_matrix"),
])
def test_user_layout_errors(make, error, match):
    import distinfer as ms

    with pytest.raises(error, match=match):
        make(ms.Layout)


def test_shard_takes_layouts_or_tuples_not_both():
    import distinfer as ms

    layout = ms.Layout((2, 4), ("dp", "mp"))
    mm = ms.ops.MatMul().shard((layout("dp", "mp"), layout("mp", "None")))
    assert mm.in_strategy == ((2, 4), (4, 1)) and len(mm.in_layouts) == 2
    with pytest.raises(StrategyError, match="mixes Layouts and split tuples"):
        ms.ops.MatMul().shard((layout("dp", "mp"), (4, 1)))
    assert ms.ops.MatMul().shard(((2, 1), (1, 1))).in_layouts is None


def test_dataset_strategy_layouts_feed_inputs():
    import numpy as np

    import distinfer as ms
    from distinfer.parallel.inputs import distribute_inputs

    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", dataset_strategy=(ms.Layout((1,), ("dp",))("dp", "None"),))
    try:
        (t,) = distribute_inputs([ms.Tensor(np.ones((4, 3), np.float32))], 1)
        assert t.shape == (4, 3) and t.layout.dev_matrix == (1,)
    finally:
        ms.reset_auto_parallel_context()
    with pytest.raises(ValueError, match="tensor_map is not set"):
        ms.set_auto_parallel_context(dataset_strategy=(ms.Layout((1,), ("dp",)),))
    ms.reset_auto_parallel_context()
