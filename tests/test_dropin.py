"""MindSpore's public behaviour of the APIs a drop-in needs beyond the ops: module paths, the 2.x
compilation markers, ``runtime``, ``AutoParallel``, ``comm_func`` on one rank, ``ops.Print``, Tensor text,
numpy's global generator, and the transform semantics. Where real MindSpore 2.10 is installed
(``DISTINFER_MINDSPORE_PYTHON``, default ``/work/msenv/bin/python``), the same calls are made there and
compared; otherwise those tests are skipped with the reason.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

import distinfer as ms
import distinfer.runtime as rt
from distinfer import nn, ops
from distinfer.common.initializer import initializer, no_init_parameters
from distinfer.communication import comm_func
from distinfer.io import CkptFile, ParamLayout, StrategyFile, write_ckpt, write_strategy
from distinfer.parallel.auto_parallel import AutoParallel

MINDSPORE_PYTHON = os.environ.get("DISTINFER_MINDSPORE_PYTHON", "/work/msenv/bin/python")
needs_mindspore = pytest.mark.skipif(not os.path.exists(MINDSPORE_PYTHON),
                                     reason=f"no MindSpore Python at {MINDSPORE_PYTHON} "
                                            "(set DISTINFER_MINDSPORE_PYTHON to compare with real MindSpore)")


def _mindspore(code: str, tmp_path: Path) -> str:
    """Run ``code`` with real MindSpore in ``tmp_path``; its stdout."""
    script = tmp_path / "with_mindspore.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.run([MINDSPORE_PYTHON, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# -------------------------------------------------------------------------- module paths
@pytest.mark.parametrize("path,names", [
    ("common.dtype", ["float32", "int8", "dtype_to_nptype"]), ("common.tensor", ["Tensor"]),
    ("common.parameter", ["Parameter", "ParameterTuple"]), ("common.api", ["jit", "jit_class", "JitConfig"]),
    ("common.initializer", ["initializer", "Normal", "HeUniform"]), ("nn.optim.optimizer", ["Optimizer"]),
    ("nn.optim.sgd", ["SGD"]), ("nn.optim.momentum", ["Momentum"]), ("nn.optim.adam", ["Adam", "AdamWeightDecay"]),
    ("nn.utils", ["no_init_parameters"]), ("train.serialization", ["save_checkpoint", "load_checkpoint", "export"]),
    ("parallel.shard", ["Layout"]), ("parallel.nn", ["PipelineCell", "PipelineGradReducer"]),
    ("parallel.auto_parallel", ["AutoParallel"]), ("communication.comm_func", ["all_reduce", "barrier"]),
    ("communication.management", ["init", "get_rank"]), ("runtime", ["set_memory", "memory_stats"]),
])
def test_mindspore_module_paths(path, names):
    """``import mindspore.<path>`` works, and its names are the objects distinfer exports elsewhere."""
    module = importlib.import_module(f"distinfer.{path}")
    home = {"float32": ms.float32, "int8": ms.int8, "Tensor": ms.Tensor, "Parameter": ms.Parameter,
            "ParameterTuple": ms.ParameterTuple, "jit": ms.jit, "jit_class": ms.jit_class, "JitConfig": ms.JitConfig,
            "Optimizer": nn.Optimizer, "SGD": nn.SGD, "Momentum": nn.Momentum, "Adam": nn.Adam,
            "AdamWeightDecay": nn.AdamWeightDecay, "save_checkpoint": ms.save_checkpoint,
            "load_checkpoint": ms.load_checkpoint, "export": ms.export, "Layout": ms.Layout,
            "PipelineCell": nn.PipelineCell, "PipelineGradReducer": nn.PipelineGradReducer,
            "init": ms.communication.init, "get_rank": ms.communication.get_rank}
    for name in names:
        assert hasattr(module, name), f"distinfer.{path} has no {name}"
        if name in home:
            assert getattr(module, name) is home[name], f"distinfer.{path}.{name} is a copy"


def test_top_level_names():
    for name in ("jit", "jit_class", "JitConfig", "lazy_inline", "no_inline", "set_device",
                 "sync_pipeline_shared_parameters", "runtime", "value_and_grad"):
        assert hasattr(ms, name), name
    assert ops.value_and_grad is ms.value_and_grad and ops.grad is ms.grad
    assert ms.communication.comm_func is comm_func


# ------------------------------------------------------------------ compilation markers
def test_jit_forms_and_checks():
    def double(x):
        return x * 2

    x = ms.Tensor(np.array([1.0, 2.0], np.float32))
    for compiled in (ms.jit(double), ms.jit(jit_level="O1")(double), ms.jit(capture_mode="bytecode")(double),
                     ms.jit(double, mode="PSJit", input_signature=None)):  # the 2.3 keywords are accepted
        assert compiled(x).asnumpy().tolist() == [2.0, 4.0] and compiled.__name__ == "double"
    with pytest.raises(ValueError, match="'jit_level' must be str and must be in"):
        ms.jit(jit_level="O9")
    with pytest.raises(ValueError, match="'capture_mode' must be str and must be in"):
        ms.jit(capture_mode="graph")


def test_jit_config_and_context_keys():
    assert ms.JitConfig(jit_level="O2", infer_boost="on").jit_config_dict["infer_boost"] == "on"
    for bad in ({"jit_level": "O9"}, {"exc_mode": "eager"}, {"debug_level": "LOUD"}):
        with pytest.raises(ValueError):
            ms.JitConfig(**bad)
    old = ms.get_context("jit_config")
    ms.set_context(jit_level="O1", jit_config={"jit_level": "O0", "infer_boost": "off"})
    assert ms.get_context("jit_level") == "O1" and ms.get_context("jit_config") == {"jit_level": "O0",
                                                                                   "infer_boost": "off"}
    with pytest.raises(ValueError, match="must be one of \\['O0', 'O1', 'O2'\\], but got O5"):
        ms.set_context(jit_config={"jit_level": "O5"})
    with pytest.raises(ValueError, match="the key of argument 'jit_config' must be one of"):
        ms.set_context(jit_config={"level": "O0"})
    with pytest.raises(TypeError):
        ms.set_context(jit_config="O0")
    ms.set_context(jit_level="", jit_config=old)


def test_set_device():
    ms.set_device("CPU", 0)
    assert (ms.get_context("device_target"), ms.get_context("device_id")) == ("CPU", 0)
    with pytest.raises(ValueError, match="must be one of \\['CPU', 'GPU', 'Ascend'\\], but got TPU"):
        ms.set_device("TPU")


def test_lazy_inline_and_markers():
    class Block(nn.Cell):
        @ms.lazy_inline
        def __init__(self, width):
            super().__init__()
            self.fc = nn.Dense(width, width)

        def construct(self, x):
            return self.fc(x)

    class Wide(nn.Cell):
        @ms.lazy_inline(policy="front")
        def __init__(self):
            super().__init__()
            self.block = Block(2)

    assert [n for n, _ in Wide().parameters_and_names()] == ["block.fc.weight", "block.fc.bias"]
    assert ms.no_inline(len)([1, 2]) == 2
    with pytest.raises(TypeError, match="only be used for class type"):
        ms.jit_class(len)


# ---------------------------------------------------------------------------------- runtime
@pytest.fixture
def fresh_runtime(monkeypatch):
    monkeypatch.setattr(rt, "_settings", {})


def test_runtime_set_memory(fresh_runtime):
    for bad in ("28", "28 GB", "0GB", "-1GB"):
        with pytest.raises(ValueError, match="memory value"):
            rt.set_memory(max_size=bad)
    with pytest.raises(TypeError):
        rt.set_memory(max_size=28)
    with pytest.raises(ValueError, match="optimize_level must be one of"):
        rt.set_memory(optimize_level="O2")
    rt.set_memory(max_size="28GB")
    with pytest.raises(RuntimeError, match="can not be set repeatedly"):
        rt.set_memory(max_size="28GB")


def test_runtime_setters_and_queries(fresh_runtime):
    rt.set_cpu_affinity(True, ["0-1"], {"main": [0], "minddata": [1]})
    with pytest.raises(RuntimeError, match="cannot be set repeatedly"):
        rt.set_cpu_affinity(False)
    with pytest.raises(TypeError):
        rt.dispatch_threads_num("4")
    rt.dispatch_threads_num(4)
    with pytest.raises(ValueError, match="cannot be evenly divisible"):
        rt.set_kernel_launch_group(thread_num=3, kernel_group_num=8)
    rt.set_kernel_launch_group()
    with pytest.raises(RuntimeError, match="can not be set together"):
        rt.set_kernel_launch_capture(True)
    rt.launch_blocking(), rt.synchronize(), rt.empty_cache(), rt.reset_peak_memory_stats()
    assert rt.memory_allocated() == rt.max_memory_reserved() == 0
    assert rt.memory_stats()["total_reserved_memory"] == 0 and "Memory summary" in rt.memory_summary()


# ------------------------------------------------------------------------------ AutoParallel
def test_auto_parallel_argument_checks(tmp_path):
    net = AutoParallel(nn.Dense(2, 2))
    with pytest.raises(ValueError, match="'parallel_mode' must be one of"):
        AutoParallel(nn.Dense(2, 2), parallel_mode="data_parallel")
    with pytest.raises(ValueError, match="dataset_strategy is none"):
        net.dataset_strategy(None)
    with pytest.raises(TypeError, match="must be str or tuple type"):
        net.dataset_strategy([(1, 8)])
    with pytest.raises(TypeError, match="must be int type"):
        net.dataset_strategy(((1, 8.0),))
    with pytest.raises(TypeError, match="must be tuple or Layout"):
        net.dataset_strategy(([1, 8],))
    for kwargs, match in (({"shard_size": 0}, "shard_size"), ({"threshold": -1}, "threshold"),
                          ({"optimizer_level": "level4"}, "Optimizer level")):
        with pytest.raises(ValueError, match=match):
            net.hsdp(**kwargs)
    with pytest.raises(TypeError, match="'stages' must be int"):
        net.pipeline(stages="2")
    with pytest.raises(ValueError, match="larger than zero"):
        net.pipeline(stages=0)
    with pytest.raises(ValueError, match="'scheduler' must be"):
        net.pipeline(stages=2, scheduler="2f2b")
    with pytest.raises(TypeError, match="'file_path' must be str"):
        net.save_param_strategy_file(3)
    with pytest.raises(KeyError, match="absolute path"):
        net.save_operator_strategy_file("relative.json")
    with pytest.raises(KeyError, match=".json"):
        net.load_operator_strategy_file(str(tmp_path / "strategy.ckpt"))
    with pytest.raises(TypeError):
        net.comm_fusion("allreduce")


def test_auto_parallel_configuration_is_scoped():
    net = AutoParallel(nn.Dense(4, 2), parallel_mode="semi_auto")
    net.dataset_strategy("full_batch")
    net.hsdp(shard_size=2, threshold=0)
    net.pipeline(stages=1, output_broadcast=True)
    net.enable_gradients_mean()
    with net.parallel_scope():
        assert ms.get_auto_parallel_context("parallel_mode") == "semi_auto_parallel"
        assert ms.get_auto_parallel_context("full_batch") and ms.get_auto_parallel_context("gradients_mean")
        assert ms.get_auto_parallel_context("enable_parallel_optimizer")
        assert ms.get_auto_parallel_context("parallel_optimizer_config")["optimizer_weight_shard_size"] == 2
    assert ms.get_auto_parallel_context("parallel_mode") == "stand_alone"
    assert not ms.get_auto_parallel_context("full_batch") and not ms.get_auto_parallel_context("gradients_mean")
    sharding = AutoParallel(nn.Dense(4, 2), parallel_mode="sharding_propagation")
    with sharding.parallel_scope():
        assert ms.get_auto_parallel_context("parallel_mode") == "auto_parallel"
        assert ms.get_auto_parallel_context("search_mode") == "sharding_propagation"


def test_auto_parallel_with_model_and_strategy_file(tmp_path):
    """Model(AutoParallel(net)) trains in the wrapper's configuration, and the first run writes its strategy file."""
    import distinfer.dataset as ds

    ms.set_seed(5)
    net = nn.Dense(4, 2)
    parallel = AutoParallel(net)
    parallel.save_param_strategy_file(str(tmp_path / "strategy.ckpt"))
    x, y = np.ones((4, 4), np.float32), np.array([0, 1, 0, 1], np.int32)
    data = ds.NumpySlicesDataset((x, y), column_names=["x", "y"], shuffle=False).batch(4)
    model = ms.Model(parallel, nn.CrossEntropyLoss(), nn.SGD(net.trainable_params(), 0.1))
    model.train(1, data)
    assert {"weight", "bias", "accum.weight"} <= set(ms.build_searched_strategy(str(tmp_path / "strategy.ckpt")))
    assert ms.get_auto_parallel_context("parallel_mode") == "stand_alone"
    assert model.predict(ms.Tensor(x)).shape == (4, 2)


def test_functional_auto_parallel_reaches_the_closure_parameters(tmp_path):
    """AutoParallel of a training-step function: the strategy file lists the parameters (and the
    optimizer state) of the Cells the function uses."""
    ms.set_seed(5)
    with no_init_parameters():
        net = nn.Dense(4, 2)
        optimizer = nn.Momentum(net.trainable_params(), 0.1, 0.9)
    assert net.weight.has_init
    grad_fn = ms.value_and_grad(lambda x, y: nn.MSELoss()(net(x), y), None, net.trainable_params())

    def train_step(x, y):
        loss, grads = grad_fn(x, y)
        optimizer(grads)
        return loss

    step = AutoParallel(train_step)
    step.save_param_strategy_file(str(tmp_path / "s.ckpt"))
    loss = step(ms.Tensor(np.ones((2, 4), np.float32)), ms.Tensor(np.zeros((2, 2), np.float32)))
    assert loss.shape == () and not net.weight.has_init
    assert {"weight", "bias", "moments.weight", "moments.bias"} <= set(
        ms.build_searched_strategy(str(tmp_path / "s.ckpt")))


# ----------------------------------------------------------------------- Cells and params
def test_comm_fusion_checks():
    net = nn.SequentialCell([nn.Dense(2, 2), nn.Dense(2, 2)])
    assert net.set_comm_fusion(2) is net and all(p.comm_fusion == 2 for p in net.get_parameters())
    with pytest.raises(TypeError, match="must be int"):
        net.set_comm_fusion("a")
    with pytest.raises(ValueError, match=">= 0"):
        net.set_comm_fusion(-1)
    assert ms.Parameter(ms.Tensor(1.0), name="p").comm_fusion == 1


def test_no_init_parameters_and_init_parameters_data():
    with no_init_parameters():
        net = nn.Dense(3, 2)
    assert net.weight.has_init and net.bias.has_init
    done = net.init_parameters_data()
    assert set(done) == {net.weight, net.bias} and all(k is v for k, v in done.items())
    assert not net.weight.has_init and net.weight.asnumpy().shape == (2, 3)


def test_parameter_data_and_value():
    p = ms.Parameter(ms.Tensor(np.arange(3, dtype=np.float32)), name="w")
    assert type(p.data) is ms.Tensor and p.data is not p and p.value().asnumpy().tolist() == [0.0, 1.0, 2.0]


def test_cell_compile_outside_parallel_mode_is_a_no_op():
    net = nn.Dense(2, 2)
    assert net.compile(ms.Tensor(np.ones((1, 2), np.float32))) is None


def test_pipeline_grad_reducer():
    net = nn.Dense(2, 1)
    grads = (ms.Tensor(np.full((1, 2), 6.0, np.float32)), ms.Tensor(np.full(1, 3.0, np.float32)))
    assert nn.PipelineGradReducer(net.trainable_params())(grads)[0].asnumpy().tolist() == [[6.0, 6.0]]
    assert nn.PipelineGradReducer(net.trainable_params(), 3.0)(grads)[1].asnumpy().tolist() == [1.0]
    with pytest.raises(ValueError):
        nn.PipelineGradReducer(net.trainable_params(), 0.0)


# ------------------------------------------------------------------------- ops.Print
def test_print(capsys):
    pr = ops.Print()
    assert pr("out is:", ms.Tensor(np.array([[1, 2], [3, 4]], np.int32)), 7) is None
    assert capsys.readouterr().out == "out is:\nTensor(shape=[2, 2], dtype=Int32, value=\n[[1, 2],\n [3, 4]])\n7\n"
    with pytest.raises(ValueError):
        pr()


def test_print_inside_a_network_under_gradients(capsys):
    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(2, 1, weight_init="ones", bias_init="zeros")
            self.print = ops.Print()

        def construct(self, x):
            out = self.fc(x)
            self.print("fc:", out)
            return ops.reduce_sum(out)

    net = Net()
    loss, grads = ms.value_and_grad(net, None, net.trainable_params())(ms.Tensor(np.ones((1, 2), np.float32)))
    assert float(loss.asnumpy()) == 2.0 and grads[0].asnumpy().tolist() == [[1.0, 1.0]]
    assert capsys.readouterr().out.startswith("fc:\nTensor(shape=[1, 1], dtype=Float32, value=")


# --------------------------------------------------------------------- comm_func, one rank
def test_comm_func_on_one_rank():
    x = ms.Tensor(np.arange(4, dtype=np.float32).reshape(2, 2))
    for fn in (comm_func.all_reduce, comm_func.all_gather_into_tensor, comm_func.reduce_scatter_tensor):
        out, handle = fn(x)
        assert out.asnumpy().tolist() == x.asnumpy().tolist() and handle is None
    out, handle = comm_func.all_reduce(x, op="prod", async_op=True)
    handle.wait()
    assert out.asnumpy().tolist() == x.asnumpy().tolist()
    assert comm_func.broadcast(x, src=0).asnumpy().tolist() == x.asnumpy().tolist()
    assert comm_func.reduce(x, dst=0).asnumpy().tolist() == x.asnumpy().tolist()
    comm_func.barrier()
    with pytest.raises(TypeError, match="input tensor must be tensor"):
        comm_func.all_reduce(np.ones(2))
    with pytest.raises(TypeError, match="op value must be one of"):
        comm_func.all_reduce(x, op="mean")
    with pytest.raises(TypeError, match="op type must be str"):
        comm_func.all_reduce(x, op=1)
    with pytest.raises(TypeError, match="group must be type of string"):
        comm_func.barrier(group=0)
    with pytest.raises(TypeError, match="src must be int"):
        comm_func.broadcast(x, src="0")
    with pytest.raises(ValueError, match="is not a rank of the group"):
        comm_func.broadcast(x, src=3)


# ------------------------------------------------------------------------- Tensor text
# MindSpore 2.10's own text (measured), for the values below.
TEXT_CASES = [
    (np.float32(2.3014357), "2.3014357", "Tensor(shape=[], dtype=Float32, value= 2.30144)"),
    (np.array([1.5, 2.25], np.float32), "[1.5  2.25]",
     "Tensor(shape=[2], dtype=Float32, value= [ 1.50000000e+00,  2.25000000e+00])"),
    (np.arange(6, dtype=np.int32).reshape(2, 3), "[[0 1 2]\n [3 4 5]]",
     "Tensor(shape=[2, 3], dtype=Int32, value=\n[[0, 1, 2],\n [3, 4, 5]])"),
    (np.array([True, False]), "[ True False]", "Tensor(shape=[2], dtype=Bool, value= [ True, False])"),
    (np.array([1.5, -2.5], np.float16), "[ 1.5 -2.5]",
     "Tensor(shape=[2], dtype=Float16, value= [ 1.5000e+00, -2.5000e+00])"),
    (np.array([np.nan, np.inf], np.float32), "[nan inf]",
     "Tensor(shape=[2], dtype=Float32, value= [            nan,             inf])"),
    (np.arange(14, dtype=np.int32).reshape(2, 7), "[[ 0  1  2  3  4  5  6]\n [ 7  8  9 10 11 12 13]]",
     "Tensor(shape=[2, 7], dtype=Int32, value=\n[[ 0,  1,  2 ...  4,  5,  6],\n [ 7,  8,  9 ... 11, 12, 13]])"),
]


@pytest.mark.parametrize("value,text,rep", TEXT_CASES)
def test_tensor_text_is_mindsporeS(value, text, rep):
    t = ms.Tensor(value)
    assert str(t) == text and repr(t) == rep


def test_printed_loss_is_the_float32_value(capsys):
    print("loss is %s" % ms.Tensor(np.float32(2.3014357)))
    assert capsys.readouterr().out == "loss is 2.3014357\n"


@needs_mindspore
def test_tensor_text_matches_mindspore(tmp_path):
    rng = np.random.RandomState(0)
    arrays = [rng.randn(3, 4).astype(np.float32), rng.randn(9, 8).astype(np.float32),
              np.arange(3000, dtype=np.int32).reshape(1000, 3), rng.randn(2, 3, 8).astype(np.float64),
              np.array(-7, np.int64), np.zeros((0, 3), np.float32), np.arange(1500, dtype=np.float32)]
    np.savez(tmp_path / "arrays.npz", *arrays)
    out = _mindspore("""
        import json, numpy as np, mindspore as ms
        data = np.load("arrays.npz")
        print(json.dumps([[repr(ms.Tensor(data[k])), str(ms.Tensor(data[k]))] for k in sorted(data, key=lambda k: int(k[4:]))]))
    """, tmp_path)
    want = json.loads(out.strip().splitlines()[-1])
    for a, (rep, text) in zip(arrays, want):
        assert repr(ms.Tensor(a)) == rep
        if np.__version__.split(".")[0] == "1" or a.dtype.kind != "f":  # numpy 2 prints some floats its own way
            assert str(ms.Tensor(a)) == text


# ------------------------------------------------------- numpy's global generator
def _draws_before(fn) -> int:
    """How many of MindSpore's seed draws ``fn`` took from numpy's global generator."""
    np.random.seed(1)
    fn()
    after = np.random.rand()
    for k in range(6):
        np.random.seed(1)
        for _ in range(k):
            np.random.randint(low=1, high=1 << 63, dtype=np.int64)
        if np.random.rand() == after:
            return k
    raise AssertionError("fn drew from numpy other than as MindSpore's initializers do")


# (what, parallel mode, draws) as MindSpore 2.10 makes them (measured)
DRAW_CASES = [
    ("Parameter(normal)", "stand_alone", 1), ("Parameter(normal)", "data_parallel", 1),
    ("Parameter(normal)", "semi_auto_parallel", 0), ("Parameter(zeros)", "stand_alone", 0),
    ("Dense(3, 2)", "stand_alone", 2), ("Dense(3, 2)", "semi_auto_parallel", 0), ("initializer(normal)", "stand_alone", 0),
    ("initializer(normal).init_data()", "stand_alone", 1), ("no_init_parameters: Dense(3, 2)", "stand_alone", 0),
]
BUILD = {
    "Parameter(normal)": lambda: ms.Parameter(initializer("normal", [2, 2])),
    "Parameter(zeros)": lambda: ms.Parameter(initializer("zeros", [2, 2])),
    "Dense(3, 2)": lambda: nn.Dense(3, 2),
    "initializer(normal)": lambda: initializer("normal", [2, 2]),
    "initializer(normal).init_data()": lambda: initializer("normal", [2, 2]).init_data(),
    "no_init_parameters: Dense(3, 2)": lambda: _deferred_dense(),
}


def _deferred_dense():
    with no_init_parameters():
        return nn.Dense(3, 2)


@pytest.mark.parametrize("what,mode,draws", DRAW_CASES)
def test_initializers_draw_from_numpy_as_mindspore_does(what, mode, draws):
    ms.set_auto_parallel_context(parallel_mode=mode)
    try:
        assert _draws_before(BUILD[what]) == draws
    finally:
        ms.reset_auto_parallel_context()


def test_a_seeded_script_gets_mindspore_s_numbers():
    """test_loading.py's order: seed, network (lazy in semi-auto mode), then the input from numpy."""
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel")
    ms.set_seed(1)
    nn.Dense(784, 10)
    x = np.random.randn(3)
    ms.reset_auto_parallel_context()
    np.random.seed(1)
    assert np.array_equal(x, np.random.randn(3))


@needs_mindspore
def test_numpy_draws_match_mindspore(tmp_path):
    out = _mindspore("""
        import json, numpy as np, mindspore as ms
        from mindspore import nn
        from mindspore.common.initializer import initializer
        def draws(fn):
            np.random.seed(1); fn(); after = np.random.rand()
            for k in range(6):
                np.random.seed(1)
                for _ in range(k): np.random.randint(low=1, high=1 << 63, dtype=np.int64)
                if np.random.rand() == after: return k
            return -1
        cases = {"Parameter(normal)": lambda: ms.Parameter(initializer("normal", [2, 2])),
                 "Parameter(zeros)": lambda: ms.Parameter(initializer("zeros", [2, 2])),
                 "Dense(3, 2)": lambda: nn.Dense(3, 2), "initializer(normal)": lambda: initializer("normal", [2, 2]),
                 "initializer(normal).init_data()": lambda: initializer("normal", [2, 2]).init_data()}
        got = {}
        for mode in ("stand_alone", "data_parallel", "semi_auto_parallel"):
            ms.set_auto_parallel_context(parallel_mode=mode, device_num=8, global_rank=0)
            for what, fn in cases.items():
                got[f"{what}|{mode}"] = draws(fn)
            ms.reset_auto_parallel_context()
        print(json.dumps(got))
    """, tmp_path)
    want = json.loads(out.strip().splitlines()[-1])
    for key, count in want.items():
        what, mode = key.split("|")
        ms.set_auto_parallel_context(parallel_mode=mode)
        try:
            assert _draws_before(BUILD[what]) == count, key
        finally:
            ms.reset_auto_parallel_context()


# ------------------------------------------------------------------ transform semantics
def _training_files(d: Path) -> tuple[dict[int, str], str, str]:
    """Two source ranks: w by columns and its optimizer state ``accum.w`` laid out like it; the
    destination strategy (rows over 2 ranks) names w only, as a predict strategy would."""
    full = np.arange(16, dtype=np.float32).reshape(4, 4)
    files = {}
    for r in range(2):
        files[r] = str(d / f"rank{r}.ckpt")
        write_ckpt(files[r], [("w", full[:, 2 * r:2 * r + 2]), ("accum.w", 10 * full[:, 2 * r:2 * r + 2]),
                              ("global_step", np.array([7], np.int32))])
    write_strategy(str(d / "src.ckpt"), StrategyFile(layouts={"w": ParamLayout([2], [-1, 0]),
                                                              "accum.w": ParamLayout([2], [-1, 0])}))
    write_strategy(str(d / "dst.ckpt"), StrategyFile(layouts={"w": ParamLayout([2], [0, -1])}))
    return files, str(d / "src.ckpt"), str(d / "dst.ckpt")


def test_transform_keeps_the_source_slice_of_what_the_destination_does_not_name(tmp_path):
    files, src, dst = _training_files(tmp_path)
    full = np.arange(16, dtype=np.float32).reshape(4, 4)
    for r in range(2):
        ms.transform_checkpoint_by_rank(r, files, str(tmp_path / f"out{r}.ckpt"), src, dst)
        with CkptFile(tmp_path / f"out{r}.ckpt") as f:
            np.testing.assert_array_equal(f.read("w"), full[2 * r:2 * r + 2])  # resharded to rows
            np.testing.assert_array_equal(f.read("accum.w"), 10 * full[:, 2 * r:2 * r + 2])  # rank r's columns
            assert f.read("global_step").tolist() == [7]
    # Source rank 1's file is needed for the slice rank 1 keeps, even where the destination's own
    # parameters could all be read from rank 0: a clear error, before anything is written.
    write_strategy(src, StrategyFile(layouts={"w": ParamLayout([2], [-1, -1]), "accum.w": ParamLayout([2], [-1, 0])}))
    write_ckpt(files[0], [("w", full), ("accum.w", 10 * full[:, :2])])
    with pytest.raises(ValueError, match="keeps source rank 1's slice of it unchanged"):
        ms.transform_checkpoint_by_rank(1, {0: files[0]}, str(tmp_path / "x.ckpt"), src, dst)
    assert not (tmp_path / "x.ckpt").exists()


@needs_mindspore
def test_transform_matches_mindspore(tmp_path):
    files, src, dst = _training_files(tmp_path)
    for r in range(2):
        os.makedirs(tmp_path / "src" / f"rank_{r}")
        os.link(files[r], tmp_path / "src" / f"rank_{r}" / f"checkpoint_{r}.ckpt")
    _mindspore("""
        import mindspore as ms
        for r in range(2):
            ms.transform_checkpoint_by_rank(r, {0: "rank0.ckpt", 1: "rank1.ckpt"}, f"ms_by_rank{r}.ckpt",
                                            "src.ckpt", "dst.ckpt")
        ms.transform_checkpoints("src", "ms_dst", "c_", "src.ckpt", "dst.ckpt")
    """, tmp_path)
    ms.transform_checkpoints(str(tmp_path / "src"), str(tmp_path / "di_dst"), "c_", src, dst)
    for r in range(2):
        ms.transform_checkpoint_by_rank(r, files, str(tmp_path / f"di_by_rank{r}.ckpt"), src, dst)
        for mine, theirs in ((f"di_by_rank{r}.ckpt", f"ms_by_rank{r}.ckpt"),
                             (f"di_dst/rank_{r}/c_{r}.ckpt", f"ms_dst/rank_{r}/c_{r}.ckpt")):
            with CkptFile(tmp_path / mine) as a, CkptFile(tmp_path / theirs) as b:
                assert sorted(a.names()) == sorted(b.names())
                for n in b.names():
                    np.testing.assert_array_equal(a.read(n), b.read(n), err_msg=f"{mine} {n}")


# ------------------------------------------------------------------------- graph calls
@pytest.fixture
def graph_mode_semi_auto():
    old = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", full_batch=True)
    yield
    ms.reset_auto_parallel_context()
    ms.set_context(mode=old)


def test_graph_mode_cell_call_and_gradients(graph_mode_semi_auto):
    """In GRAPH_MODE a top-level Cell call is a graph (its output an ordinary Tensor); a gradient function
    called at top level records the Cells it calls as plain calls, so the gradients reach the parameters."""
    ms.set_seed(2)
    net = nn.Dense(3, 2)
    x = ms.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    out = net(x)
    assert out.layout is None and out.shape == (2, 2)
    loss, (gw, gb) = ms.value_and_grad(lambda v: ops.reduce_sum(net(v)), None, net.trainable_params())(x)
    assert np.allclose(gw.asnumpy(), np.tile(x.asnumpy().sum(axis=0), (2, 1))) and gb.asnumpy().tolist() == [2.0, 2.0]
    assert np.isclose(float(loss.asnumpy()), out.asnumpy().sum())


def test_graph_mode_export_traces_the_network(graph_mode_semi_auto, tmp_path):
    net = nn.SequentialCell([nn.Dense(3, 2), nn.ReLU()])
    x = ms.Tensor(np.ones((2, 3), np.float32))
    graph = ms.load(ms.export(net, x, file_name=str(tmp_path / "net")))
    ms.reset_auto_parallel_context()
    assert np.allclose(nn.GraphCell(graph)(x).asnumpy(), net(x).asnumpy())
