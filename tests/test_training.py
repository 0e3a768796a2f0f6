"""Training pieces: ModelCheckpoint naming/retention/contents (spec §1.7, §1.9), LossMonitor,
TimeMonitor, callback order, RunContext.request_stop, Model.eval, Model.infer_train_layout and the
errors bad input gives. One 8-rank launch checks per-rank (``integrated_save=False``) files."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import distinfer as ms
import distinfer.dataset as ds
from distinfer import nn, train
from distinfer.errors import StrategyError
from distinfer.launch import run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from seed_net import seed_network  # noqa: E402

OPT_STATE = {"sgd": ("accum", "stat"), "momentum": ("moments",), "adam": ("moment1", "moment2")}


@pytest.fixture(autouse=True)
def _standalone():
    """Every test starts and ends in the default (stand-alone) context."""
    ms.reset_auto_parallel_context()
    yield
    ms.reset_auto_parallel_context()


def _data(rows: int, batch: int, seed: int = 0, features: int = 4, classes: int = 3) -> ds.Dataset:
    rng = np.random.RandomState(seed)
    x = rng.randn(rows, features).astype(np.float32)
    y = rng.randint(0, classes, rows).astype(np.int32)
    return ds.NumpySlicesDataset({"x": x, "y": y}, shuffle=False).batch(batch)


def _model(lr: float = 0.1) -> ms.Model:
    ms.set_seed(3)
    net = nn.Dense(4, 3)
    return ms.Model(net, nn.CrossEntropyLoss(), nn.Momentum(net.trainable_params(), lr, 0.9))


def _ckpt(directory: Path, prefix: str = "ck", **config) -> train.ModelCheckpoint:
    return train.ModelCheckpoint(prefix=prefix, directory=str(directory), config=train.CheckpointConfig(**config))


def _ckpt_files(directory: Path) -> list[str]:
    return sorted(f for f in os.listdir(directory) if f.endswith(".ckpt"))


# --------------------------------------------------------------------------- ModelCheckpoint naming
def test_names_use_step_in_epoch_and_final_save(tmp_path):
    """Saves every 3 steps over 2 epochs of 4: -1_3, -2_2 (step 6), and the final -2_4 at the end."""
    cb = _ckpt(tmp_path, save_checkpoint_steps=3, keep_checkpoint_max=10, append_info=["epoch_num", "step_num"])
    _model().train(2, _data(16, 4), callbacks=[cb])
    assert _ckpt_files(tmp_path) == ["ck-1_3.ckpt", "ck-2_2.ckpt", "ck-2_4.ckpt"]
    mid = ms.load_checkpoint(str(tmp_path / "ck-2_2.ckpt"))
    assert (int(mid["epoch_num"].asnumpy()), int(mid["step_num"].asnumpy())) == (2, 6)  # step_num cumulative
    assert (str(mid["epoch_num"].dtype), mid["epoch_num"].shape) == ("Int64", ())
    assert int(mid["global_step"].asnumpy()[0]) == 6
    assert cb.latest_ckpt_file_name == str(tmp_path / "ck-2_4.ckpt")


def test_no_second_final_save_when_last_step_saved(tmp_path, monkeypatch):
    import distinfer.serialization as ser

    saved = []
    real = ser.save_checkpoint
    monkeypatch.setattr(ser, "save_checkpoint", lambda net, path, **kw: (saved.append(path), real(net, path, **kw)))
    _model().train(2, _data(16, 4), callbacks=[_ckpt(tmp_path, save_checkpoint_steps=4, keep_checkpoint_max=5)])
    assert [os.path.basename(p) for p in saved] == ["ck-1_4.ckpt", "ck-2_4.ckpt"]


@pytest.mark.parametrize("existing, expected", [
    ([], "ck"),
    (["ck-1_1.ckpt"], "ck_1"),
    (["ck-1_1.ckpt", "ck_1-1_1.ckpt"], "ck_2"),
    (["ck_3-2_5.ckpt"], "ck_4"),  # MindSpore: one more than the largest suffix, not the first free one
    (["ck-1_1.txt", "ckx-1_1.ckpt", "ck_a-1_1.ckpt", "ck-1_1_breakpoint.ckpt", "other-1_1.ckpt"], "ck"),
])
def test_prefix_suffix_when_files_exist(tmp_path, existing, expected):
    for name in existing:
        (tmp_path / name).write_bytes(b"")
    _model().train(1, _data(4, 4), callbacks=[_ckpt(tmp_path, save_checkpoint_steps=1)])
    assert f"{expected}-1_1.ckpt" in _ckpt_files(tmp_path)


def test_keep_checkpoint_max_keeps_newest(tmp_path):
    _model().train(1, _data(20, 4), callbacks=[_ckpt(tmp_path, save_checkpoint_steps=1, keep_checkpoint_max=2)])
    assert _ckpt_files(tmp_path) == ["ck-1_4.ckpt", "ck-1_5.ckpt"]


def test_retention_deletes_oldest_by_mtime_not_name(tmp_path):
    cb = _ckpt(tmp_path, save_checkpoint_steps=1, keep_checkpoint_max=2)
    for name, age in [("ck-1_10.ckpt", 0), ("ck-1_2.ckpt", 100), ("ck-x.ckpt", 500), ("ck_1-1_1.ckpt", 900)]:
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (1e9 - age, 1e9 - age))
    cb._retain()
    # ck-1_2 is the oldest counted file; names with letters and other prefixes are not counted.
    assert _ckpt_files(tmp_path) == ["ck-1_10.ckpt", "ck-x.ckpt", "ck_1-1_1.ckpt"]


# --------------------------------------------------------------------------- MindSpore's training checkpoints
def _fixture_run(kind: str, ms_fixtures: Path, directory: Path) -> None:
    """The fixtures README's set-up; its random data cannot be reproduced, so only the structure and
    the data-independent scalars are compared."""
    net = seed_network(shard=False)
    full = np.load(ms_fixtures / "distributed" / "seed_8dev" / "full.npz")
    for name, p in net.parameters_and_names():
        p.set_data(ms.Tensor(full[name]))
    for p in list(net.layer1.get_parameters()) + list(net.layer2.get_parameters()):
        p.requires_grad = False
    params = net.trainable_params()
    opt = {"sgd": lambda: nn.SGD(params, 0.01), "momentum": lambda: nn.Momentum(params, 0.01, 0.9),
           "adam": lambda: nn.Adam(params, 1e-3)}[kind]()
    rng = np.random.RandomState(0)
    data = ds.NumpySlicesDataset({"image": rng.rand(64, 1, 28, 28).astype(np.float32),
                                  "label": rng.randint(0, 10, 64).astype(np.int32)}, shuffle=False).batch(32)
    cb = train.ModelCheckpoint(prefix="checkpoint", directory=str(directory), config=train.CheckpointConfig(
        save_checkpoint_steps=2, keep_checkpoint_max=1, append_info=["epoch_num", "step_num"]))
    ms.Model(net, nn.CrossEntropyLoss(), opt).train(2, data, callbacks=[cb])


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
def test_training_checkpoint_matches_mindspore(kind, ms_fixtures, tmp_path):
    _fixture_run(kind, ms_fixtures, tmp_path)
    assert _ckpt_files(tmp_path) == ["checkpoint-2_2.ckpt"]
    got = ms.load_checkpoint(str(tmp_path / "checkpoint-2_2.ckpt"))
    want = ms.load_checkpoint(str(ms_fixtures / "ckpt" / f"train_{kind}.ckpt"))
    assert set(got) == set(want)
    assert {f"{s}.layer3.{w}" for s in OPT_STATE[kind] for w in ("weight", "bias")} <= set(got)
    for name, ref in want.items():
        assert (got[name].dtype, tuple(got[name].shape)) == (ref.dtype, tuple(ref.shape)), name
        if ref.size == 1:  # global_step, learning_rate, momentum, beta powers, epoch_num, step_num
            assert np.array_equal(got[name].asnumpy(), ref.asnumpy()), (name, got[name], ref)
    for name in ("layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"):  # frozen
        np.testing.assert_array_equal(got[name].asnumpy(), want[name].asnumpy())
    if kind == "sgd":  # momentum 0: MindSpore's SGD never touches accum (0) or stat (1)
        for w in ("weight", "bias"):
            np.testing.assert_array_equal(got[f"accum.layer3.{w}"].asnumpy(), want[f"accum.layer3.{w}"].asnumpy())
            np.testing.assert_array_equal(got[f"stat.layer3.{w}"].asnumpy(), want[f"stat.layer3.{w}"].asnumpy())


# The update rules as MindSpore documents them, in float64 numpy: (make optimizer, numpy step).
# Each numpy step takes (weight, grad, state dict, step number t from 1) and returns the new weight.
def _np_sgd(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, lr=0.1):
    def step(w, g, st, t):
        g = g + weight_decay * w
        if momentum > 0:
            st["accum"] = g if t == 1 else momentum * st["accum"] + (1 - dampening) * g
            g = g + momentum * st["accum"] if nesterov else st["accum"]
        return w - lr * g
    return step


def _np_momentum(momentum, use_nesterov=False, weight_decay=0.0, lr=0.1):
    def step(w, g, st, t):
        g = g + weight_decay * w
        st["m"] = momentum * st.get("m", 0.0) + g
        return w - lr * (g + momentum * st["m"] if use_nesterov else st["m"])
    return step


def _np_adam(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, lr=0.1):
    def step(w, g, st, t):
        g = g + weight_decay * w
        st["m"] = beta1 * st.get("m", 0.0) + (1 - beta1) * g
        st["v"] = beta2 * st.get("v", 0.0) + (1 - beta2) * g * g
        # beta1_power / beta2_power are Float32 parameters in MindSpore: beta ** t rounded to float32
        # (1 - 0.999 in float32 is 1.3e-5 off, which moves every first step by ~6e-6 relative).
        b1p, b2p = float(np.float32(beta1) ** t), float(np.float32(beta2) ** t)
        return w - lr * np.sqrt(1 - b2p) / (1 - b1p) * st["m"] / (np.sqrt(st["v"]) + eps)
    return step


def _np_adam_weight_decay(beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0, lr=0.1):
    def step(w, g, st, t):  # decoupled decay, no bias correction
        st["m"] = beta1 * st.get("m", 0.0) + (1 - beta1) * g
        st["v"] = beta2 * st.get("v", 0.0) + (1 - beta2) * g * g
        return w - lr * (st["m"] / (np.sqrt(st["v"]) + eps) + weight_decay * w)
    return step


OPTIMIZER_RULES = {
    "sgd": (lambda p: nn.SGD(p, 0.1), _np_sgd()),
    "sgd_momentum_dampening_decay": (lambda p: nn.SGD(p, 0.1, momentum=0.9, dampening=0.3, weight_decay=0.01),
                                     _np_sgd(0.9, 0.3, 0.01)),
    "sgd_nesterov": (lambda p: nn.SGD(p, 0.1, momentum=0.8, nesterov=True), _np_sgd(0.8, nesterov=True)),
    "momentum": (lambda p: nn.Momentum(p, 0.1, 0.9), _np_momentum(0.9)),
    "momentum_nesterov_decay": (lambda p: nn.Momentum(p, 0.1, 0.9, weight_decay=0.01, use_nesterov=True),
                                _np_momentum(0.9, True, 0.01)),
    "adam": (lambda p: nn.Adam(p, 0.1), _np_adam()),
    "adam_decay": (lambda p: nn.Adam(p, 0.05, beta1=0.8, beta2=0.99, weight_decay=0.01),
                   _np_adam(0.8, 0.99, weight_decay=0.01, lr=0.05)),
    "adam_weight_decay": (lambda p: nn.AdamWeightDecay(p, 0.1, weight_decay=0.01), _np_adam_weight_decay(weight_decay=0.01)),
}


@pytest.mark.parametrize("kind", sorted(OPTIMIZER_RULES))
def test_optimizer_steps_match_numpy(kind):
    """Three training steps of Dense + CrossEntropyLoss against numpy's gradient and MindSpore's
    documented update rule: the weights the optimizers produce, not just their state names."""
    make, np_step = OPTIMIZER_RULES[kind]
    ms.set_seed(3)
    net = nn.Dense(4, 3)
    params = {"weight": net.weight.asnumpy().astype(np.float64), "bias": net.bias.asnumpy().astype(np.float64)}
    data = _data(24, 8, seed=4)
    ms.Model(net, nn.CrossEntropyLoss(), make(net.trainable_params())).train(1, data)
    state = {k: {} for k in params}
    for t, (x, y) in enumerate(data.create_tuple_iterator(output_numpy=True), start=1):
        z = x.astype(np.float64) @ params["weight"].T + params["bias"]
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dz = (p - np.eye(3)[y]) / len(y)  # d(mean cross entropy)/d(logits)
        grads = {"weight": dz.T @ x, "bias": dz.sum(0)}
        params = {k: np_step(params[k], grads[k], state[k], t) for k in params}
    assert t == 3
    np.testing.assert_allclose(net.weight.asnumpy(), params["weight"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.bias.asnumpy(), params["bias"], rtol=1e-5, atol=1e-6)


def test_sharded_training_checkpoints_on_8_ranks(ms_fixtures, tmp_path):
    """Per-rank files (integrated_save=False) hold each rank's slices and optimizer state."""
    script = ROOT / "tests" / "mpi" / "train_ckpt.py"
    proc = run(8, [str(script), str(ms_fixtures), str(tmp_path)], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "DONE 8" in proc.stdout, out[-3000:]
    results = re.findall(r"^(?:PASS|FAIL) .*$", proc.stdout, flags=re.M)
    assert len(results) == 3 and all(r.startswith("PASS") for r in results), "\n".join(results)
    for kind in OPT_STATE:
        assert sorted(os.listdir(tmp_path / kind)) == [f"rank_{r}" for r in range(8)]


# --------------------------------------------------------------------------- monitors and callbacks
_LOSS_LINE = re.compile(r"^epoch: (\d+) step: (\d+), loss is (\S+)$")


def test_loss_monitor_format(capsys):
    monitor = train.LossMonitor(2)
    _model().train(2, _data(12, 4), callbacks=[monitor])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch: ")]
    parsed = [_LOSS_LINE.match(ln).groups() for ln in lines]
    # cumulative steps 2, 4, 6 are printed; the step is counted within the epoch (3 steps each)
    assert [(e, s) for e, s, _ in parsed] == [("1", "2"), ("2", "1"), ("2", "3")]
    assert [float(v) for _, _, v in parsed] == [monitor.losses[i] for i in (1, 3, 5)]
    assert len(monitor.losses) == 6 and all(np.isfinite(monitor.losses))


def test_loss_monitor_rejects_bad_argument_and_nan_loss():
    with pytest.raises(ValueError, match="per_print_times"):
        train.LossMonitor(-1)
    data = ds.NumpySlicesDataset({"x": np.full((4, 4), np.nan, np.float32), "y": np.zeros(4, np.int32)},
                                 shuffle=False).batch(4)
    with pytest.raises(ValueError, match=r"epoch: 1 step: 1\. Invalid loss"):
        _model().train(1, data, callbacks=[train.LossMonitor()])


def test_time_monitor_format(capsys):
    _model().train(2, _data(8, 4), callbacks=[train.TimeMonitor()])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch time")]
    assert len(lines) == 2
    assert all(re.fullmatch(r"epoch time: \d+\.\d{3} ms, per step time: \d+\.\d{3} ms", ln) for ln in lines)


class _Recorder(train.Callback):
    """Records every hook; old-style names (step_end ...) are reached through the on_train_* hooks."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[str] = []
        self.stop_at = stop_at
        self.entered = self.exited = False

    def __enter__(self):
        self.entered = True
        return self

    def __exit__(self, *err):
        self.exited = True

    def begin(self, rc):
        self.events.append("begin")

    def on_train_epoch_begin(self, rc):
        self.events.append(f"epoch_begin {rc.original_args().cur_epoch_num}")

    def step_begin(self, rc):
        self.events.append("step_begin")

    def step_end(self, rc):
        cb = rc.original_args()
        self.events.append(f"step_end {cb.cur_step_num}")
        if self.stop_at == cb.cur_step_num:
            rc.request_stop()

    def on_train_epoch_end(self, rc):
        self.events.append(f"epoch_end {rc.original_args().cur_epoch_num}")

    def end(self, rc):
        self.events.append("end")


def test_callback_order_and_old_hook_names():
    rec = _Recorder()
    _model().train(2, _data(8, 4), callbacks=rec)
    assert rec.events == ["begin", "epoch_begin 1", "step_begin", "step_end 1", "step_begin", "step_end 2",
                          "epoch_end 1", "epoch_begin 2", "step_begin", "step_end 3", "step_begin", "step_end 4",
                          "epoch_end 2", "end"]
    assert rec.entered and rec.exited


def test_callbacks_run_in_list_order():
    order = []

    class Tag(train.Callback):
        def __init__(self, tag):
            self.tag = tag

        def on_train_step_end(self, rc):
            order.append(self.tag)

    _model().train(1, _data(8, 4), callbacks=[Tag("a"), Tag("b")])
    assert order == ["a", "b", "a", "b"]


def test_request_stop_ends_training_with_final_checkpoint(tmp_path):
    rec = _Recorder(stop_at=3)
    model = _model()
    model.train(3, _data(8, 4), callbacks=[rec, _ckpt(tmp_path, save_checkpoint_steps=100)])
    assert rec.events[-3:] == ["step_end 3", "epoch_end 2", "end"]
    assert _ckpt_files(tmp_path) == ["ck-2_1.ckpt"]
    assert int(model._optimizer.global_step.asnumpy()[0]) == 3


def test_callbacks_must_be_callbacks():
    with pytest.raises(TypeError, match="item 1 is function"):
        _model().train(1, _data(4, 4), callbacks=[train.LossMonitor(), lambda rc: None])


# --------------------------------------------------------------------------- eval and layouts
def _numpy_metrics(net: nn.Dense, data: ds.Dataset) -> tuple[float, float]:
    w, b = net.weight.asnumpy(), net.bias.asnumpy()
    correct = total = 0
    losses = []
    for x, y in data.create_tuple_iterator(output_numpy=True):
        z = x @ w.T + b if w.shape == (3, 4) else x @ w + b
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        losses.append(-logp[np.arange(len(y)), y].mean())
        correct += int((z.argmax(1) == y).sum())
        total += len(y)
    return correct / total, float(np.mean(losses))


def test_eval_accuracy_and_loss():
    model = _model()
    model.train(2, _data(32, 8))
    net = model.predict_network
    valid = _data(20, 8, seed=1)
    acc, loss = _numpy_metrics(net, valid)
    res = ms.Model(net, nn.CrossEntropyLoss(), metrics={"accuracy", "loss"}).eval(valid)
    assert set(res) == {"accuracy", "loss"}
    assert res["accuracy"] == pytest.approx(acc) and res["loss"] == pytest.approx(loss, rel=1e-5)
    assert ms.Model(net, nn.CrossEntropyLoss(), metrics={"accuracy"}).eval(valid) == {"accuracy": pytest.approx(acc)}
    with pytest.raises(ValueError, match="unsupported metric 'f1'"):
        ms.Model(net, nn.CrossEntropyLoss(), metrics={"f1"}).eval(valid)


def _seed_data(batch: int, label_dtype=np.int32, label_shape=None) -> ds.Dataset:
    y = np.zeros(label_shape or (batch,), label_dtype)
    return ds.NumpySlicesDataset({"image": np.zeros((batch, 1, 28, 28), np.float32), "label": y},
                                 shuffle=False).batch(batch)


def test_infer_train_layout_covers_params_and_optimizer_state():
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=8)
    net = seed_network()
    model = ms.Model(net, nn.CrossEntropyLoss(), nn.Momentum(net.trainable_params(), 0.01, 0.9))
    layouts = model.infer_train_layout(_seed_data(32))
    names = [f"layer{i}.{w}" for i in (1, 2, 3) for w in ("weight", "bias")]
    assert set(layouts) == set(names) | {f"moments.{n}" for n in names}
    assert all(len(v) == 12 for v in layouts.values())
    assert layouts["layer1.weight"][:3] == [[2, 2, 2], [-1, 1], [784, 256]]
    assert layouts["layer3.weight"][:3] == [[2, 2, 2], [1, -1], [256, 10]]
    assert layouts["layer2.weight"][:3] == [[8], [-1, -1], [512, 512]]
    for n in names:
        assert layouts[f"moments.{n}"] == layouts[n]
    assert net.layer1.weight.shape == (784, 256)  # the net's parameters are sliced in place
    assert net.parameter_layout_dict["layer3.weight"] == layouts["layer3.weight"]


def test_infer_train_layout_needs_semi_auto():
    net = nn.Dense(4, 3)
    with pytest.raises(RuntimeError, match="semi_auto_parallel"):
        ms.Model(net, nn.CrossEntropyLoss(), nn.SGD(net.trainable_params())).infer_train_layout(_data(4, 4))


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("batch, layer1, bad", [(31, ((2, 1), (1, 2)), "(31, 784)"),
                                                (30, ((4, 1), (1, 2)), "(30, 784)")])
def test_batch_not_divisible_by_strategy(batch, layer1, bad):
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=8, full_batch=True)
    net = seed_network()
    net.layer1.matmul.shard(layer1)
    model = ms.Model(net, nn.CrossEntropyLoss(), nn.SGD(net.trainable_params(), 0.01))
    with pytest.raises(StrategyError) as info:
        model.infer_train_layout(_seed_data(batch))
    msg = str(info.value)
    assert "MatMul" in msg and bad in msg and f"split {layer1[0][0]} ways" in msg and str(layer1) in msg


def test_missing_data_path_names_the_folder(tmp_path):
    missing = tmp_path / "no_such_mnist"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        ds.MnistDataset(str(missing))


@pytest.mark.parametrize("dtype, shape, error, words", [
    (np.float32, (8,), TypeError, ("Float32", "(8,)")),
    (np.uint32, (8,), TypeError, ("UInt32", "(8,)")),
    (np.int32, (8, 1), ValueError, ("(8, 1)", "(8,)")),
])
def test_label_the_loss_cannot_take(dtype, shape, error, words):
    net = seed_network(shard=False)
    model = ms.Model(net, nn.CrossEntropyLoss(), nn.SGD(net.trainable_params(), 0.01))
    with pytest.raises(error) as info:
        model.train(1, _seed_data(8, dtype, shape))
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize("make", [lambda: nn.SGD([], 0.1), lambda: nn.Momentum([], 0.1, 0.9),
                                  lambda: nn.Adam([]), lambda: nn.AdamWeightDecay([])])
def test_optimizer_with_no_parameters(make):
    with pytest.raises(ValueError, match="parameter list is empty"):
        make()


def test_frozen_network_has_no_trainable_parameters():
    net = nn.Dense(4, 3)
    for p in net.get_parameters():
        p.requires_grad = False
    with pytest.raises(ValueError, match="Momentum: the parameter list is empty"):
        nn.Momentum(net.trainable_params(), 0.1, 0.9)


@pytest.mark.parametrize("epoch, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_epoch(epoch, error):
    with pytest.raises(error, match="'epoch'"):
        _model().train(epoch, _data(4, 4))
    with pytest.raises(ValueError, match="initial_epoch=2"):
        _model().train(2, _data(4, 4), initial_epoch=2)


def test_checkpoint_config_rejects_bad_values():
    with pytest.raises(ValueError, match="keep_checkpoint_max"):
        train.CheckpointConfig(keep_checkpoint_max=0)
    with pytest.raises(ValueError, match="save_checkpoint_steps"):
        train.CheckpointConfig(save_checkpoint_steps=0)
    with pytest.raises(ValueError, match="append_info"):
        train.CheckpointConfig(append_info=["lr"])


@pytest.mark.parametrize("make", [
    lambda ps: nn.Momentum(ps, learning_rate=0.1, momentum=0.0, weight_decay=0.5),
    lambda ps: nn.SGD(ps, learning_rate=0.1, weight_decay=0.5),
    lambda ps: nn.AdamWeightDecay(ps, learning_rate=0.1, weight_decay=0.5),
])
def test_weight_decay_skips_gamma_and_beta(make):
    """MindSpore's default decay filter: parameters named *gamma*/*beta* (norm layers) are not decayed."""
    ln, dense = nn.LayerNorm((3,)), nn.Dense(3, 3, weight_init="ones", bias_init="zeros")
    ln.beta.set_data(ms.Tensor(np.full(3, 2.0, np.float32)))
    params = ln.trainable_params() + dense.trainable_params()
    opt = make(params)
    assert opt.decay_flags == (False, False, True, True)
    opt(tuple(ms.Tensor(np.zeros(p.shape, np.float32)) for p in params))  # zero gradients: decay alone moves
    np.testing.assert_array_equal(ln.gamma.asnumpy(), np.ones(3, np.float32))
    np.testing.assert_array_equal(ln.beta.asnumpy(), np.full(3, 2.0, np.float32))
    assert (dense.weight.asnumpy() < 1).all()
