"""The seed workflow end to end: MindSpore's "Model Saving" then "Model Loading" tutorials on 8 ranks.

    python3 dev.py demo                 # from a fresh clone (sets up .venv first)
    python examples/seed_workflow.py [--workdir DIR] [--retrain]

1. **Saving** (skipped when ``src_checkpoints/`` exists): ``scripts/run_saving.sh`` trains the
   sharded seed network on 8 ranks and leaves ``src_checkpoints/rank_{0..7}/checkpoint-10_*.ckpt``
   and ``src_strategy.ckpt``; each rank's output is in ``log_output/saving/rank.<r>/stdout``.
2. **Loading**: ``scripts/run_loading.sh`` loads those slices into the sharded network on 8 ranks,
   predicts, and exports ``mindir/net_rank_{0..7}.mindir``; each rank's output is in
   ``log_output/1/rank.<r>/stdout``.
3. **Summary**: each rank's prediction, the held-out accuracy of the trained weights (merged from
   the rank files) on the 1,000 test digits, and a check that the exported per-rank weights
   reassemble to the checkpoints.

While a step runs, the console follows rank 0's output (the other ranks print the same loss lines).
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


class _Rank0Output:
    """Echoes, as it grows, rank 0's output file of the step running in ``log_output`` (the job folder
    is named by the launcher until the step ends; the open file survives its renaming)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.known = set(os.listdir(log_dir)) if log_dir.is_dir() else set()
        self.file = None

    def pump(self) -> None:
        if self.file is None:
            found = [p for p in self.log_dir.glob("*/rank.0/stdout") if p.parts[-3] not in self.known]
            if not found:
                return
            self.file = open(found[0], encoding="utf-8", errors="replace")
        for line in self.file.readlines():
            print(f"  rank 0 | {line}", end="" if line.endswith("\n") else "\n", flush=True)

    def close(self) -> None:
        self.pump()
        if self.file is not None:
            self.file.close()


def _step(title: str, script: str, job: str, workdir: Path) -> float:
    print(f"\n== {title}: bash scripts/{script} (in {workdir}); rank r's output: log_output/{job}/rank.<r>/stdout",
          flush=True)
    start = time.perf_counter()
    env = dict(os.environ, PYTHON=sys.executable)
    rank0 = _Rank0Output(workdir / "log_output")
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / script)], cwd=workdir, env=env)
    while proc.poll() is None:
        rank0.pump()
        time.sleep(0.5)
    rank0.close()
    if proc.returncode:
        sys.exit(f"{script} failed with exit code {proc.returncode}; each rank's output is in "
                 f"{workdir / 'log_output' / job}/rank.<r>/stdout")
    return time.perf_counter() - start


def _predictions(workdir: Path) -> list[str]:
    """The printed prediction of each rank, from log_output/1/rank.<r>/stdout."""
    out = []
    for r in range(8):
        text = (workdir / "log_output" / "1" / f"rank.{r}" / "stdout").read_text()
        match = re.search(r"^\[\[[^\[\]]*\]\]", text, flags=re.M)  # print(tensor) shows numpy's text
        values = " ".join(match.group(0).split()) if match else "(no prediction printed)"
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
    t_save = None
    if args.retrain or not (workdir / "src_checkpoints").is_dir():
        t_save = _step("Model Saving (8 ranks)", "run_saving.sh", "saving", workdir)
    else:
        print(f"== Model Saving skipped: {workdir / 'src_checkpoints'} exists (--retrain to redo it)")
    t_load = _step("Model Loading (8 ranks)", "run_loading.sh", "1", workdir)

    from distinfer.exporter.verify import verify_export

    accuracy = _held_out_accuracy(workdir)
    report = verify_export(str(workdir / "mindir"), checkpoint=str(workdir / "src_checkpoints"),
                           strategy=str(workdir / "src_strategy.ckpt"))
    print("\n== Summary")
    saving = "skipped (checkpoints exist)" if t_save is None else f"{t_save:.1f} s"
    print(f"saving: {saving}, loading + predict + export: {t_load:.1f} s on 8 ranks")
    print("predictions (each rank predicts its own [1, 28, 28] input; data-parallel dataset strategy):")
    print("\n".join(_predictions(workdir)))
    print(f"held-out accuracy of the trained weights on 1,000 test digits: {accuracy:.1%}")
    print(f"exported weights vs checkpoints: {'match' if report.ok else 'MISMATCH'} ({report})")
    print("files:")
    files = [("checkpoints", "src_checkpoints/rank_{0..7}/"), ("strategy", "src_strategy.ckpt"),
             ("saving logs", "log_output/saving/rank.{0..7}/stdout"), ("loading logs", "log_output/1/rank.{0..7}/stdout"),
             ("exports", "mindir/net_rank_{0..7}.mindir")]
    if not (workdir / "log_output" / "saving").is_dir():  # checkpoints made before the saving logs were kept
        files.pop(2)
    for what, path in files:
        print(f"  {what:14s} {workdir / path}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
