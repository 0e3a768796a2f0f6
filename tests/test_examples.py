"""The tutorial samples run end to end on 8 ranks, on a small MNIST folder passed as DATA_PATH.

``train_saving.py`` -> ``test_loading.py`` is the seed workflow (the demo runs it on the embedded
subset); ``pipeline_train.py`` is MindSpore's pipeline-parallel sample. Each uses its sample exactly.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import distinfer as ms

from _examples import launch_example, printed_arrays, write_mnist


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory) -> Path:
    """256 training digits from the embedded subset, as plain idx files (8 batches of 32)."""
    return write_mnist(tmp_path_factory.mktemp("mnist"), 256)


def _launch(script: str, cwd: Path, data: Path) -> str:
    return "".join(launch_example(8, script, cwd, data))


def test_saving_then_loading_samples(tmp_path, small_mnist):
    out = _launch("train_saving.py", tmp_path, small_mnist)
    assert re.search(r"epoch: 10 step: \d+, loss is", out), out[-2000:]
    files = sorted(tmp_path.glob("src_checkpoints/rank_*/checkpoint-10_8.ckpt"))
    assert len(files) == 8 and (tmp_path / "src_strategy.ckpt").is_file()
    # print(predict_result) shows numpy's text of each rank's [1, 10] prediction, as MindSpore's does.
    outputs = launch_example(8, "test_loading.py", tmp_path, small_mnist)
    predictions = printed_arrays(outputs, (1, 10))  # every rank fed the same seeded input
    assert len(predictions) == 8 and all(np.array_equal(p, predictions[0]) for p in predictions)
    assert sorted(p.name for p in (tmp_path / "mindir").iterdir()) == [f"net_rank_{r}.mindir" for r in range(8)]
    from distinfer.exporter.verify import verify_export

    report = verify_export(str(tmp_path / "mindir"), checkpoint=str(tmp_path / "src_checkpoints"),
                           strategy=str(tmp_path / "src_strategy.ckpt"))
    assert report.ok, str(report)


def test_pipeline_sample_trains_and_merges(tmp_path, small_mnist):
    out = _launch("pipeline_train.py", tmp_path, small_mnist)
    assert re.search(r"epoch: 3 step: \d+, loss is", out), out[-2000:]
    strategies = sorted((tmp_path / "src_pipeline_strategys").iterdir())
    assert len(strategies) == 8
    ms.merge_pipeline_strategys(str(tmp_path / "src_pipeline_strategys"), str(tmp_path / "merged.ckpt"))
    merged = ms.build_searched_strategy(str(tmp_path / "merged.ckpt"))
    assert {"0-layer1.weight", "1-layer2.weight", "1-layer3.weight"} <= set(merged)
    # Both stages' rank files (optimizer-sharded where the parallel optimizer applied) merge to full tensors.
    src = tmp_path / "src_checkpoints_pipeline"
    ms.transform_checkpoints(str(src), str(tmp_path / "full"), "full_", str(tmp_path / "merged.ckpt"), None)
    full = ms.load_checkpoint(str(tmp_path / "full" / "rank_0" / "full_0.ckpt"))
    shapes = {k: tuple(full[k].shape) for k in ("layer1.weight", "layer2.weight", "layer3.weight", "accum.layer2.weight")}
    assert shapes == {"layer1.weight": (512, 784), "layer2.weight": (512, 512), "layer3.weight": (10, 512),
                      "accum.layer2.weight": (512, 512)}, shapes
    # Values, not just shapes: every rank file's tensor is its block (optimizer shard included) of the
    # merged tensor, under the merged strategy's layout for its stage (ranks 0-3 stage 0, 4-7 stage 1).
    from distinfer.io import CkptFile
    from distinfer.reshard.planning import TrainStrategy

    strat = TrainStrategy.from_file(tmp_path / "merged.ckpt")
    seen = {0: set(), 1: set()}
    for r in range(8):
        with CkptFile(next((src / f"rank_{r}").glob("*.ckpt"))) as f:
            for n in f.names():
                if n in strat and n in full:
                    whole = full[n].asnumpy()
                    np.testing.assert_array_equal(f.read(n), strat.layout(n, whole.shape).slice(whole, r % 4),
                                                  err_msg=f"rank {r} {n}")
                    seen[r // 4].add(n)
    assert {"layer1.weight", "layer1.bias"} <= seen[0], seen
    assert {"layer2.weight", "layer3.weight", "accum.layer2.weight"} <= seen[1], seen
