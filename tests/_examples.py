"""Helpers of the tests that run ``examples/`` on several ranks: a small MNIST folder, a launch that
keeps each rank's output apart (8 ranks writing one pipe interleave their lines), and the arrays the
ranks printed."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from distinfer.dataset import embedded_mnist_dir
from distinfer.dataset.idx import read_idx
from distinfer.launch import run

__all__ = ["ROOT", "write_mnist", "launch_example", "printed_arrays"]

ROOT = Path(__file__).resolve().parents[1]
_NUMBER = re.compile(r"-?\d+\.\d*(?:e[-+]?\d+)?")


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


def write_mnist(folder: Path, count: int) -> Path:
    """The first ``count`` training digits of the embedded subset as plain idx files in ``folder``."""
    src = Path(embedded_mnist_dir())
    _write_idx(folder / "train-images-idx3-ubyte", read_idx(str(src / "train-images-idx3-ubyte.gz"))[:count])
    _write_idx(folder / "train-labels-idx1-ubyte", read_idx(str(src / "train-labels-idx1-ubyte.gz"))[:count])
    return folder


def launch_example(n: int, example: str, cwd: Path, data: Path | None, *args: str) -> list[str]:
    """Run ``examples/<example>`` on ``n`` ranks in ``cwd`` (``DATA_PATH=data``); each rank's output
    (stdout and stderr), in rank order. A failing run fails the test with every rank's tail."""
    env = dict(os.environ)
    if data is not None:
        env["DATA_PATH"] = str(data)
    logs = cwd / f"log_{Path(example).stem}_{len(list(cwd.glob('log_*')))}"
    proc = run(n, [str(ROOT / "examples" / example), *args], ["--output", f"merge-stderr-to-stdout,dir={logs}"],
               capture_output=True, text=True, timeout=900, cwd=cwd, env=env)
    files = [next(logs.glob(f"*/rank.{r}/stdout"), None) for r in range(n)]  # none for a rank that printed nothing
    outputs = [f.read_text() if f is not None else "" for f in files]
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:] + "".join(
        f"\n--- rank {r}\n{o[-2000:]}" for r, o in enumerate(outputs))
    return outputs


def printed_arrays(outputs: list[str], shape: tuple[int, ...]) -> list[np.ndarray]:
    """The array each rank printed with ``print(tensor)`` (numpy's text)."""
    arrays = []
    for r, out in enumerate(outputs):
        match = re.search(r"^\[\[.*?\]\]$", out, flags=re.M | re.S)
        assert match, f"rank {r} printed no array:\n{out[-2000:]}"
        arrays.append(np.array(_NUMBER.findall(match.group(0)), float).reshape(shape))
    return arrays
