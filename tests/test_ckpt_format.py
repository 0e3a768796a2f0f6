"""The .ckpt format layer against MindSpore-made fixtures, hostile files and crashes."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from unittest import mock
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distinfer.io.ckpt as ckpt_mod
import distinfer.io.ranged as ranged_mod
from distinfer import dtype as mstype
from distinfer.errors import FormatError
from distinfer.io import CkptFile, write_ckpt

CKPT_FILES = ["dtypes.ckpt", "dtypes_crc.ckpt", "chunked_bytes.ckpt", "chunked_rows.ckpt",
              "train_sgd.ckpt", "train_momentum.ckpt", "train_adam.ckpt"]


@pytest.fixture(scope="module")
def expected(ms_fixtures):
    exp = json.loads((ms_fixtures / "ckpt" / "expected.json").read_text())["files"]
    npz = np.load(ms_fixtures / "ckpt" / "expected.npz", allow_pickle=False)
    full = np.load(ms_fixtures / "distributed" / "seed_8dev" / "full.npz", allow_pickle=False)
    return exp, npz, full


def _expected_array(v, npz, full):
    if v.get("npz_key"):
        a = npz[v["npz_key"]]
    else:
        a = full[v["same_as"].split(":", 1)[1]]
    if v["tensor_type"] == "BFloat16":
        a = a.view(ml_dtypes.bfloat16)
    return a.astype(mstype.from_name(v["tensor_type"]).np, copy=False).reshape(v["shape"])


def _items_like(fn, exp, npz, full):
    """(name, value) pairs reproducing a fixture, in record order (first occurrence)."""
    info, seen, out = exp[fn], set(), []
    for rec in info["records"]:
        name = rec["tag"]
        if name in seen:
            continue
        seen.add(name)
        v = info["values"][name]
        out.append((name, v["value"] if rec["tensor_type"] == "str"
                    else _expected_array(v, npz, full)))
    return out


@pytest.mark.parametrize("fn", CKPT_FILES)
def test_fixture_reads_back_exactly(ms_fixtures, expected, fn):
    exp, npz, full = expected
    info = exp[fn]
    with CkptFile(ms_fixtures / "ckpt" / fn, crc_check=info["crc_trailer"] is not None) as f:
        assert f.crc == info["crc_trailer"]
        assert f.names() == list(dict.fromkeys(r["tag"] for r in info["records"]))
        # Record structure: pieces of each entry match the record list.
        pieces = {}
        for r in info["records"]:
            pieces.setdefault(r["tag"], []).append(r["content_bytes"])
        for name in f.names():
            assert [n for _, n in f.entry(name).chunks] == pieces[name]
        for name, v in info["values"].items():
            e, val = f.entry(name), f.read(name)
            assert e.dtype.name == v["tensor_type"]
            if e.dtype is mstype.string:
                assert val == v["value"] == info["load_checkpoint_returns"][name]["value"]
                continue
            assert val.shape == tuple(v["shape"]) and val.dtype == e.dtype.np
            assert hashlib.sha256(val.tobytes()).hexdigest() == v["sha256"]
            ref = _expected_array(v, npz, full)
            assert val.tobytes() == ref.tobytes()
            if "value" in v:
                assert val.item() == pytest.approx(v["value"])


def test_bf16_values(ms_fixtures, expected):
    exp, _, _ = expected
    with CkptFile(ms_fixtures / "ckpt" / "dtypes.ckpt") as f:
        got = f.read("w_bf16")
    assert got.dtype == ml_dtypes.bfloat16
    assert got.astype(np.float32).ravel().tolist() == exp["dtypes.ckpt"]["values"]["w_bf16"]["as_float32"]
    assert got.view(np.uint16).ravel().tolist() == [0x3F80, 0x3F80, 0x3F82, 0xC020, 0x4053, 0x4780,
                                                    0xBA83, 0x3DCD]


@pytest.mark.parametrize("fn,crc,chunk", [("dtypes.ckpt", False, 512 << 20),
                                          ("dtypes_crc.ckpt", True, 512 << 20),
                                          ("chunked_bytes.ckpt", False, 2048)])
def test_golden_bytes(ms_fixtures, expected, tmp_path, fn, crc, chunk):
    exp, npz, full = expected
    out = tmp_path / fn
    write_ckpt(out, _items_like(fn, exp, npz, full), crc_check=crc, chunk_bytes=chunk)
    assert out.read_bytes() == (ms_fixtures / "ckpt" / fn).read_bytes()


def test_python_scalars_and_strings(tmp_path):
    p = tmp_path / "s.ckpt"
    write_ckpt(p, [("i", 3), ("f", 0.5), ("b", True), ("s", "hello, 世界 ✓"), ("z", np.float64(2.0))])
    with CkptFile(p) as f:
        assert [f.entry(n).dtype.name for n in f.names()] == ["Int64", "Float32", "Bool", "str", "Float64"]
        assert f.read("i").shape == () and f.read("i") == 3 and f.read("i").dtype == np.int64
        assert f.read("f") == 0.5 and f.read("f").dtype == np.float32
        assert f.read("b").dtype == np.bool_ and f.read("b") == True  # noqa: E712 - a numpy bool, compared by value
        assert f.read("z") == 2.0 and f.read("z").dtype == np.float64
        assert f.read("s") == "hello, 世界 ✓"


@pytest.mark.parametrize("chunk", [7, 64, 1000, 1 << 20])
def test_boxes_across_chunks(tmp_path, monkeypatch, chunk):
    rng = np.random.default_rng(chunk)
    a = rng.standard_normal((37, 23, 5)).astype(np.float32)
    b = rng.integers(0, 60000, (41, 9)).astype(np.uint16).view(ml_dtypes.bfloat16)
    p = tmp_path / "b.ckpt"
    write_ckpt(p, [("a", a), ("b", b)], chunk_bytes=chunk)
    # Small staging/gap limits exercise every read path (direct, coalesced, split groups).
    for staging, gap in [(64, 0), (256, 16), (1 << 20, 1 << 14)]:
        monkeypatch.setattr(ranged_mod, "_STAGING_BYTES", staging)
        monkeypatch.setattr(ranged_mod, "_GAP_COALESCE", gap)
        with CkptFile(p) as f:
            for _ in range(40):
                for name, arr in (("a", a), ("b", b)):
                    box = tuple(tuple(sorted(int(x) for x in rng.integers(0, n + 1, 2))) for n in arr.shape)
                    want = arr[tuple(slice(x, y) for x, y in box)]
                    assert np.array_equal(f.read_box(name, box).view(np.uint8), want.view(np.uint8))
            np.testing.assert_array_equal(f.read_rows("a", 3, 17), a[3:17])
            out = np.empty((2, 23, 5), np.float32)
            assert f.read_box("a", ((5, 7), (0, 23), (0, 5)), out=out) is out
            np.testing.assert_array_equal(out, a[5:7])


def test_chunked_rows_box(ms_fixtures, expected):
    _, npz, _ = expected
    big = npz["chunked_rows.ckpt/big"].reshape(37, 50)
    for fn in ("chunked_rows.ckpt", "chunked_bytes.ckpt"):
        with CkptFile(ms_fixtures / "ckpt" / fn) as f:
            np.testing.assert_array_equal(f.read_box("big", ((8, 30), (3, 41))), big[8:30, 3:41])


# ------------------------------------------------------------------------------ hostile files
def _boundaries(data: bytes) -> list[int]:
    """Byte offsets where top-level records start (and the end of the records)."""
    out, pos = [], 0
    end = len(data) - (17 if data[-17:-10] == b"crc_num" else 0)
    while pos < end:
        out.append(pos)
        n, shift, i = 0, 0, pos + 1
        while True:
            b = data[i]; n |= (b & 0x7F) << shift; shift += 7; i += 1
            if not b & 0x80:
                break
        pos = i + n
    return out + [end]


def _expect_error(path: Path, **kw) -> FormatError:
    with pytest.raises(FormatError) as ei:
        with CkptFile(path, **kw) as f:
            for n in f.names():
                f.read(n)
    assert str(path) in str(ei.value)
    return ei.value


@pytest.mark.parametrize("fn", ["dtypes.ckpt", "dtypes_crc.ckpt", "chunked_bytes.ckpt"])
def test_truncation_everywhere(ms_fixtures, tmp_path, fn):
    data = (ms_fixtures / "ckpt" / fn).read_bytes()
    bounds = set(_boundaries(data))
    with CkptFile(ms_fixtures / "ckpt" / fn) as whole:
        full = {n: whole.read(n) for n in whole.names()}
    p = tmp_path / fn
    for cut in range(len(data)):
        p.write_bytes(data[:cut])
        if cut in bounds and cut > 0:
            # The format has no record count: a cut between records leaves a valid, shorter
            # file. It must then be an exact prefix -- unless it split a chunked tensor.
            try:
                with CkptFile(p) as f:
                    for n in f.names():
                        np.testing.assert_array_equal(np.asarray(f.read(n)), np.asarray(full[n]))
            except FormatError as exc:
                assert str(p) in str(exc) and "need" in str(exc)
            continue
        _expect_error(p)


def test_hostile_corpus(ms_fixtures, tmp_path):
    data = (ms_fixtures / "ckpt" / "dtypes.ckpt").read_bytes()
    crc_data = (ms_fixtures / "ckpt" / "dtypes_crc.ckpt").read_bytes()
    cases = {}
    cases["empty.ckpt"] = (b"", "empty")
    cases["varint.ckpt"] = (data[:1] + bytes([data[1] ^ 0x40]) + data[2:], "record #0")
    cases["varint_cont.ckpt"] = (data[:1] + bytes([data[1] | 0x80]) + data[2:], "claims 1316 bytes")
    cases["type.ckpt"] = (data.replace(b"Float32", b"Float33", 1), "tensor_type")
    # 'w_f16' dims [2,3] -> [2,4]: content no longer matches.
    i = data.index(b"\x08\x02\x08\x03")
    cases["dims.ckpt"] = (data[:i] + b"\x08\x02\x08\x04" + data[i + 4:], "need")
    j = crc_data.index(b"Float64") + 12
    cases["crc.ckpt"] = (crc_data[:j] + bytes([crc_data[j] ^ 1]) + crc_data[j + 1:], "CRC")
    cases["garbage.ckpt"] = (b"\x00\x01\x02 not a checkpoint", "unexpected field 0")
    for name, (content, needle) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        err = _expect_error(p, crc_check=name == "crc.ckpt")
        assert needle in str(err), (name, str(err))
    # A flipped content byte goes unnoticed without crc_check (like MindSpore) but not with it.
    with CkptFile(tmp_path / "crc.ckpt") as f:
        assert "w_f64" in f
    _expect_error(tmp_path / "dims.ckpt")
    assert "is a directory" in str(_expect_error(tmp_path))
    assert "no such checkpoint file" in str(_expect_error(tmp_path / "missing.ckpt"))
    p = tmp_path / "plain.ckpt"
    p.write_bytes(data)
    assert "no CRC trailer" in str(_expect_error(p, crc_check=True))


def test_maptensor_rejected(tmp_path):
    from distinfer._proto import checkpoint_pb2
    msg = checkpoint_pb2.Checkpoint()
    v = msg.value.add(tag="table")
    t = v.maptensor.tensor.add(dims=[2], tensor_type="int32", tensor_content=b"\0" * 8)
    assert t.dims == [2]
    p = tmp_path / "map.ckpt"
    p.write_bytes(msg.SerializeToString())
    assert "maptensor" in str(_expect_error(p))


_FUZZ_SOURCES = ["dtypes.ckpt", "dtypes_crc.ckpt", "chunked_bytes.ckpt"]


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(src=st.sampled_from(_FUZZ_SOURCES), ops=st.lists(
    st.tuples(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]),
              st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=4),
    crc=st.booleans())
def test_fuzz_mutations_only_format_errors(ms_fixtures, tmp_path_factory, src, ops, crc):
    data = bytearray(_fuzz_cache(ms_fixtures, src))
    for op, pos, val in ops:
        if not data:
            break
        pos %= len(data)
        if op == "flip":
            data[pos] ^= 1 << (val % 8)
        elif op == "set":
            data[pos] = val
        elif op == "delete":
            del data[pos: pos + 1 + val % 8]
        elif op == "insert":
            data[pos:pos] = bytes([val]) * (1 + val % 4)
        else:
            del data[pos:]
    p = _fuzz_path(tmp_path_factory)
    p.write_bytes(bytes(data))
    # The fast record parser agrees with the strict walker alone: same index, or both refuse.
    assert _index_or_error(p) == _index_or_error(p, strict_only=True)
    try:
        with CkptFile(p, crc_check=crc) as f:
            for n in f.names():
                e = f.entry(n)
                val = f.read(n)
                if e.dtype is mstype.string:
                    assert isinstance(val, str)
                elif e.dtype is not mstype.qint4x2:
                    assert val.shape == e.shape and val.nbytes == e.nbytes
                    if e.shape and e.shape[0]:
                        f.read_rows(n, 0, 1)
    except FormatError as exc:
        assert str(p) in str(exc)


def _index_or_error(p: Path, strict_only: bool = False):
    with mock.patch.object(ckpt_mod, "_fast_record", (lambda *a: None) if strict_only else ckpt_mod._fast_record):
        try:
            with CkptFile(p) as f:
                return [tuple(e) for e in f.entries()]
        except FormatError:
            return "FormatError"


def test_fast_parser_takes_mindspore_records(ms_fixtures):
    """MindSpore's own files never need the strict walker (it is the fallback for oddities)."""
    def refuse(*a):
        raise AssertionError("strict walker used")
    files = [p for p in sorted((ms_fixtures / "ckpt").glob("*.ckpt")) + sorted((ms_fixtures / "distributed").rglob("*.ckpt"))
             if "strategy" not in p.name]
    assert len(files) >= 7 + 8 + 8, files  # ckpt/, seed_8dev and pipeline_2x4 rank files at least
    with mock.patch.object(ckpt_mod, "_parse_record", refuse):
        for p in files:
            with CkptFile(p) as f:
                assert f.names(), p


_CACHE: dict = {}


def _fuzz_cache(root: Path, name: str) -> bytes:
    if name not in _CACHE:
        _CACHE[name] = (root / "ckpt" / name).read_bytes()
    return _CACHE[name]


def _fuzz_path(factory) -> Path:
    if "path" not in _CACHE:
        _CACHE["path"] = factory.mktemp("fuzz") / "mutant.ckpt"
    return _CACHE["path"]


# ------------------------------------------------------------------------------ crash safety
_WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from distinfer.io import write_ckpt
    def items():
        for i in range(400):
            yield f"t{i}", np.full((256, 1024), i, np.float32)   # 1 MiB each
            if i == 3:
                print("writing", flush=True)
            time.sleep(0.01)
    write_ckpt(sys.argv[1], items(), chunk_bytes=300_000)
""")


def test_sigkill_leaves_previous_file(tmp_path):
    final = tmp_path / "model.ckpt"
    write_ckpt(final, [("old", np.arange(10, dtype=np.int32))], crc_check=True)
    before = final.read_bytes()
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(final)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.2)
        # The temp file is being written beside the target while the target is untouched.
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert final.read_bytes() == before
    with CkptFile(final, crc_check=True) as f:
        assert f.names() == ["old"]


def test_writer_error_cleans_temp(tmp_path):
    def items():
        yield "a", np.zeros(3, np.float32)
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="^boom$"):  # the producer's own error, re-raised unchanged
        write_ckpt(tmp_path / "x.ckpt", items())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="'c': numpy dtype complex64 has no MindSpore equivalent"):
        write_ckpt(tmp_path / "y.ckpt", [("c", np.zeros(2, np.complex64))])
    assert list(tmp_path.iterdir()) == []


def test_writer_replaces_only_regular_files(tmp_path):
    """Writing over a directory or a FIFO (as over /dev/null) is refused before anything is written."""
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    (tmp_path / "dir.ckpt").mkdir()
    for target in (fifo, tmp_path / "dir.ckpt"):
        with pytest.raises(FileExistsError, match="not a regular file"):
            write_ckpt(target, [("a", np.zeros(3, np.float32))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.ckpt", "pipe.ckpt"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("chunk", [100, 4096, 1 << 20])
@pytest.mark.parametrize("scatter_min,gap", [(0, 0), (0, 1 << 14), (1 << 14, 1 << 14), (64, 64)])
def test_boxes_into_strided_views(tmp_path, monkeypatch, chunk, scatter_min, gap):
    """read_box into a strided view of a bigger array (the block's place in a destination) writes
    exactly that view, on the scatter (iovec) and the staging paths, across record chunks."""
    rng = np.random.default_rng(chunk + scatter_min + gap)
    a = rng.standard_normal((19, 13, 11)).astype(np.float32)
    p = tmp_path / "s.ckpt"
    write_ckpt(p, [("a", a)], chunk_bytes=chunk)
    monkeypatch.setattr(ranged_mod, "_SCATTER_MIN", scatter_min)
    monkeypatch.setattr(ranged_mod, "_GAP_COALESCE", gap)
    monkeypatch.setattr(ranged_mod, "_STAGING_BYTES", 512)
    monkeypatch.setattr(ranged_mod, "_IOV_MAX", 3)
    with CkptFile(p) as f:
        for _ in range(30):
            box = tuple(tuple(sorted(int(x) for x in rng.integers(0, n + 1, 2))) for n in a.shape)
            ext = [y - x for x, y in box]
            big = np.full([e + int(rng.integers(0, 3)) for e in ext], -7.0, np.float32)
            at = [int(rng.integers(0, n - e + 1)) for n, e in zip(big.shape, ext)]
            view = big[tuple(slice(o, o + e) for o, e in zip(at, ext))]
            before = big.copy()
            assert f.read_box("a", box, out=view) is view
            before[tuple(slice(o, o + e) for o, e in zip(at, ext))] = a[tuple(slice(x, y) for x, y in box)]
            np.testing.assert_array_equal(big, before)
        with pytest.raises(ValueError, match="positive strides"):
            f.read_box("a", ((0, 2), (0, 2), (0, 2)), out=np.empty((2, 2, 4), np.float32)[:, :, ::-2])
