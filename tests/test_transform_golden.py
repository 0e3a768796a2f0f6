"""Golden answers made by real MindSpore: transforms, merges and rank lists (fixtures distributed/, strategy/)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from distinfer.io import CkptFile
from distinfer.parallel import (load_distributed_checkpoint, rank_list_for_transform, transform_checkpoint_by_rank,
                                transform_checkpoints)
from seed_net import seed_network  # examples/ is on sys.path (conftest.py)



def _read_all(path) -> dict:
    with CkptFile(path) as f:
        return {n: (f.entry(n).dtype.name, f.read(n)) for n in f.names()}, f.names()


@pytest.mark.parametrize("dst,gold", [("dst_4dev", "transformed"), ("opt_4dev", "transformed_opt")])
def test_transform_checkpoints_reproduces_mindspore(ms_fixtures, tmp_path, dst, gold):
    seed = ms_fixtures / "distributed" / "seed_8dev"
    transform_checkpoints(str(seed), str(tmp_path), "checkpoint_", str(ms_fixtures / "strategy" / "seed_8dev.ckpt"),
                          str(ms_fixtures / "strategy" / f"{dst}.ckpt"))
    got_files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    want_files = sorted(p.relative_to(seed / gold).as_posix() for p in (seed / gold).rglob("*") if p.is_file())
    assert got_files == want_files
    for rel in want_files:
        (got, got_names), (want, want_names) = _read_all(tmp_path / rel), _read_all(seed / gold / rel)
        assert got_names == want_names, rel
        for n in want_names:
            assert got[n][0] == want[n][0], (rel, n)
            np.testing.assert_array_equal(got[n][1], want[n][1], err_msg=f"{rel}:{n}")
        # distinfer's writer is MindSpore's wire format: the files are byte-identical.
        assert (tmp_path / rel).read_bytes() == (seed / gold / rel).read_bytes(), rel


def test_transform_checkpoint_by_rank_equals_transform(ms_fixtures, tmp_path):
    seed = ms_fixtures / "distributed" / "seed_8dev"
    src, dst = str(ms_fixtures / "strategy" / "seed_8dev.ckpt"), str(ms_fixtures / "strategy" / "dst_4dev.ckpt")
    for r in range(4):
        needed = rank_list_for_transform(r, src, dst)
        files = {s: str(seed / f"rank_{s}" / "checkpoint-1_1.ckpt") for s in needed}
        out = tmp_path / f"r{r}.ckpt"
        transform_checkpoint_by_rank(r, files, str(out), src, dst)
        assert out.read_bytes() == (seed / "transformed" / f"rank_{r}" / f"checkpoint_{r}.ckpt").read_bytes()


@pytest.mark.parametrize("case", ["seed_8dev", "pipeline_2x4"])
def test_transform_to_full_gives_full_npz(ms_fixtures, tmp_path, case):
    strategy = "seed_8dev.ckpt" if case == "seed_8dev" else "pipeline/merged.ckpt"
    transform_checkpoints(str(ms_fixtures / "distributed" / case), str(tmp_path), "full_",
                          str(ms_fixtures / "strategy" / strategy), None)
    assert sorted(os.listdir(tmp_path)) == ["rank_0"]
    full = np.load(ms_fixtures / "distributed" / case / "full.npz")
    with CkptFile(tmp_path / "rank_0" / "full_0.ckpt") as f:
        for k in full.files:
            np.testing.assert_array_equal(f.read(k), full[k])
        assert f.read("global_step").tolist() == [1]


def test_transformed_merge_back(ms_fixtures, tmp_path):
    """MindSpore's own transformed files (dst_4dev / opt_4dev) merge back to full.npz."""
    seed = ms_fixtures / "distributed" / "seed_8dev"
    full = np.load(seed / "full.npz")
    for gold, strat in [("transformed", "dst_4dev.ckpt"), ("transformed_opt", "opt_4dev.ckpt")]:
        out = tmp_path / gold
        transform_checkpoints(str(seed / gold), str(out), "m_", str(ms_fixtures / "strategy" / strat), None)
        with CkptFile(out / "rank_0" / "m_0.ckpt") as f:
            for k in full.files:
                np.testing.assert_array_equal(f.read(k), full[k])


def test_rank_list_for_transform_matches_mindspore(ms_fixtures):
    answers = json.loads((ms_fixtures / "strategy" / "expected.json").read_text())["files"]["rank_list_for_transform"]
    assert len(answers) == 7
    for pair, per_rank in answers.items():
        src, dst = pair.split(" -> ")
        dst_path = None if dst == "None" else str(ms_fixtures / "strategy" / dst)
        for r, want in per_rank.items():
            assert rank_list_for_transform(int(r), str(ms_fixtures / "strategy" / src), dst_path) == want, (pair, r)
    assert rank_list_for_transform(0, None, str(ms_fixtures / "strategy" / "dst_4dev.ckpt")) == [0]
    with pytest.raises(ValueError, match="Rank 1 is not in the current stage"):
        rank_list_for_transform(1, str(ms_fixtures / "strategy" / "seed_8dev.ckpt"), None)


@pytest.mark.parametrize("strategy", ["seed_8dev.ckpt", "seed_8dev.json"])
def test_load_distributed_checkpoint_full(ms_fixtures, strategy):
    seed = ms_fixtures / "distributed" / "seed_8dev"
    net = seed_network(shard=False)
    files = [str(seed / f"rank_{r}" / "checkpoint-1_1.ckpt") for r in range(8)]
    assert load_distributed_checkpoint(net, files, None, train_strategy_filename=str(ms_fixtures / "strategy" / strategy))
    full = np.load(seed / "full.npz")
    got = {n: p.asnumpy() for n, p in net.parameters_and_names()}
    assert sorted(got) == sorted(full.files)
    for k in full.files:
        np.testing.assert_array_equal(got[k], full[k])


def test_load_distributed_checkpoint_pipeline_per_stage(ms_fixtures, caplog):
    case = ms_fixtures / "distributed" / "pipeline_2x4"
    full = np.load(case / "full.npz")
    merged = str(ms_fixtures / "strategy" / "pipeline" / "merged.ckpt")
    for stage, names in [(0, ["layer1.weight", "layer1.bias"]),
                         (1, ["layer2.weight", "layer2.bias", "layer3.weight", "layer3.bias"])]:
        files = [str(case / f"rank_{r}" / "checkpoint-1_1.ckpt") for r in range(4 * stage, 4 * stage + 4)]
        got = load_distributed_checkpoint(seed_network(shard=False), files, None, train_strategy_filename=merged,
                                          return_param_dict=True)
        assert sorted(got) == sorted(names)
        for k in names:
            np.testing.assert_array_equal(got[k].asnumpy(), full[k])
    assert "not in the checkpoint file" in caplog.text


def test_load_distributed_checkpoint_from_opt_sharded_files(ms_fixtures):
    seed = ms_fixtures / "distributed" / "seed_8dev"
    files = [str(seed / "transformed_opt" / f"rank_{r}" / f"checkpoint_{r}.ckpt") for r in range(4)]
    net = seed_network(shard=False)
    assert load_distributed_checkpoint(net, files, None, str(ms_fixtures / "strategy" / "opt_4dev.ckpt")) is True
    full = np.load(seed / "full.npz")
    for n, p in net.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), full[n])
