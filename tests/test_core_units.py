"""One-process unit tests of the core runtime: context, communication, initializers, Tensor/Parameter/Cell,
strategy errors (an abstract run with ``device_num=8``) and the lazy MPI import."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import distinfer as ms
from distinfer import communication as comm
from distinfer import nn, ops
from distinfer.common import initializer as init_mod
from distinfer.common.initializer import initializer, no_init_parameters
from distinfer.errors import CommError, StrategyError
from distinfer.layout import Layout
from distinfer.parallel import _executor as ex


@pytest.fixture(autouse=True)
def _clean_context():
    ms.reset_auto_parallel_context()
    yield
    ms.reset_auto_parallel_context()


# ------------------------------------------------------------------------------ context
AP_DEFAULTS = {
    "parallel_mode": "stand_alone", "device_num": 1, "global_rank": 0, "gradients_mean": False,
    "gradient_fp32_sync": True, "loss_repeated_mean": True, "full_batch": False, "dataset_strategy": "data_parallel",
    "search_mode": "recursive_programming", "pipeline_stages": 1, "pipeline_result_broadcast": False,
    "enable_parallel_optimizer": False,
    "strategy_ckpt_config": {"load_file": "", "save_file": "", "only_trainable_params": True},
}


@pytest.mark.parametrize("key,value", sorted(AP_DEFAULTS.items()))
def test_auto_parallel_defaults(key, value) -> None:
    assert ms.get_auto_parallel_context(key) == value


def test_parallel_mode_constants() -> None:
    assert ms.ParallelMode.MODE_LIST == ["stand_alone", "data_parallel", "hybrid_parallel", "semi_auto_parallel",
                                         "auto_parallel"]
    assert ms.ParallelMode.SEMI_AUTO_PARALLEL == "semi_auto_parallel"


@pytest.mark.parametrize("key,value,allowed", [
    ("parallel_mode", "semi", "semi_auto_parallel"),
    ("device_num", 0, "[1, 4096]"),
    ("device_num", 4097, "[1, 4096]"),
    ("global_rank", -1, "[0, 4095]"),
    ("search_mode", "greedy", "sharding_propagation"),
    ("dataset_strategy", "half_batch", "full_batch"),
    ("pipeline_stages", 0, "[1, 4096]"),
    ("strategy_ckpt_config", {"bogus": 1}, "save_file"),
])
def test_bad_values_name_key_and_allowed_values(key, value, allowed) -> None:
    with pytest.raises(ValueError) as info:
        ms.set_auto_parallel_context(**{key: value})
    assert key in str(info.value) and allowed in str(info.value)


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ValueError, match="not_a_key.*device_num"):
        ms.set_auto_parallel_context(not_a_key=1)
    with pytest.raises(ValueError, match="not_a_key"):
        ms.get_auto_parallel_context("not_a_key")


def test_full_batch_and_dataset_strategy_follow_each_other() -> None:
    ms.set_auto_parallel_context(full_batch=True)
    assert ms.get_auto_parallel_context("dataset_strategy") == "full_batch"
    ms.set_auto_parallel_context(dataset_strategy="data_parallel")
    assert ms.get_auto_parallel_context("full_batch") is False
    ms.set_auto_parallel_context(dataset_strategy=((2, 1), (2, 1)))
    assert ms.get_auto_parallel_context("dataset_strategy") == ((2, 1), (2, 1))


def test_aliases_and_legacy_keys() -> None:
    ms.set_auto_parallel_context(auto_parallel_search_mode="sharding_propagation")
    assert ms.get_auto_parallel_context("search_mode") == "sharding_propagation"
    ms.set_auto_parallel_context(strategy_ckpt_save_file="/tmp/s.ckpt")
    assert ms.get_auto_parallel_context("strategy_ckpt_config")["save_file"] == "/tmp/s.ckpt"
    assert ms.get_auto_parallel_context("strategy_ckpt_save_file") == "/tmp/s.ckpt"


def test_reset_restores_every_default() -> None:
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=8, global_rank=3, full_batch=True,
                                 pipeline_stages=2, strategy_ckpt_config={"save_file": "x.ckpt"})
    ms.reset_auto_parallel_context()
    for key, value in AP_DEFAULTS.items():
        assert ms.get_auto_parallel_context(key) == value, key


def test_get_returns_a_copy() -> None:
    ms.get_auto_parallel_context("strategy_ckpt_config")["save_file"] = "mutated"
    assert ms.get_auto_parallel_context("strategy_ckpt_config")["save_file"] == ""


def test_set_context_checks() -> None:
    with pytest.raises(ValueError, match="mode"):
        ms.set_context(mode=7)
    with pytest.raises(ValueError, match="device_target"):
        ms.set_context(device_target="TPU")
    with pytest.raises(ValueError, match="bogus_key"):
        ms.set_context(bogus_key=1)
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    assert ms.get_context("device_target") == "CPU"


# ------------------------------------------------------------------------ communication
def test_world_of_one() -> None:
    comm.init()
    assert comm.GlobalComm.INITED
    assert comm.get_rank() == 0 and comm.get_group_size() == 1
    for name in ("hccl_world_group", "nccl_world_group", "mccl_world_group"):
        assert comm.get_rank(name) == 0 and comm.get_group_size(name) == 1
    assert comm.get_local_rank() == 0
    assert ms.get_auto_parallel_context("device_num") == 1


def test_init_rejects_unknown_backend() -> None:
    with pytest.raises(RuntimeError, match="backend_name"):
        comm.init("gloo")


def test_groups() -> None:
    comm.init()
    comm.create_group("g0", [0])
    try:
        assert comm.get_group_size("g0") == 1 and comm.get_rank("g0") == 0
        assert comm.get_process_group_ranks("g0") == [0]
        assert comm.get_world_rank_from_group_rank("g0", 0) == 0
        assert comm.get_group_rank_from_world_rank(0, "g0") == 0
        with pytest.raises(ValueError, match="already exists"):
            comm.create_group("g0", [0])
        with pytest.raises(ValueError, match="outside group"):
            comm.get_world_rank_from_group_rank("g0", 3)
    finally:
        comm.destroy_group("g0")
    with pytest.raises(ValueError, match="does not exist"):
        comm.get_group_size("g0")
    with pytest.raises(ValueError, match="already exists"):
        comm.create_group("hccl_world_group", [0])
    with pytest.raises(CommError, match=r"rank_ids \[0, 1\]"):
        comm.create_group("g1", [0, 1])
    with pytest.raises(ValueError, match="distinct"):  # as MindSpore
        comm.create_group("g2", [0, 0])
    with pytest.raises(ValueError, match="cannot be destroyed"):
        comm.destroy_group("hccl_world_group")
    with pytest.raises(ValueError, match="does not exist"):
        comm.destroy_group("never_made")


def test_import_does_not_start_mpi() -> None:
    code = ("import sys, distinfer, distinfer.communication as c; assert 'mpi4py.MPI' not in sys.modules; "
            "c.init(); assert 'mpi4py.MPI' not in sys.modules; print('ok')")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("OMPI_", "PMI", "PMIX"))}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


# ------------------------------------------------------------------------- initializers
INITS = [
    init_mod.Normal(0.02), init_mod.Normal(0.5, 1.0), init_mod.Uniform(), init_mod.Zero(), init_mod.One(),
    init_mod.Constant(3.5), init_mod.TruncatedNormal(0.5), init_mod.XavierUniform(), init_mod.XavierNormal(),
    init_mod.HeUniform(), init_mod.HeNormal(), "normal", "uniform", "zeros", "ones", "truncatedNormal",
    "xavier_uniform", "he_normal", 0.25,
]
LAYOUTS = [Layout((2, 2, 2), (-1, 1), (12, 8)), Layout((2, 2, 2), (1, -1), (12, 8)), Layout((4,), (0, -1), (12, 8)),
           Layout((2, 4), (1, 0), (12, 8)), Layout((2, 2), (0, -1), (12, 8), opt_shard_size=-1)]


def _full_and_fresh(init, shape=(12, 8), seed=5):
    ms.set_seed(seed)
    full = initializer(init, shape, ms.float32).init_data().asnumpy()
    ms.set_seed(seed)
    return full, initializer(init, shape, ms.float32)


@pytest.mark.parametrize("init", INITS, ids=repr)
def test_rank_block_is_the_slice_of_the_full_tensor(init) -> None:
    full, _ = _full_and_fresh(init)
    for lay in LAYOUTS:
        for r in range(lay.num_devices):
            _, fresh = _full_and_fresh(init)
            p = ms.Parameter(fresh, name="w")
            p._materialize(lay, r)
            assert np.array_equal(p.asnumpy(), full[lay.block(r)]), (lay, r)
            assert p.shape == lay.local_shape and p.global_shape == (12, 8)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 11), st.integers(1, 12), st.integers(0, 7), st.integers(1, 8), st.integers(0, 2 ** 32 - 1))
def test_any_box_matches_the_full_tensor(r0, rl, c0, cl, seed) -> None:
    box = ((r0, min(12, r0 + rl)), (c0, min(8, c0 + cl)))
    full, fresh = _full_and_fresh(init_mod.TruncatedNormal(1.0), seed=seed)
    got = fresh.init.block((12, 8), box, fresh.init_seed)
    assert np.array_equal(got, full[box[0][0]:box[0][1], box[1][0]:box[1][1]])


def test_large_seeds() -> None:
    a, _ = _full_and_fresh("normal", seed=2 ** 32 - 1)
    b, _ = _full_and_fresh("normal", seed=2 ** 31)
    assert a.shape == b.shape == (12, 8) and not np.array_equal(a, b)


def test_seed_controls_values() -> None:
    a, _ = _full_and_fresh("normal", seed=1)
    b, _ = _full_and_fresh("normal", seed=1)
    c, _ = _full_and_fresh("normal", seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_initializer_statistics() -> None:
    ms.set_seed(0)
    x = initializer(init_mod.Normal(0.5, 1.0), (200, 200)).init_data().asnumpy()
    assert abs(x.mean() - 1.0) < 0.01 and abs(x.std() - 0.5) < 0.01
    t = initializer(init_mod.TruncatedNormal(1.0), (200, 200)).init_data().asnumpy()
    assert t.min() >= -2 and t.max() <= 2
    u = initializer(init_mod.Uniform(0.1), (200, 200)).init_data().asnumpy()
    assert u.min() >= -0.1 and u.max() <= 0.1 and abs(u.mean()) < 0.005


def test_initializer_errors() -> None:
    with pytest.raises(ValueError, match="unknown name 'bogus'"):
        initializer("bogus", (2, 2))
    with pytest.raises(ValueError, match="initializer: shape is required"):
        initializer("normal")
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        ms.set_seed(-1)


# ----------------------------------------------------------------- Tensor/Parameter/Cell
class Block(nn.Cell):
    def __init__(self):
        super().__init__()
        self.fc = nn.Dense(4, 3)
        self.norm = nn.LayerNorm((3,))
        self.scale = ms.Parameter(ms.Tensor(np.ones(3, np.float32)), requires_grad=False)

    def construct(self, x):
        return self.norm(self.fc(x)) * self.scale


class Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.seq = nn.SequentialCell([nn.Dense(3, 5), nn.ReLU(), nn.Dense(5, 2)])
        self.heads = nn.CellList([nn.Dense(2, 2), nn.Dense(2, 1)])

    def construct(self, x):
        y = self.seq(self.block(x))
        return self.heads[1](self.heads[0](y))


def test_parameter_names_and_order() -> None:
    names = [n for n, _ in Net().parameters_and_names()]
    # MindSpore's order: each cell's own parameters, then its children's (cells_and_names is pre-order).
    assert names == ["block.scale", "block.fc.weight", "block.fc.bias", "block.norm.gamma", "block.norm.beta",
                     "seq.0.weight", "seq.0.bias", "seq.2.weight", "seq.2.bias",
                     "heads.0.weight", "heads.0.bias", "heads.1.weight", "heads.1.bias"]


def test_trainable_params_and_set_train() -> None:
    net = Net()
    assert [p.name for p in net.trainable_params()][:4] == ["block.fc.weight", "block.fc.bias", "block.norm.gamma",
                                                            "block.norm.beta"]
    assert [p.name for p in net.untrainable_params()] == ["block.scale"]
    net.set_train()
    assert all(c.training for _, c in net.cells_and_names())
    net.set_train(False)
    assert not any(c.training for _, c in net.cells_and_names())
    assert [n for n, _ in net.cells_and_names()][:3] == ["", "block", "block.fc"]


def test_sequential_and_cell_list_run() -> None:
    ms.set_seed(3)
    net = Net()
    x = np.random.RandomState(0).standard_normal((6, 4)).astype(np.float32)
    out = net(ms.Tensor(x)).asnumpy()
    # numpy forward of the same parameters: Dense is x @ W.T + b (W is [out, in]), LayerNorm eps 1e-7.
    w = {n: p.asnumpy().astype(np.float64) for n, p in net.parameters_and_names()}

    def dense(h, name):
        return h @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    h = dense(x.astype(np.float64), "block.fc")
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-7)
    h = (h * w["block.norm.gamma"] + w["block.norm.beta"]) * w["block.scale"]
    h = dense(np.maximum(dense(h, "seq.0"), 0), "seq.2")
    want = dense(dense(h, "heads.0"), "heads.1")
    assert out.shape == (6, 1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    assert len(net.seq) == 3 and len(net.heads) == 2 and isinstance(net.seq[1], nn.ReLU)
    assert [type(c) for c in net.heads] == [nn.Dense, nn.Dense]


def test_shared_parameter_listed_once_and_assignment_checks() -> None:
    net = Net()
    net.heads[1].weight = net.heads[0].weight
    names = [n for n, _ in net.parameters_and_names()]
    # The shared Parameter is listed once, under its first (pre-order) name; nothing else is lost.
    assert names == ["block.scale", "block.fc.weight", "block.fc.bias", "block.norm.gamma", "block.norm.beta",
                     "seq.0.weight", "seq.0.bias", "seq.2.weight", "seq.2.bias",
                     "heads.0.weight", "heads.0.bias", "heads.1.bias"]
    assert net.heads[1].weight is net.heads[0].weight
    with pytest.raises(TypeError, match="is a Parameter"):
        net.block.scale = np.zeros(3)


def test_tensor_and_parameter_basics() -> None:
    t = ms.Tensor([1.5, 2.5])
    assert t.dtype == ms.float32 and t.shape == (2,)
    assert ms.Tensor(np.arange(3))[1].shape == ()
    assert np.allclose((t + 1).asnumpy(), [2.5, 3.5]) and np.allclose((2 * t).asnumpy(), [3.0, 5.0])
    p = ms.Parameter(ms.Tensor(np.zeros((2, 3), np.float32)), name="w")
    assert p.name == "w" and p.requires_grad and p.shape == (2, 3)
    with pytest.raises(RuntimeError, match=r"\(4,\).*\(2, 3\)"):
        p.set_data(np.zeros(4, np.float32))
    # As in MindSpore: outside (semi-)auto parallel a Parameter gets its values when it is created;
    # in semi-auto parallel, and inside no_init_parameters, it stays lazy until it is used.
    eager = ms.Parameter(initializer("normal", (4, 4)), name="eager")
    with no_init_parameters():
        lazy = ms.Parameter(initializer("normal", (4, 4)), name="lazy")
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel")
    lazy_sharded = ms.Parameter(initializer("normal", (4, 4)), name="lazy_sharded")
    ms.reset_auto_parallel_context()
    assert not eager.has_init and lazy.has_init and lazy_sharded.has_init
    assert "not materialised" in repr(ms.Tensor(shape=(2,), dtype=ms.float32, init="zeros"))


def test_scalar_parameter_stays_0d_under_a_layout() -> None:
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel")
    p = ms.Parameter(ms.Tensor(np.float32(2.0)), name="s")
    out = ops.Mul()(ms.Tensor(np.float32(3.0)), p)
    assert p.asnumpy().shape == () and out.asnumpy().shape == () and float(out.asnumpy()) == 6.0


# ---------------------------------------------------------------------- strategy errors
def _abstract_call(prim, *shapes, dtype=np.float32):
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=8)
    with ex.abstract():
        return prim(*[ms.Tensor(np.zeros(s, dtype)) for s in shapes])


@pytest.mark.parametrize("strategy,fragment", [
    (((2, 1, 1), (1, 2)), "has 3 entries"),                  # wrong tuple rank
    (((2,), (1, 2)), "has 1 entries"),
    (((4, 4), (4, 1)), "uses 16 devices"),                  # product above the device count
    (((2, 2), (2, 4)), "uses 16 devices"),                  # device matrix [2, 2, 4] above it
    (((5, 1), (1, 1)), "not divisible by 5"),                # indivisible dim
    (((3, 1), (1, 1)), "not divisible by 3"),
    (((2, 2), (4, 1)), "contraction dim is split 2 ways in input 0 but 4"),  # mismatched contraction
])
def test_matmul_strategy_errors_name_everything(strategy, fragment) -> None:
    with pytest.raises(StrategyError) as info:
        _abstract_call(ops.MatMul().shard(strategy), (16, 32), (32, 8))
    msg = str(info.value)
    assert fragment in msg
    assert msg.startswith("MatMul: ") and str(strategy) in msg and "8 devices" in msg
    assert "(16, 32)" in msg  # the input shape, not just a number that also appears in "16 devices"


@pytest.mark.parametrize("prim,shapes,fragment", [
    (lambda: ops.BatchMatMul().shard(((2, 1, 2), (2, 4, 1))), [(4, 8, 16), (4, 16, 8)], "contraction"),
    (lambda: ops.Add().shard(((2, 4), (2,))), [(8, 16), (16,)], "split 4 ways"),
    (lambda: ops.Softmax().shard(((2, 4),)), [(8, 16)], "Softmax axis"),
    (lambda: ops.LayerNorm().shard(((2, 4), (4,), (4,))), [(8, 16), (16,), (16,)], "cannot be split"),
    (lambda: ops.ReLU().shard(((16, 1),)), [(16, 8)], "uses 16 devices"),
    (lambda: ops.BiasAdd().shard(((2, 4), (2,))), [(8, 16), (16,)], "bias is split 2 ways"),
])
def test_other_strategy_errors(prim, shapes, fragment) -> None:
    op = prim()
    with pytest.raises(StrategyError) as info:
        _abstract_call(op, *shapes)
    msg = str(info.value)
    # The op, the problem, the strategy, the input's shape and the device count are all named.
    assert msg.startswith(f"{type(op).__name__}: "), msg
    assert fragment in msg and "8 devices" in msg and str(shapes[0]) in msg, msg
    assert str(tuple(op.in_strategy)) in msg, msg


def test_concat_and_split_axis_errors() -> None:
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=8)
    x = ms.Tensor(np.zeros((8, 16), np.float32))
    with ex.abstract():
        with pytest.raises(StrategyError, match=r"Concat.*axis 1 unsplit.*8 devices"):
            ops.Concat(1).shard(((2, 2), (2, 2)))((x, x))
        with pytest.raises(StrategyError, match=r"Split: axis 1 cannot be split.*8 devices"):
            ops.Split(1, 2).shard(((1, 4),))(x)


def test_shard_form_errors() -> None:
    with pytest.raises(StrategyError, match="tuple of tuples"):
        ops.MatMul().shard((2, 1))
    with pytest.raises(StrategyError, match="takes no strategy"):
        ops.Reshape().shard(((2, 1),))


def test_abstract_seed_layouts_match_spec_4_3() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "seed_net.py"
    spec = importlib.util.spec_from_file_location("seed_net_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=8, full_batch=True)
    layouts = ms.Model(mod.seed_network()).infer_predict_layout(ms.Tensor(np.zeros((16, 1, 28, 28), np.float32)))
    got = {k: (v[0], v[1]) for k, v in layouts.items()}
    assert got == {"layer1.weight": ([2, 2, 2], [-1, 1]), "layer1.bias": ([8], [-1]),
                   "layer2.weight": ([8], [-1, -1]), "layer2.bias": ([8], [-1]),
                   "layer3.weight": ([2, 2, 2], [1, -1]), "layer3.bias": ([8], [-1])}
    # The docs' 4-device transformation target (spec §4.3, last paragraph).
    ms.set_auto_parallel_context(device_num=4)
    net = mod.Network()
    net.layer1.matmul.shard(((1, 4), (4, 1)))
    net.layer3.matmul.shard(((2, 2), (2, 1)))
    layouts = ms.Model(net).infer_predict_layout(ms.Tensor(np.zeros((16, 1, 28, 28), np.float32)))
    assert (layouts["layer1.weight"][0], layouts["layer1.weight"][1]) == ([4], [0, -1])
    assert (layouts["layer3.weight"][0], layouts["layer3.weight"][1]) == ([2, 2], [0, -1])
    assert (layouts["layer2.weight"][0], layouts["layer2.weight"][1]) == ([4], [-1, -1])
