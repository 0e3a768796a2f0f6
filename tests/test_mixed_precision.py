"""``Cell.to_float``: float16 and bfloat16 cells against numpy references, float32 sub-cells, gradients."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import distinfer as ms
from distinfer import context, nn, ops

from seed_net import Network  # noqa: E402  (examples/ is on sys.path, see conftest)


@pytest.fixture(autouse=True)
def _reset():
    context.reset_auto_parallel_context()
    yield
    context.reset_auto_parallel_context()


def _seed_net():
    ms.set_seed(11)
    return Network()


def _x(batch=4):
    return np.random.default_rng(2).standard_normal((batch, 1, 28, 28)).astype(np.float32)


# per dtype: numpy type, output tolerance (of the largest output), distance from the float32 network,
# and the norm-wise gradient error (bfloat16 keeps 8 mantissa bits, float16 11)
LOW = {"float16": (np.float16, 4e-3, 1e-2, 2e-2), "bfloat16": (ml_dtypes.bfloat16, 1.6e-2, 4e-2, 8e-2)}


def _numpy_low(net, x, dt=np.float16, layers=3):
    """The seed network with every op input and output rounded to ``dt``, as ``to_float(dt)`` runs it
    (matmuls accumulate in float32, as low-precision matrix units do)."""
    p = {k: v.asnumpy().astype(dt) for k, v in net.parameters_and_names()}
    h = x.reshape(len(x), -1).astype(dt)
    for i, name in enumerate(("layer1", "layer2", "layer3")[:layers]):
        mm = np.matmul(h.astype(np.float32), p[f"{name}.weight"].astype(np.float32)).astype(dt)
        h = (mm + p[f"{name}.bias"]).astype(dt)
        h = np.maximum(h, dt(0)) if i < 2 else h
    return h


@pytest.mark.parametrize("name", sorted(LOW))
def test_low_precision_network_matches_numpy(name):
    dt, tol, far, _ = LOW[name]
    net, x = _seed_net(), _x()
    want32 = ms.Model(net).predict(ms.Tensor(x)).asnumpy()
    got = ms.Model(net.to_float(getattr(ms, name))).predict(ms.Tensor(x)).asnumpy()
    assert got.dtype == dt
    want = _numpy_low(net, x, dt).astype(np.float32)
    # The outputs are ~0.03 at most: the tolerance is a few ulps of the largest.
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=tol * np.abs(want).max())
    # low precision is low precision: close to the float32 network, not equal to it
    assert 0 < np.abs(got.astype(np.float32) - want32).max() <= far * np.abs(want32).max()
    assert all(p.dtype == ms.float32 for p in net.get_parameters())  # parameters are cast per use, not stored


def test_sub_cell_back_to_float32():
    """Layers 1-2 in float16, layer 3 (set back to float32) in float32 on their float16 output."""
    net, x = _seed_net(), _x()
    net.to_float(ms.float16)
    net.layer3.to_float(ms.float32)
    got = net(ms.Tensor(x))
    assert got.dtype == ms.float32
    p = {k: v.asnumpy() for k, v in net.parameters_and_names()}
    h = _numpy_low(net, x, np.float16, layers=2)
    want = h.astype(np.float32) @ p["layer3.weight"] + p["layer3.bias"]
    np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


@pytest.mark.parametrize("name", sorted(LOW))
def test_low_precision_gradients_reach_float32_parameters(name):
    dt, _, _, grad_tol = LOW[name]
    net, x = _seed_net(), _x(8)
    y = ms.Tensor(np.random.default_rng(3).standard_normal((8, 10)).astype(np.float32))
    params = net.trainable_params()
    loss32, g32 = ms.value_and_grad(nn.WithLossCell(net, nn.MSELoss()), None, params)(ms.Tensor(x), y)
    net.to_float(getattr(ms, name))
    loss16, g16 = ms.value_and_grad(nn.WithLossCell(net, nn.MSELoss()), None, params)(ms.Tensor(x), y)
    # The outputs (~0.03) barely move an MSE against N(0, 1) targets -- all-zero outputs give a loss
    # within 2e-3 of the right one -- so the loss is checked tightly against numpy's forward.
    want16 = np.mean((_numpy_low(net, x, dt).astype(np.float64) - y.asnumpy()) ** 2)
    assert float(loss16.asnumpy()) == pytest.approx(want16, rel=1e-6, abs=0)
    assert float(loss16.asnumpy()) != pytest.approx(np.mean(y.asnumpy().astype(np.float64) ** 2), rel=1e-4)
    w = {k: v.asnumpy().astype(np.float64) for k, v in net.parameters_and_names()}
    h = x.reshape(len(x), -1).astype(np.float64)
    for i in (1, 2, 3):
        h = h @ w[f"layer{i}.weight"] + w[f"layer{i}.bias"]
        h = np.maximum(h, 0) if i < 3 else h
    assert float(loss32.asnumpy()) == pytest.approx(np.mean((h - y.asnumpy()) ** 2), rel=1e-6, abs=0)
    for p, a, b in zip(params, g32, g16):
        assert b.dtype == ms.float32, p.name
        # low-precision rounding (and ReLUs flipping at ~0) perturb single elements; the whole stays close
        err = np.linalg.norm(b.asnumpy() - a.asnumpy()) / np.linalg.norm(a.asnumpy())
        assert err <= grad_tol, (p.name, err)


def test_float16_network_exports_and_reloads(tmp_path):
    net, x = _seed_net(), ms.Tensor(_x(2))
    net.to_float(ms.float16)
    want = ms.Model(net).predict(x).asnumpy()
    path = ms.export(net, x, file_name=str(tmp_path / "fp16"))
    np.testing.assert_array_equal(nn.GraphCell(ms.load(path))(x).asnumpy(), want)


def test_to_float_refuses_other_types():
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        nn.Dense(2, 2).to_float(ms.int32)
    cell = nn.Dense(2, 2)
    assert cell.to_float(ms.float32) is cell
    out = cell(ms.Tensor(np.ones((1, 2), np.float16)))  # a float32 cell casts float16 inputs up
    assert out.dtype == ms.float32
    assert ops.Cast()(out, ms.float16).dtype == ms.float16


def test_model_amp_level_is_checked():
    """Levels are MindSpore's (tests/test_loss_scale.py covers what each does)."""
    with pytest.raises(ValueError, match="amp_level"):
        ms.Model(nn.Dense(2, 2), amp_level="O5")
