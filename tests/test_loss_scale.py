"""Loss scaling and ``amp_level``: managers, the update rule, skipped steps, Model integration."""
from __future__ import annotations

import numpy as np
import pytest

import distinfer as ms
import distinfer.dataset as ds
from distinfer import context, nn

from seed_net import Network  # noqa: E402  (examples/ is on sys.path, see conftest)


@pytest.fixture(autouse=True)
def _reset():
    context.reset_auto_parallel_context()
    yield
    context.reset_auto_parallel_context()


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    return x, y


def _dense_step(cls, **kw):
    ms.set_seed(5)
    net = nn.WithLossCell(nn.Dense(4, 3), nn.MSELoss())
    return net, cls(net, nn.SGD(net.trainable_params(), 0.1), **kw)


def test_dynamic_rule_matches_the_manager_over_a_long_run():
    """The update cell and the manager's own ``update_loss_scale`` follow one rule; checked by hand."""
    flags = [bool(b) for b in np.random.default_rng(1).random(60) < 0.2]
    cell = nn.DynamicLossScaleUpdateCell(2.0 ** 10, 2, 3)
    scale = ms.Parameter(ms.Tensor(np.array(2.0 ** 10, np.float32)), name="s")
    manager = ms.DynamicLossScaleManager(2 ** 10, 2, 3)
    want, last, cur = 2.0 ** 10, 0, 1
    for f in flags:
        cell(scale, f)
        manager.update_loss_scale(f)
        grow = cur - last >= 3
        want = max(want / 2, 1.0) if f else want * 2 if grow else want
        last = cur if f or grow else last
        cur += 1
        assert float(scale.asnumpy()) == manager.get_loss_scale() == want
    assert int(cell.cur_iter.asnumpy()) == len(flags) + 1


def test_scaled_step_equals_the_plain_step():
    """Seeding the loss gradient with S and dividing by S changes nothing (S a power of two)."""
    x = ms.Tensor(np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32))
    y = ms.Tensor(np.random.default_rng(3).standard_normal((5, 3)).astype(np.float32))
    plain_net, plain = _dense_step(nn.TrainOneStepCell)
    scaled_net, scaled = _dense_step(nn.TrainOneStepWithLossScaleCell,
                                     scale_sense=ms.Tensor(np.array(2.0 ** 12, np.float32)))
    for _ in range(3):
        want = plain(x, y)
        loss, overflow, scale = scaled(x, y)
        assert float(loss.asnumpy()) == float(want.asnumpy()) and not bool(overflow.asnumpy())
        assert float(scale.asnumpy()) == 4096.0
    for a, b in zip(plain_net.trainable_params(), scaled_net.trainable_params()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_overflowing_step_is_skipped_and_the_scale_falls():
    x = ms.Tensor(np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32))
    y = ms.Tensor(np.full((5, 3), 1e20, np.float32))  # the scaled loss gradient (~1e49) overflows float32
    net, step = _dense_step(nn.TrainOneStepWithLossScaleCell,
                            scale_sense=nn.DynamicLossScaleUpdateCell(2.0 ** 100, 2, 100))
    before = [p.asnumpy().copy() for p in net.trainable_params()]
    loss, overflow, scale = step(x, y)
    assert bool(overflow.asnumpy()) and float(scale.asnumpy()) == 2.0 ** 100  # the scale the step used
    assert float(step.scale_sense.asnumpy()) == 2.0 ** 99  # and the next one
    for p, b in zip(net.trainable_params(), before):
        np.testing.assert_array_equal(p.asnumpy(), b)
    step.set_sense_scale(ms.Tensor(np.array(8.0, np.float32)))
    assert float(step.scale_sense.asnumpy()) == 8.0


def test_scale_sense_is_checked():
    net = nn.WithLossCell(nn.Dense(4, 3), nn.MSELoss())
    opt = nn.SGD(net.trainable_params(), 0.1)
    with pytest.raises(ValueError, match=r"shape \(\) or \(1,\)"):
        nn.TrainOneStepWithLossScaleCell(net, opt, ms.Tensor(np.ones(2, np.float32)))
    with pytest.raises(TypeError, match="Cell or a Tensor"):
        nn.TrainOneStepWithLossScaleCell(net, opt, 2.0)
    with pytest.raises(ValueError, match="at least 1"):
        ms.FixedLossScaleManager(0.5)
    with pytest.raises(ValueError, match="scale_factor"):
        ms.DynamicLossScaleManager(scale_factor=1)


def _model(level, **kw):
    ms.set_seed(7)
    net = Network()
    opt = nn.Momentum(net.trainable_params(), 0.01, 0.9, loss_scale=kw.pop("opt_loss_scale", 1.0))
    return net, ms.Model(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"), opt,
                         amp_level=level, **kw)


class _Overflows(ms.train.Callback):
    """Records each step's overflow flag (a loss-scaled step returns ``(loss, overflow, scale)``)."""

    def __init__(self):
        self.flags = []

    def on_train_step_end(self, run_context):
        out = run_context.original_args().net_outputs
        self.flags.append(bool(out[1].asnumpy()) if isinstance(out, tuple) else False)


def _train(model, steps=16, skip=0):
    x, y = _data(8 * steps)
    record = _Overflows()
    model.train(1, ds.NumpySlicesDataset({"x": x[8 * skip:], "y": y[8 * skip:]}, shuffle=False).batch(8),
                callbacks=[record])
    return record.flags


@pytest.mark.parametrize("level", ["O1", "O2", "O3"])
def test_amp_level_trains_the_network_in_float16(level):
    """float16 training follows float32 training on the steps it takes. O2 starts at a loss scale of
    2**24, so its first steps overflow float16 and are skipped until the scale has fallen."""
    net, model = _model(level)
    flags = _train(model)
    step = model.train_network
    assert net._mixed_precision == ("O1" if level == "O1" else ms.float16)
    assert all(p.dtype == ms.float32 for p in net.trainable_params())
    if level == "O2":
        assert isinstance(step, nn.TrainOneStepWithLossScaleCell)
        skipped = flags.index(False)
        assert skipped > 0 and not any(flags[skipped:]), flags
        assert float(step.scale_sense.asnumpy()) == 2.0 ** (24 - skipped)
    else:
        assert type(step) is nn.TrainOneStepCell and not any(flags)
        skipped = 0
    ref_net, ref = _model("O0")
    _train(ref, skip=skipped)  # float32 on the batches the float16 run stepped on
    ms.set_seed(7)
    start = Network()  # the same seed as _model's: the initial weights
    for a, b, w0 in zip(net.trainable_params(), ref_net.trainable_params(), start.trainable_params()):
        moved = np.linalg.norm(b.asnumpy() - w0.init_data().asnumpy())
        assert moved > 0
        assert np.linalg.norm(a.asnumpy() - b.asnumpy()) <= 0.05 * moved, (a.name, np.linalg.norm(a.asnumpy() - b.asnumpy()) / moved)


def test_fixed_scale_without_overflow_checks_needs_the_optimizer_scale():
    """``FixedLossScaleManager(S, drop_overflow_update=False)`` seeds the loss gradient with S; an
    optimizer with ``loss_scale=S`` divides it out, so training equals unscaled training."""
    net, model = _model("O0", loss_scale_manager=ms.FixedLossScaleManager(1024.0, drop_overflow_update=False),
                        opt_loss_scale=1024.0)
    _train(model)
    assert type(model.train_network) is nn.TrainOneStepCell and model.train_network.sens == 1024.0
    ref_net, ref = _model("O0")
    _train(ref)
    for a, b in zip(net.trainable_params(), ref_net.trainable_params()):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-7)


def test_amp_needs_an_optimizer():
    with pytest.raises(ValueError, match="optimizer"):
        ms.Model(nn.Dense(2, 2), amp_level="O2")
    ms.Model(nn.Dense(2, 2), amp_level="auto")  # "auto" on CPU: no mixed precision


@pytest.mark.parametrize("level,keep,want", [("O2", None, ms.float32), ("O3", None, ms.float16),
                                             ("O2", False, ms.float16), ("O3", True, ms.float32)])
def test_norm_layers_stay_float32_at_O2(level, keep, want):
    """MindSpore's amp black list: O2 keeps LayerNorm in float32 (keep_batchnorm_fp32), O3 does not."""
    net = nn.SequentialCell([nn.Dense(4, 4), nn.LayerNorm((4,)), nn.Dense(4, 2)])
    ms.amp.build_train_network(net, nn.SGD(net.trainable_params(), 0.1), nn.MSELoss(), level=level,
                               keep_batchnorm_fp32=keep)
    assert net[0]._mixed_precision == ms.float16 and net[1]._mixed_precision == want
    out = net[1](ms.Tensor(np.ones((1, 4), np.float16)))
    assert out.dtype == want


def test_O1_runs_the_white_list_in_float16():
    """O1: MatMul and ReLU ops in float16 with float32 outputs, the rest (Add) in float32; checked
    against numpy rounding at exactly those points."""
    ms.set_seed(3)
    net = Network()
    ms.amp.build_train_network(net, nn.SGD(net.trainable_params(), 0.1), None, level="O1")
    x = _data(4)[0]
    got = net(ms.Tensor(x))
    assert got.dtype == ms.float32
    p = {k: v.asnumpy() for k, v in net.parameters_and_names()}
    h = x.reshape(4, -1)
    for i in (1, 2, 3):
        h16 = h.astype(np.float16).astype(np.float32), p[f"layer{i}.weight"].astype(np.float16).astype(np.float32)
        h = np.matmul(*h16).astype(np.float16).astype(np.float32)  # float16 operands, float32 accumulation
        h = h + p[f"layer{i}.bias"]
        if i < 3:
            h = np.maximum(h.astype(np.float16), np.float16(0)).astype(np.float32)
    np.testing.assert_allclose(got.asnumpy(), h, rtol=0, atol=1e-6 * np.abs(h).max())
    assert 0 < np.abs(got.asnumpy() - ms.Model(_model("O0")[0]).predict(ms.Tensor(x)).asnumpy()).max()


def test_O1_runs_dense_cells_wholly_in_float16():
    ms.set_seed(4)
    net = nn.SequentialCell([nn.Dense(4, 3), nn.Sigmoid()])
    ms.amp.build_train_network(net, nn.SGD(net.trainable_params(), 0.1), nn.MSELoss(), level="O1")
    x = np.random.default_rng(5).standard_normal((2, 4)).astype(np.float32)
    dense = net[0](ms.Tensor(x))
    assert dense.dtype == ms.float32  # cast back at the cell's output
    w, b = net[0].weight.asnumpy().astype(np.float16), net[0].bias.asnumpy().astype(np.float16)
    mm = np.matmul(x.astype(np.float16).astype(np.float32), w.T.astype(np.float32)).astype(np.float16)
    want = (mm + b).astype(np.float32)  # MatMul (float32 accumulation) and BiasAdd in float16
    np.testing.assert_array_equal(dense.asnumpy(), want)
    out = net(ms.Tensor(x))  # Sigmoid is not on the list: float32
    np.testing.assert_allclose(out.asnumpy(), 1 / (1 + np.exp(-want)), rtol=1e-6)
