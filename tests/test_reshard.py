"""The resharding engine and the MindSpore checkpoint APIs: properties, bad inputs, formats, MPI."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distinfer as ms
from distinfer import launch
from distinfer.errors import FormatError, LayoutError, StrategyError
from distinfer.io import ranged as ranged_mod
from distinfer.io import CkptFile, ParamLayout, SafetensorsFile, build_searched_strategy, write_ckpt, write_safetensors
from distinfer.layout import Layout
from distinfer.parallel import (load_distributed_checkpoint, merge_sliced_parameter, transform_checkpoint_by_rank,
                                transform_checkpoints)
from distinfer.io.ranged import read_cost
from distinfer.reshard.planning import TrainStrategy
from distinfer.reshard.sources import SourceCheckpoint
from seed_net import seed_network  # examples/ is on sys.path (conftest.py)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ property
@st.composite
def _layout_parts(draw, ndim: int):
    """(dev_matrix, tensor_map, opt_shard_size) with at most 8 devices."""
    naxes = draw(st.integers(1, 3))
    dev = []
    for _ in range(naxes):
        room = 8 // max(math.prod(dev), 1)
        dev.append(draw(st.sampled_from([d for d in (1, 2, 3, 4) if d <= room])))
    axes = list(range(naxes))
    tm = []
    for _ in range(ndim):
        free = [a for a in axes if all(a not in (e if isinstance(e, tuple) else (e,)) for e in tm)]
        choice = draw(st.sampled_from(["none", "one", "two"] if len(free) >= 2 else ["none", "one"] if free else ["none"]))
        if choice == "none":
            tm.append(-1)
        elif choice == "one":
            tm.append(draw(st.sampled_from(free)))
        else:
            a, b = draw(st.permutations(free))[:2]
            tm.append((a, b))
    splits = [math.prod(dev[naxes - 1 - v] for v in (e if isinstance(e, tuple) else (e,)) if v != -1) for e in tm]
    replicas = math.prod(dev) // math.prod(splits)
    opts = [0]
    if ndim and replicas > 1:
        opts += [-1] + [k for k in range(2, replicas) if replicas % k == 0]
    opt = draw(st.sampled_from(opts))
    group = replicas if opt == -1 else (opt or 1)
    factor = list(splits)
    if ndim:
        factor[0] *= group
    return dev, tm, opt, factor


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_reshard_equals_direct_slicing(data):
    ndim = data.draw(st.integers(0, 3))
    s_dev, s_tm, s_opt, s_f = data.draw(_layout_parts(ndim))
    d_dev, d_tm, d_opt, d_f = data.draw(_layout_parts(ndim))
    shape = tuple(math.lcm(a, b) * data.draw(st.integers(1, 3)) for a, b in zip(s_f, d_f))
    dtype = data.draw(st.sampled_from([np.float32, ml_dtypes.bfloat16, np.int16]))
    full = (np.arange(math.prod(shape)) % 251).astype(dtype).reshape(shape)
    src = Layout(tuple(s_dev), tuple(s_tm), shape, s_opt)
    dst = Layout(tuple(d_dev), tuple(d_tm), shape, d_opt)
    # The ranged reader's thresholds too: scatter / stage decisions and staging cuts.
    scatter_min, gap, staging = data.draw(st.sampled_from([(16 << 10, 16 << 10, 16 << 20), (0, 0, 64),
                                                           (8, 64, 32), (1 << 30, 1 << 30, 48)]))
    with tempfile.TemporaryDirectory() as d, mock.patch.multiple(ranged_mod, _SCATTER_MIN=scatter_min,
                                                                 _GAP_COALESCE=gap, _STAGING_BYTES=staging):
        files = {}
        for r in range(src.num_devices):
            files[r] = os.path.join(d, f"rank_{r}.ckpt")
            write_ckpt(files[r], [("w", src.slice(full, r)), ("step", np.int32(r))])
        strat = TrainStrategy({"w": ParamLayout(list(s_dev), list(s_tm), opt_weight_shard_size=s_opt,
                                                opt_weight_shard_step=1 if s_opt else 0)})
        with SourceCheckpoint(strat, files) as sc:
            sc.piece_bytes = data.draw(st.sampled_from([16 << 20, 8]))
            assert sc.layout("w").same_blocks(src)
            for r in range(dst.num_devices):
                got = sc.read_block("w", dst, r)
                assert got.dtype == np.dtype(dtype)
                np.testing.assert_array_equal(got, dst.slice(full, r))
            np.testing.assert_array_equal(sc.read_block("w", None, 0), full)


def test_read_cost_counts_coalesced_gaps():
    assert read_cost((4, 1000), ((0, 4), (0, 1000)), 4) == 16000
    assert read_cost((4, 1000), ((1, 3), (0, 1000)), 4) == 8000
    assert read_cost((4, 100000), ((0, 4), (0, 10)), 4) == 160  # gaps too big to coalesce


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_read_cost_is_what_the_reader_reads(tmp_path, data):
    """The cost model and the ranged reader share their run logic: read_cost is exactly the bytes
    preadv reads for a box (spans below the staging bound), into a fresh array or a strided view,
    across record chunks, on the scatter and the staging paths."""
    nd = data.draw(st.integers(1, 3))
    shape = tuple(data.draw(st.integers(1, 12)) for _ in range(nd - 1)) + (data.draw(st.integers(1, 9000)),)
    dtype = np.dtype(data.draw(st.sampled_from([np.float32, np.int16, np.float64])))
    box = tuple(tuple(sorted(data.draw(st.lists(st.integers(0, n), min_size=2, max_size=2)))) for n in shape)
    path = tmp_path / f"c{data.draw(st.integers(0, 1 << 30))}.ckpt"
    write_ckpt(path, [("a", np.zeros(shape, dtype))], chunk_bytes=data.draw(st.sampled_from([4096, 1 << 20])))
    ext = [b - a for a, b in box]
    out = np.empty([e + data.draw(st.integers(0, 2)) for e in ext], dtype)[tuple(slice(0, e) for e in ext)]
    got = []
    real = os.preadv

    def counted(fd, bufs, off):
        got.append(real(fd, bufs, off))
        return got[-1]

    with CkptFile(path) as f, mock.patch.object(ranged_mod.os, "preadv", counted):
        f.read_box("a", box, out=out)
    assert sum(got) == read_cost(shape, box, dtype.itemsize)


# ------------------------------------------------------------------------------ helpers
def _seed_files(ms_fixtures):
    seed = ms_fixtures / "distributed" / "seed_8dev"
    return [str(seed / f"rank_{r}" / "checkpoint-1_1.ckpt") for r in range(8)]


def _copy_seed(ms_fixtures, tmp_path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(ms_fixtures / "distributed" / "seed_8dev", dst, ignore=shutil.ignore_patterns("transformed*"))
    for p in dst.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return dst


def _json_strategy(ms_fixtures, path, edit) -> str:
    obj = json.loads((ms_fixtures / "strategy" / "seed_8dev.json").read_text())
    edit(obj["parallel_layout_item"])
    path.write_text(json.dumps(obj))
    return str(path)


def _no_files(d: Path) -> bool:
    return not d.exists() or not [p for p in d.rglob("*") if p.is_file()]


# ------------------------------------------------------------------------------ bad inputs
def test_transform_missing_rank_dir(ms_fixtures, tmp_path):
    src = _copy_seed(ms_fixtures, tmp_path)
    shutil.rmtree(src / "rank_5")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="rank_5"):
        transform_checkpoints(str(src), str(out), "c_", str(ms_fixtures / "strategy" / "seed_8dev.ckpt"),
                              str(ms_fixtures / "strategy" / "dst_4dev.ckpt"))
    assert _no_files(out)


def test_transform_unreadable_rank_file(ms_fixtures, tmp_path):
    src = _copy_seed(ms_fixtures, tmp_path)
    bad = src / "rank_6" / "checkpoint-1_1.ckpt"
    bad.write_bytes(bad.read_bytes()[:1000])
    out = tmp_path / "out"
    with pytest.raises(FormatError, match="rank_6"):
        transform_checkpoints(str(src), str(out), "c_", str(ms_fixtures / "strategy" / "seed_8dev.ckpt"),
                              str(ms_fixtures / "strategy" / "dst_4dev.ckpt"))
    assert _no_files(out)


def test_transform_strategy_does_not_match_files(ms_fixtures, tmp_path):
    def edit(items):
        items["layer1.weight"]["tensor_map"] = [-1, -1]  # claims full copies; the files hold halves
    strat = _json_strategy(ms_fixtures, tmp_path / "bad.json", edit)
    out = tmp_path / "out"
    with pytest.raises(FormatError, match=r"layer1.weight.*tensor_shape \(784, 512\).*\(784, 256\)"):
        transform_checkpoints(str(ms_fixtures / "distributed" / "seed_8dev"), str(out), "c_", strat,
                              str(ms_fixtures / "strategy" / "dst_4dev.ckpt"))
    assert _no_files(out)


def test_transform_blocks_of_different_shapes(ms_fixtures, tmp_path):
    src = _copy_seed(ms_fixtures, tmp_path)
    f = src / "rank_3" / "checkpoint-1_1.ckpt"
    with CkptFile(f) as c:
        items = [(n, c.read(n)) for n in c.names()]
    items = [(n, v[:100] if n == "layer2.weight" else v) for n, v in items]
    write_ckpt(f, items)
    out = tmp_path / "out"
    with pytest.raises(FormatError, match=r"layer2.weight.*different block shapes.*rank_3"):
        transform_checkpoints(str(src), str(out), "c_", str(ms_fixtures / "strategy" / "seed_8dev.ckpt"), None)
    assert _no_files(out)


def test_transform_indivisible_destination(ms_fixtures, tmp_path):
    obj = {"current_stage": 1, "parallel_strategy_item": {},
           "parallel_layout_item": {"layer3.bias": {"dev_matrix": [4], "tensor_map": [0], "field": 0,
                                                    "opt_weight_shard_step": 0, "opt_weight_shard_size": 0}}}
    dst = tmp_path / "dst.json"
    dst.write_text(json.dumps(obj))
    out = tmp_path / "out"
    with pytest.raises(LayoutError, match=r"layer3.bias.*\(10,\).*not divisible by 4"):
        transform_checkpoints(str(ms_fixtures / "distributed" / "seed_8dev"), str(out), "c_",
                              str(ms_fixtures / "strategy" / "seed_8dev.ckpt"), str(dst))
    assert _no_files(out)


def test_transform_destination_for_other_network(ms_fixtures, tmp_path):
    def edit(items):
        items["layer1.weight"]["tensor_shape"] = [1024, 512]
    dst = _json_strategy(ms_fixtures, tmp_path / "other.json", edit)
    out = tmp_path / "out"
    with pytest.raises(StrategyError, match=r"layer1.weight.*\(1024, 512\).*\(784, 512\).*different network"):
        transform_checkpoints(str(ms_fixtures / "distributed" / "seed_8dev"), str(out), "c_",
                              str(ms_fixtures / "strategy" / "seed_8dev.ckpt"), dst)
    assert _no_files(out)


def test_transform_by_rank_missing_source(ms_fixtures, tmp_path):
    files = {0: _seed_files(ms_fixtures)[0]}  # rank 2 is needed too
    out = tmp_path / "r0.ckpt"
    with pytest.raises(FormatError, match=r"layer1.weight.*\[2, 3, 6, 7\]"):
        transform_checkpoint_by_rank(0, files, str(out), str(ms_fixtures / "strategy" / "seed_8dev.ckpt"),
                                     str(ms_fixtures / "strategy" / "dst_4dev.ckpt"))
    assert not out.exists()
    with pytest.raises(ValueError, match=".ckpt"):
        transform_checkpoint_by_rank(0, files, str(tmp_path / "r0.bin"))


def test_transform_bad_arguments(ms_fixtures, tmp_path):
    seed = str(ms_fixtures / "distributed" / "seed_8dev")
    with pytest.raises(ValueError, match="output_format"):
        transform_checkpoints(seed, str(tmp_path), "c_", output_format="npz")
    with pytest.raises(ValueError, match="does not exist"):
        transform_checkpoints(str(tmp_path / "nope"), str(tmp_path), "c_")
    with pytest.raises(TypeError, match="ckpt_prefix"):
        transform_checkpoints(seed, str(tmp_path), 3)


def test_load_bad_inputs_leave_network_untouched(ms_fixtures, tmp_path):
    files = _seed_files(ms_fixtures)
    strat = str(ms_fixtures / "strategy" / "seed_8dev.ckpt")
    net = seed_network(shard=False)
    before = {n: p.asnumpy().copy() for n, p in net.parameters_and_names()}
    with pytest.raises(ValueError, match="length of 'checkpoint_filenames' is 4 and the device count is 8"):
        load_distributed_checkpoint(net, files[:4], None, strat)
    with pytest.raises(ValueError, match="at index 2 is a valid checkpoint file"):
        load_distributed_checkpoint(net, files[:2] + [str(tmp_path / "x.ckpt")] + files[3:], None, strat)
    bad = tmp_path / "rank_5.ckpt"
    bad.write_bytes(Path(files[5]).read_bytes()[:500])
    with pytest.raises(FormatError, match="rank_5.ckpt"):
        load_distributed_checkpoint(net, files[:5] + [str(bad)] + files[6:], None, strat)
    with pytest.raises(ValueError, match="first four elements"):
        load_distributed_checkpoint(net, files, {"layer1.weight": ((4,), (0, -1), [196, 512], 0)}, strat)
    with pytest.raises(ValueError, match="first four elements"):
        load_distributed_checkpoint(net, files, {"layer1.weight": [[4], [0, -1], [196, 512], 2]}, strat)
    with pytest.raises(ValueError, match="different network"):
        load_distributed_checkpoint(net, files, {"encoder.w": [[4], [0, -1], [], 0]}, strat)
    with pytest.raises(ValueError, match=r"layer3.bias.*\(10,\).*not divisible"):
        load_distributed_checkpoint(net, files, {"layer3.bias": [[4], [0], [], 0]}, strat)
    with pytest.raises(ValueError, match=r"different network"):
        load_distributed_checkpoint(net, files, {"layer1.weight": [[4], [0, -1], [], 0, True, "", [100, 512]]}, strat)
    for n, p in net.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), before[n])


def test_load_missing_and_empty_strategy(ms_fixtures, tmp_path, caplog):
    files = _seed_files(ms_fixtures)
    obj = json.loads((ms_fixtures / "strategy" / "seed_8dev.json").read_text())
    del obj["parallel_layout_item"]["layer2.bias"]
    p = tmp_path / "partial.json"
    p.write_text(json.dumps(obj))
    assert load_distributed_checkpoint(seed_network(shard=False), files, None, str(p)) is True
    assert "not in the slice strategy" in caplog.text and "layer2.bias" in caplog.text
    with pytest.raises(RuntimeError, match="layer2.bias"):
        load_distributed_checkpoint(seed_network(shard=False), files, None, str(p), strict_load=True)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"current_stage": 1, "parallel_strategy_item": {}, "parallel_layout_item": {}}))
    assert load_distributed_checkpoint(seed_network(shard=False), files[:3], None, str(empty)) is True
    ms.set_auto_parallel_context(strategy_ckpt_config={"load_file": str(ms_fixtures / "strategy" / "seed_8dev.ckpt")})
    try:
        got = load_distributed_checkpoint(seed_network(shard=False), files, return_param_dict=True)
    finally:
        ms.reset_auto_parallel_context()
    assert sorted(got) == sorted(np.load(ms_fixtures / "distributed" / "seed_8dev" / "full.npz").files)


def test_load_predict_layout_slices_for_rank(ms_fixtures):
    files = _seed_files(ms_fixtures)
    full = np.load(ms_fixtures / "distributed" / "seed_8dev" / "full.npz")
    layout = {"layer1.weight": [[4], [0, -1], [196, 512], 0, True, ""],
              "layer2.weight": [[4], [-1, -1], [128, 512], 0, True, "4-opt-shard-group"]}
    net = seed_network(shard=False)
    got = load_distributed_checkpoint(net, files, layout, str(ms_fixtures / "strategy" / "seed_8dev.ckpt"),
                                      rank_id=3, return_param_dict=True)
    np.testing.assert_array_equal(got["layer1.weight"].asnumpy(), full["layer1.weight"][588:])
    np.testing.assert_array_equal(got["layer2.weight"].asnumpy(), full["layer2.weight"][384:])
    np.testing.assert_array_equal(got["layer3.weight"].asnumpy(), full["layer3.weight"])
    src = SourceCheckpoint(TrainStrategy.from_file(ms_fixtures / "strategy" / "seed_8dev.ckpt"),
                           dict(enumerate(files)))
    with src:
        np.testing.assert_array_equal(src.read_block("layer2.weight", Layout((4,), (-1, -1), (512, 512), -1), 3),
                                      full["layer2.weight"][384:])


# ------------------------------------------------------------------------------ formats
def test_safetensors_sources_and_output(ms_fixtures, tmp_path):
    seed = ms_fixtures / "distributed" / "seed_8dev"
    src = tmp_path / "st"
    for r in range(8):
        (src / f"rank_{r}").mkdir(parents=True)
        with CkptFile(seed / f"rank_{r}" / "checkpoint-1_1.ckpt") as c:
            write_safetensors(src / f"rank_{r}" / "net_1_1.safetensors", {n: c.read(n) for n in c.names()})
    files = [str(src / f"rank_{r}" / "net_1_1.safetensors") for r in range(8)]
    net = seed_network(shard=False)
    assert load_distributed_checkpoint(net, files, None, str(ms_fixtures / "strategy" / "seed_8dev.ckpt"),
                                       format="safetensors")
    full = np.load(seed / "full.npz")
    for n, p in net.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), full[n])
    out = tmp_path / "out"
    transform_checkpoints(str(src), str(out), "checkpoint_", str(ms_fixtures / "strategy" / "seed_8dev.ckpt"),
                          str(ms_fixtures / "strategy" / "dst_4dev.ckpt"), output_format="safetensors")
    for r in range(4):
        with SafetensorsFile(out / f"rank_{r}" / f"checkpoint_{r}.safetensors") as a, \
                CkptFile(seed / "transformed" / f"rank_{r}" / f"checkpoint_{r}.ckpt") as b:
            assert sorted(a.names()) == sorted(b.names())
            for n in b.names():
                np.testing.assert_array_equal(a.read(n), b.read(n))


def test_bf16_stays_bf16(tmp_path):
    full = (np.arange(64, dtype=np.float32) / 7).astype(ml_dtypes.bfloat16).reshape(8, 8)
    lay = Layout((2, 2), (1, -1), (8, 8))
    files = []
    for r in range(4):
        files.append(str(tmp_path / f"r{r}.ckpt"))
        write_ckpt(files[-1], [("w", lay.slice(full, r))])
    strat = tmp_path / "s.json"
    strat.write_text(json.dumps({"current_stage": 1, "parallel_strategy_item": {},
                                 "parallel_layout_item": {"w": {"dev_matrix": [2, 2], "tensor_map": [1, -1]}}}))
    got = load_distributed_checkpoint(None, files, None, str(strat), return_param_dict=True)
    assert got == {}
    with SourceCheckpoint(TrainStrategy.from_file(strat), dict(enumerate(files))) as sc:
        block = sc.read_block("w", None, 0)
    assert block.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(block, full)
    merged = merge_sliced_parameter([ms.Parameter(ms.Tensor(lay.slice(full, r)), name="w") for r in range(4)],
                                    {"w": ParamLayout([2, 2], [1, -1])})
    assert merged.asnumpy().dtype == np.float32  # as MindSpore
    np.testing.assert_array_equal(merged.asnumpy(), full.astype(np.float32))


def test_merge_sliced_parameter(ms_fixtures):
    files = _seed_files(ms_fixtures)
    strategy = build_searched_strategy(str(ms_fixtures / "strategy" / "seed_8dev.ckpt"))
    full = np.load(ms_fixtures / "distributed" / "seed_8dev" / "full.npz")
    slices = []
    for f in files:
        with CkptFile(f) as c:
            slices.append(ms.Parameter(ms.Tensor(c.read("layer1.weight")), name="layer1.weight"))
    np.testing.assert_array_equal(merge_sliced_parameter(slices, strategy).asnumpy(), full["layer1.weight"])
    # Without a strategy the slices are stacked along axis 0 in rank order (MindSpore's rule).
    np.testing.assert_array_equal(merge_sliced_parameter(slices).asnumpy(),
                                  np.concatenate([s.asnumpy() for s in slices], axis=0))
    with pytest.raises(ValueError, match="should be equal to device_count"):
        merge_sliced_parameter(slices[:4], strategy)
    with pytest.raises(TypeError, match="every element must be a Parameter, got ndarray"):
        merge_sliced_parameter([np.zeros(3)])


def test_process_num_workers(ms_fixtures, tmp_path):
    transform_checkpoints(str(ms_fixtures / "distributed" / "seed_8dev"), str(tmp_path), "checkpoint_",
                          str(ms_fixtures / "strategy" / "seed_8dev.ckpt"),
                          str(ms_fixtures / "strategy" / "opt_4dev.ckpt"), process_num=2)
    gold = ms_fixtures / "distributed" / "seed_8dev" / "transformed_opt"
    for r in range(4):
        assert (tmp_path / f"rank_{r}" / f"checkpoint_{r}.ckpt").read_bytes() == \
            (gold / f"rank_{r}" / f"checkpoint_{r}.ckpt").read_bytes()


# ------------------------------------------------------------------------------ MPI
@pytest.mark.mpi
@pytest.mark.parametrize("n", [4, 8])
def test_mpi_load_into_differently_sharded_net(n):
    res = launch.run(n, [str(ROOT / "tests" / "mpi" / "reshard_load.py")], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(("PASS", "FAIL", "DONE"))]
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert lines and lines[-1] == "DONE 3", res.stdout[-2000:] + res.stderr[-2000:]
    fails = [ln for ln in lines if ln.startswith("FAIL")]
    assert not fails, fails


@pytest.mark.mpi
def test_mpi_transform_divides_ranks(ms_fixtures, tmp_path):
    script = tmp_path / "t.py"
    script.write_text(
        "import sys\nfrom distinfer.parallel import transform_checkpoints\n"
        "transform_checkpoints(sys.argv[1], sys.argv[2], 'checkpoint_', sys.argv[3], sys.argv[4])\n")
    out = tmp_path / "out"
    res = launch.run(2, [str(script), str(ms_fixtures / "distributed" / "seed_8dev"), str(out),
                         str(ms_fixtures / "strategy" / "seed_8dev.ckpt"), str(ms_fixtures / "strategy" / "dst_4dev.ckpt")],
                     capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    gold = ms_fixtures / "distributed" / "seed_8dev" / "transformed"
    for r in range(4):
        assert (out / f"rank_{r}" / f"checkpoint_{r}.ckpt").read_bytes() == \
            (gold / f"rank_{r}" / f"checkpoint_{r}.ckpt").read_bytes()


def test_read_blocks_threads_and_stats(tmp_path):
    """read_blocks fills every block (in place, strided pieces included) on several threads, counts
    every byte once, and re-raises a thread's error."""
    from distinfer.reshard.sources import read_blocks

    rng = np.random.default_rng(5)
    src = Layout((4,), (-1, 0), (24, 40))
    dst = Layout((2, 2), (0, 1), (24, 40))
    fulls = {f"w{i}": rng.standard_normal((24, 40)).astype(np.float32) for i in range(7)}
    files = {}
    for r in range(4):
        files[r] = str(tmp_path / f"r{r}.ckpt")
        write_ckpt(files[r], [(n, src.slice(a, r)) for n, a in fulls.items()])
    strat = TrainStrategy({n: ParamLayout([4], [-1, 0]) for n in fulls})
    for threads in (1, 3):
        with SourceCheckpoint(strat, files) as sc:
            jobs = [(n, dst, np.full(dst.local_shape, np.nan, np.float32)) for n in fulls]
            read_blocks(sc, jobs, 3, 3, threads=threads)
            for n, _, out in jobs:
                np.testing.assert_array_equal(out, dst.slice(fulls[n], 3))
            assert sc.stats.bytes_read == sum(out.nbytes for _, _, out in jobs)
            with pytest.raises(LayoutError, match=r"output buffer shape \(1, 1\) != block shape \(12, 20\)"):
                read_blocks(sc, jobs[:2] + [("w0", dst, np.empty((1, 1), np.float32))], 3, 3, threads=threads)
