"""Redistributions lowered to MindSpore's collectives (exporter/collectives.py), run in a simulated world.

Every rank's steps are executed in lock step with numpy (an AllGather concatenates the group's
blocks, an AlltoAll swaps chunks, Send/Receive move the plan's pieces) and the result must be
each rank's destination block, for random pairs of layouts over 2, 4 and 8 ranks.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distinfer.exporter.collectives import (AllToAll, Exchange, Gather, Slice, comm_attrs, group_name, lower,
                                            rank_list_name)
from distinfer.layout import Layout
from distinfer.plan import make_plan
from test_layout import tensor_maps

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def device_matrices(draw, n: int):
    """A device matrix with ``n`` devices (size-1 axes allowed)."""
    dev, rest = [], n
    while rest > 1:
        f = draw(st.sampled_from([d for d in (2, 4) if rest % d == 0]))
        dev.append(f)
        rest //= f
    if draw(st.booleans()):
        dev.insert(draw(st.integers(0, len(dev))), 1)
    return dev or [1]


@st.composite
def layout_of(draw, n: int, shape: tuple[int, ...], opt: bool = False):
    dev = draw(device_matrices(n))
    tm = draw(tensor_maps(len(dev), len(shape)))
    lay = Layout(dev, tm, shape)
    if opt and shape and lay.num_devices // math.prod(lay.splits) > 1 and draw(st.booleans()):
        with_opt = Layout(dev, tm, shape, -1)
        if with_opt.mp_shape[0] % with_opt.opt_group_size == 0:
            return with_opt
    return lay


@st.composite
def pairs(draw):
    n = draw(st.sampled_from([2, 4, 8]))
    ndim = draw(st.integers(1, 3))
    shape = tuple(8 * draw(st.integers(1, 2)) for _ in range(ndim))
    return draw(layout_of(n, shape, opt=True)), draw(layout_of(n, shape))


# ------------------------------------------------------------------------- simulation
def simulate(src: Layout, dst: Layout) -> tuple[list[np.ndarray], list[list]]:
    """Run every rank's steps in lock step; return the final blocks and the steps."""
    n = src.num_devices
    full = np.arange(math.prod(src.shape), dtype=np.int64).reshape(src.shape)
    steps = [lower(src, dst, r) for r in range(n)]
    assert len({len(s) for s in steps}) == 1, steps
    values = [np.array(full[src.block(r)]) for r in range(n)]
    for i in range(len(steps[0])):
        kinds = {type(s[i]) for s in steps}
        assert len(kinds) == 1, [s[i] for s in steps]
        values = [_run(steps, values, i, r) for r in range(n)]
    return values, steps


def _run(steps, values, i: int, r: int) -> np.ndarray:
    s = steps[r][i]
    if isinstance(s, Gather):
        assert all(steps[m][i] == s for m in s.group), "a group's members disagree on the collective"
        return np.concatenate([values[m] for m in s.group], axis=s.dim)
    if isinstance(s, AllToAll):
        assert all(steps[m][i] == s for m in s.group)
        k, me = len(s.group), s.group.index(r)
        return np.concatenate([np.split(values[m], k, axis=s.split_dim)[me] for m in s.group], axis=s.concat_dim)
    if isinstance(s, Slice):
        return values[r][tuple(slice(b, e) for b, e in zip(s.begin, s.end))]
    assert isinstance(s, Exchange)

    def piece(cell):
        if cell[0] == "local":
            return values[r][tuple(slice(b, e) for b, e in zip(cell[1], cell[2]))]
        _, src, shape, tag = cell
        (dst, begin, end, _), = [x for x in steps[src][i].sends if x[0] == r and x[3] == tag]
        out = values[src][tuple(slice(b, e) for b, e in zip(begin, end))]
        assert out.shape == tuple(shape)
        return out

    grid = np.empty(s.cells.shape, dtype=object)
    for at, cell in np.ndenumerate(s.cells):
        grid[at] = piece(cell)
    return np.block(grid.tolist())


def _check(src: Layout, dst: Layout) -> list[list]:
    values, steps = simulate(src, dst)
    full = np.arange(math.prod(src.shape), dtype=np.int64).reshape(src.shape)
    for r, v in enumerate(values):
        np.testing.assert_array_equal(v, full[dst.block(r)], err_msg=f"rank {r}: {steps[r]}")
    return steps


@SETTINGS
@given(pairs())
def test_any_redistribution_reaches_the_destination_blocks(pair):
    _check(*pair)


# ------------------------------------------------------------------------- chosen steps
def test_local_slice_moves_nothing():
    steps = _check(Layout((4,), (-1, -1), (8, 4)), Layout((4,), (0, -1), (8, 4)))
    assert steps[1] == [Slice((2, 0), (4, 4))]


def test_seed_network_redistributions():
    """The three of the 8-rank seed export: batch rows 8 -> 2 ways, MatMul columns back to rows,
    rows to the (2, 2) split of layer3."""
    x8 = Layout((8,), (0, -1), (16, 784))
    steps = _check(x8, Layout((2, 1, 2, 2), (3, 2), (16, 784)))
    assert steps[2] == [Gather(0, (0, 1, 2, 3))] and steps[5] == [Gather(0, (4, 5, 6, 7))]  # not all 8
    steps = _check(Layout((2, 1, 2, 2), (3, 1), (16, 512)), Layout((8, 1), (1, -1), (16, 512)))
    assert [type(s) for s in steps[2]] == [Gather, Slice] and steps[2][0] == Gather(1, (0, 2))
    _check(Layout((8, 1), (1, -1), (16, 512)), Layout((2, 2, 1, 2), (3, 2), (16, 512)))


def test_swap_of_split_dims_is_one_alltoall():
    steps = _check(Layout((2, 2), (1, -1), (8, 8)), Layout((2, 2), (-1, 1), (8, 8)))
    assert steps[3] == [AllToAll(split_dim=1, concat_dim=0, group=(1, 3))]


def test_optimizer_shard_is_gathered_with_its_group():
    src = Layout((2, 2), (1, -1), (8, 4), opt_shard_size=-1)  # rows of a block split again over its replicas
    steps = _check(src, Layout((2, 2), (1, -1), (8, 4)))
    assert steps[0] == [Gather(0, (0, 1))] and steps[3] == [Gather(0, (2, 3))]
    steps = _check(src, Layout((2, 2), (-1, -1), (8, 4)))
    assert steps[0] == [Gather(0, (0, 1, 2, 3))]  # the four pieces are in rank order: one collective


def test_inner_axis_first_falls_back_to_send_receive():
    """A dim split over two axes with the inner one outermost: rank order is not block order."""
    src = Layout((2, 2), ((0, 1), -1), (8, 4))
    assert [src.box(r)[0] for r in range(4)] == [(0, 2), (4, 6), (2, 4), (6, 8)]
    steps = _check(src, Layout((4,), (-1, -1), (8, 4)))
    ex = steps[0][0]
    assert isinstance(ex, Exchange) and len(steps[0]) == 1
    assert sorted(d for d, *_ in ex.sends) == [1, 2, 3]
    assert [c[0] for c in ex.cells.flat] == ["local", "recv", "recv", "recv"]
    plan = make_plan(src, Layout((4,), (-1, -1), (8, 4)))
    assert {c[3] for c in ex.cells.flat if c[0] == "recv"} <= set(range(len(plan.pieces)))


# ----------------------------------------------------------------------------- naming
@pytest.mark.parametrize("ranks, hashed", [
    ((0, 1, 2, 3), 6301172352641561019), ((0, 2), 5208665662337742843), ((3, 1), 4190060298023907007),
    (tuple(range(8)), 12158923167718251343), ((4, 6), 5435772415009061329)])
def test_group_names_are_mindsporess(ranks, hashed):
    """Golden values printed by ``std::hash<std::string>`` of g++ 12 / libstdc++ (what MindSpore hashes with)."""
    assert group_name(ranks) == f"{len(ranks)}-{hashed}"


def test_comm_attributes_follow_mindspore():
    assert comm_attrs("AllGather", (0, 1)) == {"group": group_name((0, 1)), "group_ranks": "0-1", "rank_size": 2,
                                               "fusion": 0, "no_eliminate": True, "mean_flag": False}
    assert comm_attrs("AllReduce", (4, 6), op="sum") == {"group": group_name((4, 6)), "group_ranks": "4-6",
                                                         "fusion": 0, "op": "sum", "no_eliminate": True, "index": 0}
    assert rank_list_name([7, 5]) == "5-7"
