"""transform_checkpoints' per-sub-network mode (spec §7): one pipeline stage at a time -> ``_part<stage>`` files.

Source: MindSpore's ``pipeline_2x4`` fixtures (8 ranks, 2 stages of 4, parallel optimizer) with the
per-stage strategy files ``stages/src_strategy_0.ckpt`` (stage 0: layer1) and
``src_strategy_4.ckpt`` (stage 1: layer2, layer3); destination: the whole network on 4 devices
(``dst_4dev.ckpt``, one stage). Reference: the destination layouts applied to ``full.npz`` in numpy.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import distinfer as ms
from distinfer.io import CkptFile, SafetensorsFile
from distinfer.layout import Layout
from distinfer.parallel import rank_list_for_transform, transform_checkpoint_by_rank, transform_checkpoints
from distinfer.reshard.planning import TrainStrategy

STAGE_FILES = {0: "src_strategy_0.ckpt", 1: "src_strategy_4.ckpt"}
STAGE_PARAMS = {0: ["layer1.bias", "layer1.weight"],
                1: ["layer2.bias", "layer2.weight", "layer3.bias", "layer3.weight"]}


@pytest.fixture(scope="module")
def pipe(ms_fixtures) -> Path:
    return ms_fixtures / "distributed" / "pipeline_2x4"


def _stage_strategy(ms_fixtures, stage: int) -> str:
    return str(ms_fixtures / "strategy" / "pipeline" / "stages" / STAGE_FILES[stage])


def _want(ms_fixtures, pipe, dst: str, rank: int) -> dict:
    """Rank ``rank``'s blocks of every parameter of full.npz under the destination strategy ``dst``."""
    strat = TrainStrategy.from_file(ms_fixtures / "strategy" / dst)
    full = np.load(pipe / "full.npz")
    return {n: strat.layout(n, full[n].shape).slice(full[n], rank) for n in full.files}


def _files(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


@pytest.mark.parametrize("dst", ["dst_4dev.ckpt", "opt_4dev.ckpt"])
def test_each_stage_to_part_files_and_back(ms_fixtures, pipe, tmp_path, dst):
    for stage in (0, 1):
        transform_checkpoints(str(pipe), str(tmp_path), "checkpoint_", _stage_strategy(ms_fixtures, stage),
                              str(ms_fixtures / "strategy" / dst))
    assert _files(tmp_path) == [f"rank_{r}/checkpoint_{r}_part{s}.ckpt" for r in range(4) for s in (0, 1)]
    for r in range(4):
        want = _want(ms_fixtures, pipe, dst, r)
        for stage in (0, 1):
            with CkptFile(tmp_path / f"rank_{r}" / f"checkpoint_{r}_part{stage}.ckpt") as f:
                # The stage's parameters, then the entries not in the strategy (copied from the stage's files).
                assert f.names() == [n for n in f.names() if n in STAGE_PARAMS[stage]] + ["global_step",
                                                                                         "learning_rate"]
                assert sorted(f.names()[:-2]) == STAGE_PARAMS[stage]
        got = ms.load_segmented_checkpoints(str(tmp_path / f"rank_{r}"))
        assert sorted(got) == sorted(list(want) + ["global_step", "learning_rate"])
        for n, block in want.items():
            np.testing.assert_array_equal(got[n].asnumpy(), block, err_msg=f"rank {r} {n}")


def test_stage_files_come_from_the_stage_ranks(ms_fixtures, pipe, tmp_path):
    """Stage 1 reads rank_4..rank_7 only: without them it fails naming rank_4; stage 0 does not need them."""
    src = tmp_path / "src"
    shutil.copytree(pipe, src)
    for r in range(4, 8):
        shutil.rmtree(src / f"rank_{r}")
    dst = str(ms_fixtures / "strategy" / "dst_4dev.ckpt")
    transform_checkpoints(str(src), str(tmp_path / "out"), "c_", _stage_strategy(ms_fixtures, 0), dst)
    assert _files(tmp_path / "out") == [f"rank_{r}/c_{r}_part0.ckpt" for r in range(4)]
    with pytest.raises(ValueError, match="no rank_4 sub-directory"):
        transform_checkpoints(str(src), str(tmp_path / "out"), "c_", _stage_strategy(ms_fixtures, 1), dst)
    assert _files(tmp_path / "out") == [f"rank_{r}/c_{r}_part0.ckpt" for r in range(4)]


def test_safetensors_output_and_by_rank(ms_fixtures, pipe, tmp_path):
    dst = str(ms_fixtures / "strategy" / "dst_4dev.ckpt")
    src1 = _stage_strategy(ms_fixtures, 1)
    transform_checkpoints(str(pipe), str(tmp_path / "st"), "net_", src1, dst, output_format="safetensors")
    transform_checkpoints(str(pipe), str(tmp_path / "ck"), "net_", src1, dst)
    assert _files(tmp_path / "st") == [f"rank_{r}/net_{r}_part1.safetensors" for r in range(4)]
    for r in range(4):
        with SafetensorsFile(tmp_path / "st" / f"rank_{r}" / f"net_{r}_part1.safetensors") as a, \
                CkptFile(tmp_path / "ck" / f"rank_{r}" / f"net_{r}_part1.ckpt") as b:
            assert sorted(a.names()) == sorted(b.names())
            for n in b.names():
                np.testing.assert_array_equal(a.read(n), b.read(n))
        # transform_checkpoint_by_rank: the stage's files keyed by local rank give the same _part1 file.
        needed = rank_list_for_transform(r, src1, dst)
        files = {k: str(next((pipe / f"rank_{4 + k}").glob("*.ckpt"))) for k in needed}
        out = tmp_path / f"by_rank_{r}.ckpt"
        transform_checkpoint_by_rank(r, files, str(out), src1, dst)
        assert out.read_bytes() == (tmp_path / "ck" / f"rank_{r}" / f"net_{r}_part1.ckpt").read_bytes()


def test_ordinary_transforms_are_unchanged(ms_fixtures, tmp_path):
    """Equal parameter sets (or a merged pipeline source) keep the plain ``{prefix}{r}.ckpt`` output."""
    seed = ms_fixtures / "distributed" / "seed_8dev"
    strategies = ms_fixtures / "strategy"
    transform_checkpoints(str(seed), str(tmp_path / "a"), "checkpoint_", str(strategies / "seed_8dev.ckpt"),
                          str(strategies / "dst_4dev.ckpt"))
    assert _files(tmp_path / "a") == [f"rank_{r}/checkpoint_{r}.ckpt" for r in range(4)]
    transform_checkpoints(str(ms_fixtures / "distributed" / "pipeline_2x4"), str(tmp_path / "b"), "c_",
                          str(ms_fixtures / "strategy" / "pipeline" / "merged.ckpt"),
                          str(ms_fixtures / "strategy" / "dst_4dev.ckpt"))
    assert _files(tmp_path / "b") == [f"rank_{r}/c_{r}.ckpt" for r in range(4)]


def test_subset_strategy_without_stage_is_refused(ms_fixtures, pipe, tmp_path):
    """A subset source strategy that records no stage (no operator items) cannot name its part file."""
    obj = {"current_stage": 1, "parallel_strategy_item": {},
           "parallel_layout_item": {"layer1.weight": {"dev_matrix": [2, 2], "tensor_map": [-1, 0],
                                                      "opt_weight_shard_step": 2, "opt_weight_shard_size": -1},
                                    "layer1.bias": {"dev_matrix": [4], "tensor_map": [-1]}}}
    strat = tmp_path / "stage.json"
    strat.write_text(json.dumps(obj))
    with pytest.raises(ValueError, match=r"strict subset .*no operator strategy items"):
        transform_checkpoints(str(pipe), str(tmp_path / "out"), "c_", str(strat),
                              str(ms_fixtures / "strategy" / "dst_4dev.ckpt"))
    assert not (tmp_path / "out").exists()


def test_part_blocks_are_layout_slices(ms_fixtures, pipe, tmp_path):
    """One explicit block: rank 3's layer1.weight is rows 588:784 of the full tensor (dst_4dev: rows / 4)."""
    transform_checkpoints(str(pipe), str(tmp_path), "p_", _stage_strategy(ms_fixtures, 0),
                          str(ms_fixtures / "strategy" / "dst_4dev.ckpt"))
    full = np.load(pipe / "full.npz")
    with CkptFile(tmp_path / "rank_3" / "p_3_part0.ckpt") as f:
        np.testing.assert_array_equal(f.read("layer1.weight"), full["layer1.weight"][588:])
        np.testing.assert_array_equal(f.read("layer1.weight"),
                                      Layout((4,), (0, -1), (784, 512)).slice(full["layer1.weight"], 3))
