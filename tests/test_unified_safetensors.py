"""unified_safetensors and load_distributed_checkpoint's unified mode, against full.npz and MindSpore's transforms."""
from __future__ import annotations

import json
import shutil
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from distinfer import launch
from distinfer.errors import FormatError
from distinfer.io import CkptFile, SafetensorsFile, write_safetensors
from distinfer.layout import Layout
from distinfer.parallel import load_distributed_checkpoint, unified_safetensors
from distinfer.reshard import sources as sources_mod
from distinfer.reshard import targets as targets_mod
from distinfer.reshard.planning import TrainStrategy
from distinfer.reshard.writing import write_file
from seed_net import seed_network  # examples/ is on sys.path (conftest.py)

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias", "layer3.weight", "layer3.bias"]


# ------------------------------------------------------------------------------ helpers
def _to_safetensors(src: Path, dst: Path, name: str = "net-1_1.safetensors", edit=None, metadata=None) -> Path:
    """Copy ``src/rank_<r>/*.ckpt`` as ``dst/rank_<r>/<name>`` (``edit(rank, dict)`` may change the tensors)."""
    for d in sorted(src.glob("rank_*")):
        r = int(d.name.split("_")[1])
        (dst / d.name).mkdir(parents=True, exist_ok=True)
        with CkptFile(next(d.glob("*.ckpt"))) as c:
            tensors = {n: c.read(n) for n in c.names()}
        if edit is not None:
            tensors = edit(r, tensors)
        write_safetensors(dst / d.name / name, tensors, metadata=metadata)
    return dst


def _files(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


def _read(path: Path) -> dict:
    with SafetensorsFile(path) as f:
        return {n: f.read(n) for n in f.names()}


def _unified_tensors(d: Path) -> dict:
    wm = json.loads((d / "param_name_map.json").read_text())["weight_map"]
    out = {}
    for name, part in wm.items():
        with SafetensorsFile(d / part) as f:
            out[name] = f.read(name)
    return out


def _mindspore_header_ok(path: Path) -> None:
    """MindSpore's own reader (transform_safetensors.read_metadata) wants header order == data order."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n], object_pairs_hook=OrderedDict)
    assert header.pop("__metadata__") == {"format": "ms"}
    start = 0
    for info in header.values():
        a, b = info["data_offsets"]
        assert a == start and b >= a
        start = b
    assert 8 + n + start == len(raw)


@pytest.fixture(scope="module")
def seed(ms_fixtures) -> Path:
    return ms_fixtures / "distributed" / "seed_8dev"


@pytest.fixture(scope="module")
def strategy(ms_fixtures) -> str:
    return str(ms_fixtures / "strategy" / "seed_8dev.ckpt")


@pytest.fixture(scope="module")
def full(seed) -> dict:
    return dict(np.load(seed / "full.npz"))


@pytest.fixture(scope="module")
def st_src(seed, tmp_path_factory) -> Path:
    """The seed fixtures as per-rank safetensors files."""
    return _to_safetensors(seed, tmp_path_factory.mktemp("st") / "src")


@pytest.fixture(scope="module")
def unified(st_src, strategy, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unified") / "u"
    unified_safetensors(str(st_src), strategy, str(out))
    return out


# ------------------------------------------------------------------------------ unified_safetensors
def test_unified_full_tensors_map_and_hyper_params(unified, seed, full):
    assert _files(unified) == ["hyper_param.safetensors", "param_name_map.json", "part0.safetensors"]
    obj = json.loads((unified / "param_name_map.json").read_text())
    assert obj["metadata"] == {"total_size": sum(a.nbytes for a in full.values())}
    assert obj["weight_map"] == {n: "part0.safetensors" for n in NAMES}
    got = _read(unified / "part0.safetensors")
    assert sorted(got) == sorted(full)
    for n, a in full.items():
        assert got[n].dtype == a.dtype
        np.testing.assert_array_equal(got[n], a, err_msg=n)
    # What MindSpore and the safetensors library read back.
    _mindspore_header_ok(unified / "part0.safetensors")
    for n, a in load_file(unified / "part0.safetensors").items():
        np.testing.assert_array_equal(a, full[n])
    with CkptFile(seed / "rank_0" / "checkpoint-1_1.ckpt") as ref:
        hyper = _read(unified / "hyper_param.safetensors")
        assert sorted(hyper) == ["global_step", "learning_rate"]
        for n in hyper:
            np.testing.assert_array_equal(hyper[n], ref.read(n))
            assert hyper[n].dtype == ref.read(n).dtype


def test_unified_reads_each_byte_once(st_src, strategy, full, tmp_path):
    """The merge reads exactly the bytes of the full tensors (one replica of each slice, nothing else)."""
    plan = targets_mod.plan_unify(str(st_src), strategy, True, None, None)
    try:
        for k in range(len(plan.parts)):
            write_file(plan.file(k), str(tmp_path / f"part{k}.safetensors"))
        assert plan.opened().stats.bytes_read == plan.total_size == sum(a.nbytes for a in full.values())
    finally:
        plan.close()


def test_unified_streams_one_tensor_at_a_time(tmp_path):
    """Peak memory is a few times the largest tensor (its buffer, the read-ahead buffer, the reader's
    staging), whatever the model size (measured: 4.1 MiB for 8, 16 or 32 tensors of 1 MiB)."""
    import tracemalloc

    rng = np.random.default_rng(3)
    fulls = {f"w{i}": rng.standard_normal((256, 1024)).astype(np.float32) for i in range(16)}  # 16 x 1 MiB
    lay = Layout((2,), (-1, 0), (256, 1024))
    for r in range(2):
        (tmp_path / "src" / f"rank_{r}").mkdir(parents=True)
        write_safetensors(tmp_path / "src" / f"rank_{r}" / "m.safetensors",
                          {n: lay.slice(a, r) for n, a in fulls.items()})
    (tmp_path / "s.json").write_text(json.dumps({"parallel_layout_item": {
        n: {"dev_matrix": [2], "tensor_map": [-1, 0]} for n in fulls}}))
    tracemalloc.start()
    try:
        unified_safetensors(str(tmp_path / "src"), str(tmp_path / "s.json"), str(tmp_path / "out"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MiB for a model of 16 MiB"
    got = _unified_tensors(tmp_path / "out")
    for n, a in fulls.items():
        np.testing.assert_array_equal(got[n], a)


def test_choice_func_filters_and_renames(st_src, strategy, full, tmp_path):
    def choice(name):
        if name.startswith("layer2"):
            return False
        return "net." + name if name.endswith("weight") else True

    unified_safetensors(str(st_src), strategy, str(tmp_path), choice_func=choice)
    wm = json.loads((tmp_path / "param_name_map.json").read_text())["weight_map"]
    assert sorted(wm) == ["layer1.bias", "layer3.bias", "net.layer1.weight", "net.layer3.weight"]
    got = _unified_tensors(tmp_path)
    for n, a in got.items():
        np.testing.assert_array_equal(a, full[n.replace("net.", "")], err_msg=n)
    with pytest.raises(ValueError, match=r"'choice_func' must be bool or str.*int"):
        unified_safetensors(str(st_src), strategy, str(tmp_path / "bad"), choice_func=lambda n: 1)
    with pytest.raises(ValueError, match="names both"):
        unified_safetensors(str(st_src), strategy, str(tmp_path / "dup"), choice_func=lambda n: "same")
    assert not (tmp_path / "bad").exists() or not _files(tmp_path / "bad")


def test_small_split_gives_several_parts(st_src, strategy, full, tmp_path, monkeypatch):
    monkeypatch.setattr(targets_mod, "SPLIT_BYTES", 1_000_000)  # 2.68 MB of weights -> 3 parts
    unified_safetensors(str(st_src), strategy, str(tmp_path / "all"))
    wm = json.loads((tmp_path / "all" / "param_name_map.json").read_text())["weight_map"]
    # Largest first into the lightest part: layer1.weight, layer2.weight, then the rest together.
    assert wm == {"layer1.weight": "part0.safetensors", "layer2.weight": "part1.safetensors",
                  "layer3.weight": "part2.safetensors", "layer1.bias": "part2.safetensors",
                  "layer2.bias": "part2.safetensors", "layer3.bias": "part2.safetensors"}
    got = _unified_tensors(tmp_path / "all")
    for n in NAMES:
        np.testing.assert_array_equal(got[n], full[n])
    for k in range(3):
        _mindspore_header_ok(tmp_path / "all" / f"part{k}.safetensors")
    # split_dst_file=(k, n): task k of n writes its share of the parts; the map and hyper params come with task 1.
    unified_safetensors(str(st_src), strategy, str(tmp_path / "t2"), split_dst_file=(2, 3))
    assert _files(tmp_path / "t2") == ["part1.safetensors"]
    unified_safetensors(str(st_src), strategy, str(tmp_path / "t2"), split_dst_file=(1, 2))
    unified_safetensors(str(st_src), strategy, str(tmp_path / "t2"), split_dst_file=(2, 2))
    assert _files(tmp_path / "t2") == _files(tmp_path / "all")
    with pytest.raises(ValueError, match="split_dst_file"):
        unified_safetensors(str(st_src), strategy, str(tmp_path / "t3"), split_dst_file=(3, 2))
    # Parts written by worker processes are the same files.
    unified_safetensors(str(st_src), strategy, str(tmp_path / "procs"), max_process_num=3)
    for k in range(3):
        assert (tmp_path / "procs" / f"part{k}.safetensors").read_bytes() == \
            (tmp_path / "all" / f"part{k}.safetensors").read_bytes()


def test_file_suffix_and_several_files_per_rank(seed, strategy, full, tmp_path):
    src = _to_safetensors(seed, tmp_path / "src", "net-1_1.safetensors")
    # An older save (-1_0) and a later one (-2_10): the largest last two numbers win by default.
    _to_safetensors(seed, src, "net-1_0.safetensors", edit=lambda r, t: {n: v * 0 for n, v in t.items()})
    _to_safetensors(seed, src, "net-2_10.safetensors", edit=lambda r, t: {n: v + 1 for n, v in t.items()})
    unified_safetensors(str(src), strategy, str(tmp_path / "latest"))
    np.testing.assert_array_equal(_unified_tensors(tmp_path / "latest")["layer1.weight"], full["layer1.weight"] + 1)
    unified_safetensors(str(src), strategy, str(tmp_path / "old"), file_suffix="1_0")
    assert not _unified_tensors(tmp_path / "old")["layer1.weight"].any()
    unified_safetensors(str(src), strategy, str(tmp_path / "first"), file_suffix="-1_1")
    np.testing.assert_array_equal(_unified_tensors(tmp_path / "first")["layer1.weight"], full["layer1.weight"])
    with pytest.raises(ValueError, match=r"rank_0 holds no .ckpt or .safetensors file ending with '3_3'"):
        unified_safetensors(str(src), strategy, str(tmp_path / "none"), file_suffix="3_3")


def test_remove_redundancy_sources(seed, strategy, full, tmp_path, caplog):
    """Files saved with remove_redundancy hold each slice once; the merge reads each from its one holder."""
    strat = TrainStrategy.from_file(strategy)

    def dedup(r, tensors):
        keep = {}
        for n, v in tensors.items():
            if n not in strat:
                keep[n] = v
                continue
            lay = strat.layout(n, full[n].shape)
            _, holders = lay.unique_blocks
            if any(h[len(h) - 1 - (i % len(h))] == r for i, h in enumerate(holders) if r in h):
                keep[n] = v
        return keep

    src = _to_safetensors(seed, tmp_path / "src", edit=dedup, metadata={"remove_redundancy": "True"})
    with SafetensorsFile(src / "rank_0" / "net-1_1.safetensors") as f:
        assert "layer2.weight" not in f.names()  # held by another rank only
    unified_safetensors(str(src), strategy, str(tmp_path / "out"))  # metadata overrides the default, with a warning
    assert "deduplicated" in caplog.text
    got = _unified_tensors(tmp_path / "out")
    for n in NAMES:
        np.testing.assert_array_equal(got[n], full[n], err_msg=n)
    plain = _to_safetensors(seed, tmp_path / "plain", edit=dedup)  # no metadata: complete files expected
    with pytest.raises(FormatError, match=r"layer\d\.\w+' is in .* but missing from"):
        unified_safetensors(str(plain), strategy, str(tmp_path / "bad"))
    unified_safetensors(str(plain), strategy, str(tmp_path / "ok"), merge_with_redundancy=False)
    np.testing.assert_array_equal(_unified_tensors(tmp_path / "ok")["layer2.weight"], full["layer2.weight"])


def test_ckpt_and_pipeline_sources(ms_fixtures, tmp_path):
    """.ckpt rank files are accepted, and a merged pipeline strategy reads each stage's ranks."""
    pipe = ms_fixtures / "distributed" / "pipeline_2x4"
    unified_safetensors(str(pipe), str(ms_fixtures / "strategy" / "pipeline" / "merged.ckpt"), str(tmp_path))
    got = _unified_tensors(tmp_path)
    want = np.load(pipe / "full.npz")
    assert sorted(got) == sorted(want.files)
    for n in want.files:
        np.testing.assert_array_equal(got[n], want[n], err_msg=n)
    assert sorted(_read(tmp_path / "hyper_param.safetensors")) == ["global_step", "learning_rate"]


def test_unified_bad_inputs(st_src, seed, strategy, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(st_src, src)
    shutil.rmtree(src / "rank_5")
    with pytest.raises(ValueError, match="no rank_5 sub-directory"):
        unified_safetensors(str(src), strategy, str(tmp_path / "out"))
    (src / "rank_5").mkdir()
    with pytest.raises(ValueError, match=r"rank_5 holds no .ckpt or .safetensors"):
        unified_safetensors(str(src), strategy, str(tmp_path / "out"))
    shutil.copy(seed / "rank_5" / "checkpoint-1_1.ckpt", src / "rank_5")
    with pytest.raises(ValueError, match="mixes .ckpt and .safetensors"):
        unified_safetensors(str(src), strategy, str(tmp_path / "out"))
    (src / "rank_5" / "checkpoint-1_1.ckpt").unlink()
    (src / "rank_5" / "net-1_1.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(FormatError, match="rank_5"):
        unified_safetensors(str(src), strategy, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() or not _files(tmp_path / "out")
    with pytest.raises(ValueError, match="can not be a file"):
        unified_safetensors(str(seed / "full.npz"), strategy, str(tmp_path / "out"))
    with pytest.raises(ValueError, match="strategy file .*nope.ckpt does not exist"):
        unified_safetensors(str(st_src), str(tmp_path / "nope.ckpt"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="max_process_num"):
        unified_safetensors(str(st_src), strategy, str(tmp_path / "out"), max_process_num=0)


# ------------------------------------------------------------------------------ load_distributed_checkpoint: unified
def _unified_load(**kw):
    return load_distributed_checkpoint(kw.pop("network", None), format="safetensors", **kw)


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_load_unified_slices_for_rank(unified, full, rank):
    layout = {"layer1.weight": [[4], [0, -1], [196, 512], 0, True, ""],
              "layer2.weight": [[4], [-1, -1], [128, 512], 0, True, "4-opt-shard-group"],
              "layer3.weight": [[2, 2], [1, -1], [256, 10], 0, True, ""]}
    got = _unified_load(network=seed_network(shard=False), predict_strategy=layout, unified_safetensors_dir=str(unified),
                        rank_id=rank, return_param_dict=True)
    assert sorted(got) == sorted(NAMES + ["global_step", "learning_rate"])
    np.testing.assert_array_equal(got["layer1.weight"].asnumpy(), full["layer1.weight"][196 * rank:196 * (rank + 1)])
    np.testing.assert_array_equal(got["layer2.weight"].asnumpy(), full["layer2.weight"][128 * rank:128 * (rank + 1)])
    want3 = Layout((2, 2), (1, -1), (512, 10)).slice(full["layer3.weight"], rank)
    np.testing.assert_array_equal(got["layer3.weight"].asnumpy(), want3)
    for n in ("layer1.bias", "layer2.bias", "layer3.bias"):  # not in the predict layout: whole
        np.testing.assert_array_equal(got[n].asnumpy(), full[n])


def test_load_unified_into_network(unified, st_src, strategy, full, tmp_path):
    net = seed_network(shard=False)
    assert _unified_load(network=net, unified_safetensors_dir=str(unified)) is True
    for n, p in net.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), full[n], err_msg=n)
    # name_map: network names -> the names in the unified files (here renamed by choice_func).
    renamed = tmp_path / "renamed"
    unified_safetensors(str(st_src), strategy, str(renamed), choice_func=lambda n: "backbone." + n)
    net = seed_network(shard=False)
    _unified_load(network=net, unified_safetensors_dir=str(renamed), name_map={n: "backbone." + n for n in NAMES})
    for n, p in net.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), full[n], err_msg=n)


@pytest.mark.parametrize("dst,gold", [("dst_4dev", "transformed"), ("opt_4dev", "transformed_opt")])
def test_load_unified_writer_equals_mindspore_transform(unified, ms_fixtures, seed, tmp_path, dst, gold):
    """network=None: every rank's file, sliced by a strategy file, equals MindSpore's transform_checkpoints."""
    out = tmp_path / "out"
    assert _unified_load(predict_strategy=str(ms_fixtures / "strategy" / f"{dst}.ckpt"),
                         unified_safetensors_dir=str(unified), dst_safetensors_dir=str(out), max_process_num=1)
    assert _files(out) == [f"rank_{r}/net.safetensors" for r in range(4)]
    for r in range(4):
        got = _read(out / "rank_{}".format(r) / "net.safetensors")
        with CkptFile(seed / gold / f"rank_{r}" / f"checkpoint_{r}.ckpt") as want:
            assert sorted(got) == sorted(want.names())
            for n in want.names():
                np.testing.assert_array_equal(got[n], want.read(n), err_msg=f"rank {r} {n}")
        _mindspore_header_ok(out / f"rank_{r}" / "net.safetensors")


def test_load_unified_writer_one_rank_ckpt_and_processes(unified, ms_fixtures, seed, tmp_path):
    layout = {"layer1.weight": [[4], [0, -1], [], 0], "layer3.weight": [[2, 2], [0, -1], [], 0]}  # dst_4dev
    _unified_load(predict_strategy=layout, unified_safetensors_dir=str(unified),
                  dst_safetensors_dir=str(tmp_path / "c"), rank_id=2, output_format="ckpt")
    assert _files(tmp_path / "c") == ["rank_2/net.ckpt"]
    with CkptFile(tmp_path / "c" / "rank_2" / "net.ckpt") as f, \
            CkptFile(seed / "transformed" / "rank_2" / "checkpoint_2.ckpt") as want:
        assert sorted(f.names()) == ["global_step", "layer1.weight", "layer3.weight", "learning_rate"]
        for n in f.names():
            np.testing.assert_array_equal(f.read(n), want.read(n), err_msg=n)
    # All ranks of the layout dict, by 2 worker processes.
    _unified_load(predict_strategy=layout, unified_safetensors_dir=str(unified),
                  dst_safetensors_dir=str(tmp_path / "p"), max_process_num=2)
    assert _files(tmp_path / "p") == [f"rank_{r}/net.safetensors" for r in range(4)]
    for r in range(4):
        got = _read(tmp_path / "p" / f"rank_{r}" / "net.safetensors")
        with CkptFile(seed / "transformed" / f"rank_{r}" / f"checkpoint_{r}.ckpt") as want:
            for n in got:
                np.testing.assert_array_equal(got[n], want.read(n), err_msg=f"rank {r} {n}")


def test_load_unified_reads_only_its_blocks(unified, full, monkeypatch):
    sources = []
    real = sources_mod.UnifiedCheckpoint.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        sources.append(self.source)

    monkeypatch.setattr(sources_mod.UnifiedCheckpoint, "__init__", spy)
    _unified_load(network=seed_network(shard=False), predict_strategy={"layer1.weight": [[4], [0, -1], [], 0],
                                                         "layer2.weight": [[4], [-1, 0], [], 0]},
                  unified_safetensors_dir=str(unified), rank_id=1, return_param_dict=True)
    want = (full["layer1.weight"].nbytes + full["layer2.weight"].nbytes) // 4 + sum(
        full[n].nbytes for n in NAMES if n not in ("layer1.weight", "layer2.weight"))
    assert sources[0].stats.bytes_read == want


def test_load_unified_bad_inputs(unified, st_src, tmp_path, full):
    net = seed_network(shard=False)
    before = {n: p.asnumpy().copy() for n, p in net.parameters_and_names()}
    u = str(unified)
    for kw, msg in [({"checkpoint_filenames": ["a.safetensors"]}, "'checkpoint_filenames' must be None"),
                    ({"train_strategy_filename": "s.ckpt"}, "'train_strategy_filename' must be None"),
                    ({"dec_key": b"0" * 16}, "'dec_key' must be None"),
                    ({"strict_load": True}, "strict_load and dec_mode must be default"),
                    ({"output_format": "npz"}, "'output_format' must be 'ckpt' or 'safetensors'")]:
        with pytest.raises(ValueError, match=msg):
            _unified_load(network=net, unified_safetensors_dir=u, **kw)
    with pytest.raises(ValueError, match="'format' must be 'safetensors'"):
        load_distributed_checkpoint(net, unified_safetensors_dir=u)
    with pytest.raises(ValueError, match="'dst_safetensors_dir' can not be None when network is None"):
        _unified_load(unified_safetensors_dir=u)
    with pytest.raises(ValueError, match="does not exist"):
        _unified_load(network=net, unified_safetensors_dir=str(tmp_path / "nope"))
    # No map and several weight files.
    two = tmp_path / "two"
    two.mkdir()
    for k in range(2):
        shutil.copy(unified / "part0.safetensors", two / f"part{k}.safetensors")
    with pytest.raises(ValueError, match=f"'param_name_map.json' in the unified safetensors directory {two}"):
        _unified_load(network=net, unified_safetensors_dir=str(two))
    # A map naming a missing part file, a tensor its part lacks, an unreadable map.
    bad = tmp_path / "bad"
    shutil.copytree(unified, bad)
    wm = json.loads((bad / "param_name_map.json").read_text())
    wm["weight_map"]["layer2.weight"] = "part7.safetensors"
    (bad / "param_name_map.json").write_text(json.dumps(wm))
    with pytest.raises(FormatError, match=r"maps parameter 'layer2.weight' to part7.safetensors.*does not exist"):
        _unified_load(network=net, unified_safetensors_dir=str(bad))
    wm["weight_map"]["layer2.weight"] = "part0.safetensors"
    wm["weight_map"]["layer9.weight"] = "part0.safetensors"
    (bad / "param_name_map.json").write_text(json.dumps(wm))
    with pytest.raises(FormatError, match=r"part0.safetensors: parameter 'layer9.weight' is not in it"):
        _unified_load(network=None, unified_safetensors_dir=str(bad), dst_safetensors_dir=str(tmp_path / "o"))
    (bad / "param_name_map.json").write_text("{not json")
    with pytest.raises(FormatError, match="param_name_map.json: not a readable parameter map"):
        _unified_load(network=net, unified_safetensors_dir=str(bad))
    # A tensor whose shape is not the network's; a predict layout that does not divide it.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    write_safetensors(wrong / "part0.safetensors", {**full, "layer2.weight": full["layer2.weight"][:100]})
    with pytest.raises(ValueError, match=r"'layer2.weight' has shape \(512, 512\).*\(100, 512\).*part0.safetensors"):
        _unified_load(network=net, unified_safetensors_dir=str(wrong))
    with pytest.raises(ValueError, match=r"layer3.bias.*\(10,\).*not divisible"):
        _unified_load(network=net, unified_safetensors_dir=u, predict_strategy={"layer3.bias": [[4], [0], [], 0]})
    with pytest.raises(ValueError, match="first four elements"):
        _unified_load(network=net, unified_safetensors_dir=u, predict_strategy={"layer1.weight": [[4], [0, -1], [], 2]})
    with pytest.raises(ValueError, match="different network"):
        _unified_load(network=net, unified_safetensors_dir=u, predict_strategy={"encoder.w": [[4], [0, -1], [], 0]})
    for n, p in net.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), before[n])
    assert not (tmp_path / "o").exists() or not _files(tmp_path / "o")


# ------------------------------------------------------------------------------ MPI
_MPI_SCRIPT = '''
import sys
import numpy as np
sys.path.insert(0, sys.argv[3])
import distinfer as ms
from distinfer.communication import _backend, get_rank, init
from distinfer.layout import Layout
from distinfer.parallel import load_distributed_checkpoint
from seed_net import seed_network

init()
unified, out, _, full_npz = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
n, me = _backend.world().size, get_rank()
full = dict(np.load(full_npz))
errors = []
try:
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel")
    net = seed_network(shard=False)
    net.layer1.matmul.shard(((1, n), (n, 1)))
    net.layer3.matmul.shard(((2, 2), (2, 1)))
    model = ms.Model(net)
    x = np.random.RandomState(7).rand(4 * n, 1, 28, 28).astype(np.float32)[4 * me:4 * me + 4]
    layout = model.infer_predict_layout(ms.Tensor(x))
    assert load_distributed_checkpoint(net, predict_strategy=layout, format="safetensors",
                                       unified_safetensors_dir=unified) is True
    rows = 784 // n
    np.testing.assert_array_equal(net.layer1.weight.asnumpy(), full["layer1.weight"][me * rows:(me + 1) * rows])
    lay3 = layout["layer3.weight"]
    np.testing.assert_array_equal(net.layer3.weight.asnumpy(),
                                  Layout(lay3[0], lay3[1], (512, 10)).slice(full["layer3.weight"], me))
    h = x.reshape(len(x), -1)
    for k in (1, 2):
        h = np.maximum(h @ full[f"layer{k}.weight"] + full[f"layer{k}.bias"], 0)
    want = h @ full["layer3.weight"] + full["layer3.bias"]
    y = model.predict(ms.Tensor(x)).asnumpy()
    assert np.abs(y - want).max() <= 1e-5 * np.abs(want).max()
    # Writer mode: the ranks of the layout divided among the MPI ranks.
    load_distributed_checkpoint(None, predict_strategy=layout, format="safetensors", unified_safetensors_dir=unified,
                                dst_safetensors_dir=out)
except Exception as exc:  # reported by rank 0
    errors.append(f"rank {me}: {type(exc).__name__}: {exc}")
gathered = _backend.world().allgather_object(errors)
if me == 0:
    print("FAIL " + " | ".join(e for g in gathered for e in g) if any(gathered) else "PASS", flush=True)
'''


@pytest.mark.mpi
def test_mpi_unified_load_4_ranks(unified, seed, full, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(_MPI_SCRIPT)
    out = tmp_path / "out"
    res = launch.run(4, [str(script), str(unified), str(out), str(ROOT / "examples"), str(seed / "full.npz")],
                     capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.splitlines() == ["PASS"], res.stdout[-2000:] + res.stderr[-2000:]
    assert _files(out) == [f"rank_{r}/net.safetensors" for r in range(4)]
    lay3 = Layout((2, 2), (0, -1), (512, 10))  # layer3 ((2, 2), (2, 1)) on 4 devices: rows split 2 ways
    for r in range(4):
        got = _read(out / f"rank_{r}" / "net.safetensors")
        np.testing.assert_array_equal(got["layer1.weight"], full["layer1.weight"][196 * r:196 * (r + 1)])
        np.testing.assert_array_equal(got["layer2.weight"], full["layer2.weight"])
        np.testing.assert_array_equal(got["layer3.weight"], lay3.slice(full["layer3.weight"], r))
        for n in ("layer1.bias", "layer2.bias", "layer3.bias"):
            np.testing.assert_array_equal(got[n], full[n])
