"""Safetensors with MindSpore's conventions against MindSpore-made fixtures (spec §2)."""
from __future__ import annotations

import hashlib
import json
import struct

import ml_dtypes
import numpy as np
import pytest

from distinfer.errors import FormatError
from distinfer.io import SafetensorsFile, ms_crc, write_safetensors

FILES = ["dtypes.safetensors", "dtypes_crc.safetensors"]


@pytest.fixture(scope="module")
def expected(ms_fixtures):
    exp = json.loads((ms_fixtures / "safetensors" / "expected.json").read_text())
    return exp, np.load(ms_fixtures / "safetensors" / "expected.npz", allow_pickle=False)


def _header(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n])


@pytest.mark.parametrize("fn", FILES)
def test_fixture_reads_back_exactly(ms_fixtures, expected, fn):
    exp, npz = expected
    info = exp["files"][fn]
    with SafetensorsFile(ms_fixtures / "safetensors" / fn, crc_check=fn.endswith("crc.safetensors")) as f:
        assert f.metadata["format"] == "ms"
        assert set(f.names()) == set(info["values"])
        for name, v in info["values"].items():
            e, val = f.entry(name), f.read(name)
            assert e.dtype.name == v["tensor_type"] and val.shape == tuple(v["shape"])
            assert hashlib.sha256(val.tobytes()).hexdigest() == v["sha256"]
            ref = npz[v["npz_key"]]
            assert val.tobytes() == ref.tobytes()
        if "w_bf16" in f:
            assert f.read("w_bf16").dtype == ml_dtypes.bfloat16
            assert f.read("w_bf16").astype(np.float32).ravel().tolist() == info["values"]["w_bf16"]["as_float32"]


def test_crc_quirk_and_rewrite(ms_fixtures, tmp_path):
    src = ms_fixtures / "safetensors" / "dtypes_crc.safetensors"
    with SafetensorsFile(src) as f:
        tensors = {n: f.read(n) for n in f.names()}
    assert ms_crc(tensors) == 2318156346
    out = tmp_path / "crc.safetensors"
    write_safetensors(out, tensors, crc_check=True)
    # Header JSON may be ordered differently (hash order upstream): compare parsed.
    assert _header(out) == _header(src)
    assert out.read_bytes()[-300:] == src.read_bytes()[-300:]
    with pytest.raises(ValueError, match="negative"):
        write_safetensors(tmp_path / "neg.safetensors", {"x": np.array(-7, np.int32)}, crc_check=True)


def test_rewrite_plain_matches_header(ms_fixtures, tmp_path):
    src = ms_fixtures / "safetensors" / "dtypes.safetensors"
    with SafetensorsFile(src) as f:
        tensors = {n: f.read(n) for n in f.names()}
    write_safetensors(tmp_path / "d.safetensors", tensors)
    assert (tmp_path / "d.safetensors").read_bytes() == src.read_bytes()


def test_lazy_boxes_and_contiguity(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((30, 40)).astype(np.float32)
    h = rng.standard_normal((20, 8)).astype(ml_dtypes.bfloat16)
    p = tmp_path / "b.safetensors"
    # A strided column view must be written as its own values, not the memory run after it.
    write_safetensors(p, {"col": a[:, 5:9], "a": a, "h": h, "epoch_num": 3, "lr": 0.5, "flag": False})
    with SafetensorsFile(p) as f:
        np.testing.assert_array_equal(f.read("col"), a[:, 5:9])
        np.testing.assert_array_equal(f.read_box("a", ((3, 9), (10, 31))), a[3:9, 10:31])
        np.testing.assert_array_equal(f.read_rows("a", 7, 12), a[7:12])
        assert f.read_box("h", ((2, 5), (1, 4))).tobytes() == h[2:5, 1:4].tobytes()
        assert f.read("epoch_num").shape == () and f.read("epoch_num") == 3
        assert [f.entry(n).dtype.name for n in ("epoch_num", "lr", "flag")] == ["Int64", "Float32", "Bool"]
    with pytest.raises(TypeError, match="str64"):
        write_safetensors(tmp_path / "s.safetensors", {"note": "hi"})
    assert not (tmp_path / "s.safetensors").exists()


def test_hostile(ms_fixtures, tmp_path):
    data = (ms_fixtures / "safetensors" / "dtypes.safetensors").read_bytes()
    cases = {"empty.safetensors": b"", "short.safetensors": data[:100],
             "trunc.safetensors": data[:-10], "len.safetensors": b"\xff" * 8 + data[8:]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(FormatError, match=name):
            SafetensorsFile(tmp_path / name)
    with pytest.raises(FormatError, match="is a directory, not a safetensors file"):
        SafetensorsFile(tmp_path)
    with pytest.raises(FormatError, match="missing.safetensors: no such safetensors file"):
        SafetensorsFile(tmp_path / "missing.safetensors")
    crc = bytearray((ms_fixtures / "safetensors" / "dtypes_crc.safetensors").read_bytes())
    crc[-1] ^= 1
    (tmp_path / "crc.safetensors").write_bytes(bytes(crc))
    with pytest.raises(FormatError, match="CRC"):
        SafetensorsFile(tmp_path / "crc.safetensors", crc_check=True)


def test_streamed_writer_matches_the_library(tmp_path):
    """write_safetensors_stream: the safetensors package reads it back, bf16 included; blocks out
    of order are refused and leave no file behind."""
    from safetensors import safe_open

    from distinfer.io import safetensors_order, write_safetensors_stream

    rng = np.random.default_rng(0)
    data = {"w": rng.standard_normal((3, 5)).astype(np.float32), "step": np.array(7, np.int64),
            "h": rng.standard_normal(4).astype(ml_dtypes.bfloat16), "flag": np.array([True, False])}
    specs = safetensors_order((n, a.dtype, a.shape) for n, a in data.items())
    assert [s[0] for s in specs] == ["step", "w", "h", "flag"]
    p = tmp_path / "s.safetensors"
    n = write_safetensors_stream(p, specs, ((name, data[name]) for name, _, _ in specs), metadata={"k": "v"})
    assert n == sum(a.nbytes for a in data.values())
    with safe_open(str(p), framework="np") as f:
        assert f.metadata() == {"format": "ms", "k": "v"}
        np.testing.assert_array_equal(f.get_tensor("w"), data["w"])
        assert int(f.get_tensor("step")) == 7
    with SafetensorsFile(p) as f:
        assert f.read("h").view(np.uint16).tolist() == data["h"].view(np.uint16).tolist()
    q = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match="expected tensor 'w'"):
        write_safetensors_stream(q, specs, ((name, data[name]) for name in ["step", "h", "w", "flag"]))
    assert not q.exists() and sorted(x.name for x in tmp_path.iterdir()) == ["s.safetensors"]
