"""Sharding propagation, Cell.shard / ms.shard, interleaved layouts and shared parameters, in one
process: strategies are checked on layout-only runs over simulated device counts (no MPI), and
arranged op layouts compute what numpy computes on a simulated world of ranks.

Expected strategies come from MindSpore: its sharding propagation tutorial (the FFN sample's IR),
its split-technique guide (RowParallelLinear), and its own propagation tests (ported with ``ops``
in place of ``mint``). The distributed runs (predictions against numpy at 1/2/4/8 ranks, the
redistributions counted) are in ``tests/mpi/propagation_checks.py``.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

import distinfer as ms
from distinfer import Parameter, Tensor, nn, ops
from distinfer.io import read_strategy
from distinfer.layout import DistSpec, Layout
from distinfer.ops.primitive import Arranged, apply_rule
from distinfer.parallel import propagation
from propagation_nets import FFN, gpt_key_ops_only
from seed_net import Dense
from simworld import forward


@pytest.fixture(autouse=True)
def _reset():
    ms.reset_auto_parallel_context()
    yield
    ms.reset_auto_parallel_context()


def _auto(n: int = 8, **kw) -> None:
    ms.set_auto_parallel_context(parallel_mode="auto_parallel", search_mode="sharding_propagation", device_num=n,
                                 **({"dataset_strategy": "full_batch"} | kw))


def _decided(net, *inputs) -> list:
    """``(op, strategy)`` of the ops propagation decided, in call order, after a layout run."""
    ms.Model(net).infer_predict_layout(*inputs)
    return [(name, s) for name, s, configured in propagation.last_plan(net).decisions if not configured]


def _t(*shape) -> Tensor:
    return Tensor(np.ones(shape, np.float32))


# ------------------------------------------------------------------- MindSpore's own examples
def test_tutorial_ffn_gets_mindspores_strategies():
    """The tutorial's IR at 8 devices: Add ((2, 4), (4,)), ReLU ((2, 4),), MatMul ((2, 4), (4, 1))."""
    _auto(dataset_strategy="data_parallel")
    net = FFN()
    net.dense1.matmul.shard(((2, 1), (1, 4)))
    decided = _decided(net, _t(32, 1, 28, 28))
    assert decided[:3] == [("Add", ((2, 4), (4,))), ("ReLU", ((2, 4),)), ("MatMul", ((2, 4), (4, 1)))]
    assert net.parameter_layout_dict["dense1.bias"][:2] == [[2, 4], [0]]  # the propagated Add splits the bias 4 ways


def test_row_parallel_linear_add_follows_its_matmul():
    """The split-technique guide: only the MatMul ((dp, 1), (1, tp)) is configured; Add becomes ((dp, tp), (tp,))."""
    for dp, tp in ((2, 4), (4, 2), (8, 1)):
        _auto()
        net = Dense(16, 8)
        net.matmul.shard(((dp, 1), (1, tp)))
        assert _decided(net, _t(16, 16)) == [("Add", ((dp, tp), (tp,)))]


class _WithMean(nn.Cell):
    """MindSpore's test harness: the network's output reduced to a scalar."""

    def __init__(self, network) -> None:
        super().__init__()
        self.network = network
        self.mean = ops.ReduceMean(keep_dims=False)

    def construct(self, x, y):
        return self.mean(self.network(x, y), ())


_LY = ms.Layout((4, 2), ("axis0", "axis1"))


class _Fn(nn.Cell):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def construct(self, x, y):
        return self.fn(x, y)


def _mul_abs(x, y):
    return ops.mul(ops.abs(x), y)


class _ReluReluMatmul(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.gamma = Parameter(_t(128, 96), name="gamma")
        self.beta = Parameter(_t(128, 96), name="beta")

    def construct(self, x, y):
        out = ops.matmul(ops.relu(ops.add(x, self.gamma)), ops.relu(y))
        return ops.add(out, ops.relu(self.beta))


class _Waiting(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.beta = Parameter(_t(96, 1), name="beta")
        self.alpha = Parameter(_t(128, 96), name="alpha")

    def construct(self, x, y):
        return ops.div(ops.matmul(ops.add(x, y), ops.relu(self.beta)), ops.relu(self.alpha))


class _Region(nn.Cell):
    def __init__(self, inner, in_strategy, parameter_plan) -> None:
        super().__init__()
        self.inner = inner
        self.region = ms.shard(self.inner, in_strategy=in_strategy, parameter_plan=parameter_plan)

    def construct(self, x, y):
        return self.region(x, y)


def _ms_case(name):
    """The networks of MindSpore's propagation tests, with the strategies they assert."""
    ly = _LY
    ly4 = ms.Layout((2, 2, 2, 1), ("axis0", "axis1", "axis2", "axis3"))
    ly4b = ms.Layout((2, 1, 2, 2), ("axis0", "axis1", "axis2", "axis3"))
    cases = {
        "mint_func": (lambda: _Fn(ms.shard(_mul_abs, in_strategy=((4, 2), (4, 1)))), (_t(128, 96), _t(128, 1)),
                      {"Mul": ((4, 2), (4, 1))}),
        "matmul_layout": (lambda: _Fn(ms.shard(ops.matmul, in_strategy=(ly("axis0", "axis1"), ly("axis1", "None")))),
                          (_t(128, 96), _t(96, 96)), {"MatMul": ((4, 2), (2, 1))}),
        "matmul_layout_222": (lambda: _Fn(ms.shard(ops.matmul, in_strategy=(ly4("axis3", "axis1"),
                                                                            ly4("axis1", "axis0")))),
                              (_t(128, 96), _t(96, 96)), {"MatMul": ((1, 2), (2, 2))}),
        "add_layout_222": (lambda: _Fn(ms.shard(ops.add, in_strategy=(ly4b("axis3", "axis1"), ly4b("axis3", "axis1")))),
                           (_t(96, 96), _t(96, 96)), {"Add": ((2, 1), (2, 1))}),
        "add_layout_broadcast": (lambda: _Fn(ms.shard(ops.add, in_strategy=(ly("axis0", "axis1"), ly("None", "axis1")))),
                                 (_t(128, 96), _t(1, 96)), {"Add": ((4, 2), (1, 2))}),
        "relu_relu_matmul_layout": (
            lambda: _Region(_ReluReluMatmul(), (ly("axis0", "axis1"), ly("axis1", "None")),
                            {"self.inner.gamma": ly("axis0", "axis1"), "self.inner.beta": ly("axis0", "axis1")}),
            (_t(128, 96), _t(96, 1)), {"Add": ((4, 2), (4, 2)), "MatMul": ((4, 2), (2, 1)), "Add#2": ((4, 1), (4, 2))}),
        "waiting": (lambda: _Region(_Waiting(), (ly("axis0", "axis1"), ly("axis0", "axis1")),
                                    {"self.inner.alpha": ly("axis0", "axis1")}),
                    (_t(128, 96), _t(128, 96)),
                    {"Add": ((4, 2), (4, 2)), "MatMul": ((4, 2), (2, 1)), "RealDiv": ((4, 1), (4, 2))}),
        "relu_layout_propagate_back": (
            lambda: _Fn(lambda x, y, mm=ms.shard(ops.matmul, in_strategy=(ly("axis0", "axis1"), ly("axis1", "None"))):
                        mm(x, ops.relu(y))),
            (_t(128, 96), _t(96, 96)), {"ReLU": ((2, 1),)}),
    }
    return cases[name]


@pytest.mark.parametrize("name", ["mint_func", "matmul_layout", "matmul_layout_222", "add_layout_222",
                                  "add_layout_broadcast", "relu_relu_matmul_layout", "waiting",
                                  "relu_layout_propagate_back"])
def test_mindspore_propagation_cases(name):
    """MindSpore's test_auto_parallel_sharding_propagation-style cases: the strategies it asserts."""
    _auto()
    make, inputs, want = _ms_case(name)
    decided = _decided(_WithMean(make()), *inputs)
    seen: dict[str, int] = {}
    got = {}
    for op, strategy in decided:
        seen[op] = seen.get(op, 0) + 1
        got[op if seen[op] == 1 else f"{op}#{seen[op]}"] = strategy
    for op, strategy in want.items():
        assert got.get(op) == strategy, f"{op}: propagated {got.get(op)}, MindSpore derives {strategy} ({decided})"


# ------------------------------------------------------------------------------ the rules
def test_unreached_ops_keep_the_default_strategy(tmp_path):
    """An op fed by nothing configured (here: only a parameter nobody else uses) is not decided and
    runs batch-parallel; the propagated ops appear in the strategy file like configured ones."""

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = Parameter(_t(16, 8), name="w")
            self.b = Parameter(_t(8, 8), name="b")
            self.mm = ops.MatMul().shard(((1, 2), (2, 4)))
            self.add = ops.Add()
            self.relu = ops.ReLU()

        def construct(self, x):
            return self.add(self.mm(x, self.w), self.w[0:1, :]), self.relu(self.b)

    path = str(tmp_path / "strategy.ckpt")
    _auto(strategy_ckpt_config={"save_file": path})
    net = Net()
    decided = _decided(net, _t(4, 16))
    assert ("Add", ((1, 4), (1, 4))) in decided and not any(op == "ReLU" for op, _ in decided)
    items = {k: [tuple(s) for s in v[1]] for k, v in read_strategy(path).items.items()}
    assert items["MatMul_w"] == [(1, 2), (2, 4)] and items["ReLU_b"] == [(8, 1)]


def test_a_chain_after_one_configured_op_needs_no_moves():
    """Every edge between propagated ops (and from the configured one) costs nothing to move."""
    _auto()

    class Chain(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = Parameter(_t(32, 16), name="w")
            self.mm = ops.MatMul().shard(((2, 2), (2, 2)))

        def construct(self, x):
            return ops.sigmoid(ops.mul(ops.relu(ops.add(self.mm(x, self.w), 1.0)), 2.0))

    net = Chain()
    ms.Model(net).infer_predict_layout(_t(8, 32))
    ops_seen = [op for op, _, _ in propagation.last_plan(net).decisions]
    assert ops_seen == ["MatMul", "Add", "ReLU", "Mul", "Sigmoid"]
    strategies = {s for _, s, configured in propagation.last_plan(net).decisions if not configured}
    assert strategies == {((2, 2),)}  # each keeps the MatMul's output split (the partial sum reduced once)


def test_move_cost_counts_the_planner_steps():
    rows = Layout((4,), (0, -1), (8, 8))
    partial = DistSpec(Layout((4,), (-1, -1), (8, 8)), partial=(0,))
    assert propagation.move_cost(DistSpec(rows), rows) == (0, 0)
    assert propagation.move_cost(DistSpec(rows), Layout((4,), (-1, -1), (8, 8))) == (4 * 48 * 4, 4 * 16 * 4)
    sent_rs, _ = propagation.move_cost(partial, rows)  # ReduceScatter into the rows
    sent_ar, _ = propagation.move_cost(partial, Layout((4,), (-1, -1), (8, 8)))  # AllReduce
    assert sent_ar == 2 * sent_rs > 0


@pytest.mark.parametrize("mode", ["recursive_programming", "dynamic_programming"])
def test_other_search_modes_are_refused(mode):
    ms.set_auto_parallel_context(parallel_mode="auto_parallel", search_mode=mode, device_num=8, full_batch=True)
    with pytest.raises(RuntimeError, match=f"searching mode '{mode}' is not supported by distinfer"):
        ms.Model(nn.Dense(4, 4)).infer_predict_layout(_t(8, 4))


def test_the_sharding_propagation_flag_selects_it_too():
    ms.set_auto_parallel_context(parallel_mode="auto_parallel", sharding_propagation=True, device_num=4,
                                 full_batch=True)
    net = Dense(8, 4)
    net.matmul.shard(((4, 1), (1, 1)))
    assert _decided(net, _t(8, 8)) == [("Add", ((4, 1), (1,)))]


def test_semi_auto_propagates_inside_shard_regions_only():
    """In semi_auto_parallel the ops outside a region keep their defaults; inside, they follow the boundary."""
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=8, full_batch=True)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.block = Dense(16, 16)
            self.block.shard(in_strategy=((1, 8),), parameter_plan={"self.block.weight": (8, 1)})
            self.relu = ops.ReLU()

        def construct(self, x):
            return self.relu(self.block(x))

    net = Net()
    ms.Model(net).infer_predict_layout(_t(8, 16))
    assert net.parameter_layout_dict["block.weight"][:2] == [[8], [0, -1]]
    assert propagation.last_plan(net) is None  # the network is no graph of its own here, its region is
    decisions = propagation.last_plan(net.block).decisions
    assert ("MatMul", ((1, 8), (8, 1)), False) in decisions


# ------------------------------------------------------------------------------- Cell.shard
def test_shard_argument_checks():
    ms.set_auto_parallel_context(device_num=8)
    net = Dense(4, 4)
    with pytest.raises(TypeError, match="the 'in_strategy' should be a tuple, but got list"):
        net.shard([(2, 1)])
    with pytest.raises(TypeError, match=r"should be a tuple\(tuple\(int\)\) or tuple\(mindspore.parallel.Layout\), "
                                        r"but got int"):
        net.shard((2, 1))
    with pytest.raises(TypeError, match="The tuple strategy for each dimension should be tuple"):
        net.shard(((2.0, 1),))
    with pytest.raises(TypeError, match="can only pass in consistent type for all dimensions"):
        ms.shard(ops.add, ((2, 1), _LY("axis0", "None")))
    with pytest.raises(TypeError, match="the 'out_strategy' should be None or tuple, but got list"):
        net.shard(((2, 1),), out_strategy=[(2, 1)])
    with pytest.raises(TypeError, match="the 'device' should be a string"):
        net.shard(((2, 1),), device=0)
    with pytest.raises(TypeError, match="the 'parameter_plan' should be a dict or None, but got tuple"):
        net.shard(((2, 1),), parameter_plan=(("weight", (2, 1)),))
    with pytest.raises(TypeError, match="type of fn must be mindspore.nn.Cell"):
        ms.shard(ops.add, ((2, 1), (2, 1)), parameter_plan={"w": (2, 1)})
    with pytest.raises(TypeError, match="must be str and tuple/Layout, but got str and list"):
        net.shard(((2, 1),), parameter_plan={"weight": [2, 1]})
    with pytest.raises(ValueError, match="the length of param_strategy: 1, is not equal to param_shape len: 2"):
        net.shard(((2, 1),), parameter_plan={"weight": (2,)})
    with pytest.raises(ValueError, match=r"The param_shape\[0\]: 4 cannot be divisible by param_strategy\[0\]: 3"):
        net.shard(((2, 1),), parameter_plan={"weight": (3, 1)})


def test_shard_warnings_and_one_device(caplog):
    ms.set_auto_parallel_context(device_num=8)
    net = Dense(4, 4)
    with caplog.at_level(logging.WARNING, logger="distinfer"):
        net.shard(((2, 1),), parameter_plan={"self.nope": (2, 1), "self.weight": (2, 1)})
        net.shard(((2, 1),), parameter_plan={"self.weight": (4, 1)})
    text = caplog.text
    assert "self.nope is not exist, ignored its setting." in text
    assert "'Shard' has been configured more than once" in text
    assert "The layout of parameter 'self.weight' has been set to (2, 1), current setting will be ignored." in text
    ms.set_auto_parallel_context(device_num=1)
    assert ms.shard(ops.relu, "not even checked") is ops.relu  # one device: MindSpore returns fn itself


def test_cell_shard_returns_a_function_running_the_cell():
    ms.set_auto_parallel_context(device_num=2)
    net = nn.Dense(4, 2, weight_init="ones", bias_init="zeros")
    run = net.shard(((2, 1),))
    x = Tensor(np.arange(8, dtype=np.float32).reshape(2, 4))
    np.testing.assert_array_equal(run(x).asnumpy(), net(x).asnumpy())  # stand_alone: the region has no effect
    assert [name for name, _ in net.parameters_and_names()] == ["weight", "bias"]


def test_shard_region_checks_shapes_at_run_time():
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=4, full_batch=True)
    relu = ms.shard(ops.relu, in_strategy=((4, 1, 1),))
    with ms.parallel._executor.abstract(), pytest.raises(RuntimeError, match="input dimension: 2 is not equal to "
                                                                             "in_strategy dimension: 3 at index 0"):
        relu(Tensor._make(None, (8, 4), None, ms.float32))
    odd = ms.shard(ops.relu, in_strategy=((3, 1),))
    with ms.parallel._executor.abstract(), pytest.raises(RuntimeError, match=r"\(3, 1\) requires 3 devices"):
        odd(Tensor._make(None, (9, 4), None, ms.float32))


# ----------------------------------------------------------------------- shared parameters
class _TwoUsers(nn.Cell):
    def __init__(self, op, s1, s2):
        super().__init__()
        self.op1, self.op2 = op().shard(s1), op().shard(s2)
        self.w = Parameter(_t(16, 16), name="w1")

    def construct(self, x):
        return self.op2(self.op1(x, self.w), self.w)


@pytest.mark.parametrize("op,s1,s2,ok", [
    (ops.Mul, ((16, 1), (16, 1)), ((16, 1), (16, 1)), True),
    (ops.Mul, ((16, 1), (16, 1)), ((4, 4), (4, 4)), False),
    (ops.MatMul, ((1, 2), (2, 1)), ((8, 2), (2, 1)), False),  # same split counts, other devices
])
def test_a_parameter_split_two_ways_is_refused(op, s1, s2, ok):
    """MindSpore's test_parameter_multi_users: a RuntimeError naming the parameter and both layouts."""
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=16, full_batch=True)
    model = ms.Model(_TwoUsers(op, s1, s2))
    if ok:
        model.infer_predict_layout(_t(16, 16))
        return
    with pytest.raises(RuntimeError, match=r"The parameter: w1 has multiple users, but the TensorInfo are different, "
                                           r"they are Layout\(.*\) and Layout\(.*\)"):
        model.infer_predict_layout(_t(16, 16))


def test_propagation_makes_a_shared_parameters_other_user_match():
    """Unconfigured users of a parameter laid out by a configured op take its layout (no conflict)."""
    _auto(n=4)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = Parameter(_t(8, 8), name="w")
            self.mm = ops.MatMul().shard(((1, 1), (1, 4)))

        def construct(self, x):
            return ops.add(self.mm(x, self.w), ops.relu(self.w))

    net = Net()
    assert ("ReLU", ((1, 4),)) in _decided(net, _t(8, 8))


# ------------------------------------------------------------------- interleaved_parallel
def test_interleaved_layouts_are_their_block_layouts():
    inter = ms.Layout((2, 2, 2), ("dp", "sp", "interleaved_parallel"))
    plain = ms.Layout((2, 2), ("dp", "sp"))
    x = inter(("dp", "interleaved_parallel"), "sp")
    assert x.to_dict()["interleaved_parallel"] and x.to_dict()["tensor_map"] == ((2, 0), 1)
    assert x.to_layout((8, 6)) == plain("dp", "sp").to_layout((8, 6)) and x.splits() == (2, 2)
    whole = inter("interleaved_parallel", "dp")
    assert whole.to_layout((8, 6)).splits == (1, 2)
    with pytest.raises(NotImplementedError, match="pieces of that dim are not adjacent"):
        inter(("interleaved_parallel", "dp"), "sp").to_layout((8, 6))
    with pytest.raises(ValueError, match="it should be at the last dim of alias_name"):
        ms.Layout((2, 2), ("interleaved_parallel", "dp"))


def test_an_op_sharded_with_interleaved_layouts_lays_out_as_without():
    def layouts(layout):
        ms.reset_auto_parallel_context()
        ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=4, full_batch=True)
        net = Dense(8, 8)
        net.matmul.shard((layout(("dp", *layout.extra), "None"), layout("None", "sp")))
        return ms.Model(net).infer_predict_layout(_t(8, 8))

    inter = ms.Layout((2, 2, 2), ("dp", "sp", "interleaved_parallel"))
    inter.extra = ("interleaved_parallel",)
    plain = ms.Layout((2, 2), ("dp", "sp"))
    plain.extra = ()
    assert layouts(inter) == layouts(plain)


# ------------------------------------------------------------------------ arranged layouts
@pytest.mark.parametrize("prim,shapes,strategy,dev,axes", [
    (ops.MatMul(), [(8, 12), (12, 4)], ((1, 2), (2, 2)), (2, 2, 2, 1), ((3,), (1,), (0,), (2,))),
    (ops.MatMul(transpose_b=True), [(8, 12), (4, 12)], ((2, 2), (2, 2)), (2, 2, 2), ((2,), (0,), (1,))),
    (ops.Add(), [(8, 6), (1, 6)], ((2, 1), (1, 1)), (2, 2, 2), ((2,), (), (0, 1))),
    (ops.Softmax(), [(8, 6)], ((4, 1),), (2, 2, 2), ((2, 0), (), (1,))),
    (ops.BatchMatMul(), [(4, 8, 6), (4, 6, 2)], ((2, 2, 2), (2, 2, 1)), (2, 2, 2), ((1,), (2,), (0,), ())),
])
def test_an_arranged_op_computes_what_numpy_does(prim, shapes, strategy, dev, axes):
    """The same op on the same blocks, on other ranks: assembled outputs equal numpy's."""
    rng = np.random.RandomState(0)
    args = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    plain = forward(prim, args, strategy, int(np.prod(dev)))
    arranged = forward(prim, args, Arranged(strategy, dev, axes), int(np.prod(dev)))
    assert arranged.lay.dev_matrix == dev
    assert any(not a.same_blocks(b) for a, b in zip(arranged.lay.inputs, plain.lay.inputs))
    for got, want in zip(arranged.outputs, plain.outputs):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_an_arrangement_must_cover_the_rule_matrix():
    lay = apply_rule(ops.ReLU(), ((2, 1),), [(4, 6)], [(4, 6)], 4, {})
    with pytest.raises(ValueError, match="does not cover the device matrix"):
        Arranged(((2, 1),), (4,), ((0,), (), ())).apply(lay)


# --------------------------------------------------------------------- a transformer block
GPT_CFG = dict(vocab=64, hidden=32, heads=4, seq=8, ffn=64)


@pytest.mark.parametrize("dp,mp", [(2, 4), (1, 4), (2, 2), (4, 1)])
def test_gpt_key_ops_propagate_to_the_megatron_strategies(dp, mp):
    """Strategies on the 9 key ops: propagation gives the other 14 (layer norms, biases, softmax, residuals,
    GeLU...) exactly the hand-written ones, and every parameter the same layout."""
    from gpt_block import GPTBlock, shard_gpt

    ids = Tensor(np.zeros((8, 8), np.int32))
    _auto(n=dp * mp)
    full = shard_gpt(GPTBlock(**GPT_CFG), dp, mp)
    want = ms.Model(full).infer_predict_layout(ids)
    want_strategies = [s for _, s, _ in propagation.last_plan(full).decisions]
    net = gpt_key_ops_only(GPTBlock(**GPT_CFG), dp, mp)
    assert ms.Model(net).infer_predict_layout(ids) == want
    decisions = propagation.last_plan(net).decisions
    assert sum(not configured for _, _, configured in decisions) == 14
    assert [s for _, s, _ in decisions] == want_strategies
