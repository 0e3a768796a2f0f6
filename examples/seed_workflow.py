"""The seed workflow end to end: MindSpore's "Model Saving" then "Model Loading" tutorials on 8 ranks.

    python3 dev.py demo                 # from a fresh clone (sets up .venv first)
    python examples/seed_workflow.py [--workdir DIR] [--retrain]

1. **Saving** (skipped when ``src_checkpoints/`` exists): ``scripts/run_saving.sh`` trains the
   sharded seed network on 8 ranks and leaves ``src_checkpoints/rank_{0..7}/checkpoint-10_*.ckpt``
   and ``src_strategy.ckpt``.
2. **Loading**: ``scripts/run_loading.sh`` loads those slices into the sharded network on 8 ranks,
   predicts, and exports ``mindir/net_rank_{0..7}.mindir``; each rank's output is in
   ``log_output/1/rank.<r>/stdout``.
3. **Summary**: each rank's prediction, the held-out accuracy of the trained weights (merged from
   the rank files) on the 1,000 test digits, and a check that the exported per-rank weights
   reassemble to the checkpoints.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def _step(title: str, script: str, workdir: Path) -> float:
    print(f"\n== {title}: bash scripts/{script} (in {workdir})", flush=True)
    start = time.perf_counter()
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / script)], cwd=workdir, env=env)
    if proc.returncode:
        sys.exit(f"{script} failed with exit code {proc.returncode}")
    return time.perf_counter() - start


def _predictions(workdir: Path) -> list[str]:
    """The printed prediction of each rank, from log_output/1/rank.<r>/stdout."""
    out = []
    for r in range(8):
        text = (workdir / "log_output" / "1" / f"rank.{r}" / "stdout").read_text()
        match = re.search(r"Tensor\(shape=\[[^\]]*\], dtype=\w+, value=\s*(\[\[.*?\]\])", text, flags=re.S)
        values = " ".join(match.group(1).split()) if match else "(no prediction printed)"
        out.append(f"  rank {r}: shape [1, 10], argmax {np.argmax(_floats(values)) if match else '-'}: {values}")
    return out


def _floats(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+\.\d*(?:e[-+]?\d+)?", text)]


def _held_out_accuracy(workdir: Path) -> float:
    """Merge the 8 rank files into full weights (one process) and score the embedded test split."""
    import distinfer as ms
    import distinfer.dataset as ds
    from seed_net import seed_network

    ms.reset_auto_parallel_context()
    net = seed_network(shard=False)
    files = [sorted(glob.glob(str(workdir / "src_checkpoints" / f"rank_{r}" / "checkpoint-*.ckpt")))[-1]
             for r in range(8)]
    ms.load_distributed_checkpoint(net, files, None, train_strategy_filename=str(workdir / "src_strategy.ckpt"))
    test = ds.MnistDataset(ds.embedded_mnist_dir(), usage="test", shuffle=False)
    test = test.map([ds.vision.Rescale(1.0 / 255.0, 0), ds.vision.Normalize(mean=(0.1307,), std=(0.3081,)),
                     ds.vision.HWC2CHW()], "image").map(ds.transforms.TypeCast(ms.int32), "label").batch(250)
    model = ms.Model(net, ms.nn.CrossEntropyLoss(), metrics={"accuracy"})
    return model.eval(test)["accuracy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=str(ROOT / "workdir"), help="where the files go (default: workdir/)")
    parser.add_argument("--retrain", action="store_true", help="run the saving step even if checkpoints exist")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    t_save = 0.0
    if args.retrain or not (workdir / "src_checkpoints").is_dir():
        t_save = _step("Model Saving (8 ranks)", "run_saving.sh", workdir)
    else:
        print(f"== Model Saving skipped: {workdir / 'src_checkpoints'} exists (--retrain to redo it)")
    t_load = _step("Model Loading (8 ranks)", "run_loading.sh", workdir)

    from distinfer.exporter.verify import verify_export

    accuracy = _held_out_accuracy(workdir)
    report = verify_export(str(workdir / "mindir"), checkpoint=str(workdir / "src_checkpoints"),
                           strategy=str(workdir / "src_strategy.ckpt"))
    print("\n== Summary")
    print(f"saving: {t_save:.1f} s, loading + predict + export: {t_load:.1f} s on 8 ranks")
    print("predictions (each rank predicts its own [1, 28, 28] input; data-parallel dataset strategy):")
    print("\n".join(_predictions(workdir)))
    print(f"held-out accuracy of the trained weights on 1,000 test digits: {accuracy:.1%}")
    print(f"exported weights vs checkpoints: {'match' if report.ok else 'MISMATCH'} ({report})")
    print("files:")
    for what, path in [("checkpoints", "src_checkpoints/rank_{0..7}/"), ("strategy", "src_strategy.ckpt"),
                       ("per-rank logs", "log_output/1/rank.{0..7}/stdout"), ("exports", "mindir/net_rank_{0..7}.mindir")]:
        print(f"  {what:14s} {workdir / path}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
