"""One fault on rank 2 of a 4-rank job (``tests/test_faults.py`` runs each and checks how the job ends).

    python -m distinfer.launch -n 4 tests/mpi/faults.py SCENARIO WORKDIR

Scenarios: ``ok`` (no fault: predict, train and load, each checked against a single-process
reference) and one fault each: an exception, ``sys.exit(0)``/``sys.exit(1)``, ``os._exit(0)``,
SIGKILL, SIGINT, an exception in a thread, a return from the script, a different input shape,
a different strategy, a different file order, a corrupt file, a rank that stops communicating
(the watchdog), and an extra collective on one rank (two ranks waiting for each other).
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

import distinfer as ms  # noqa: E402
from distinfer import nn  # noqa: E402
from distinfer.communication import _backend, get_rank, init  # noqa: E402
from seed_net import seed_network  # noqa: E402

FIX = Path(os.environ.get("DISTINFER_MS_FIXTURES", ROOT.parent / "shared" / "fixtures" / "mindspore"))
SEED = FIX / "distributed" / "seed_8dev"
FAULTY = 2  # the rank that misbehaves
BATCH = 8


def forward(x: np.ndarray, p: dict) -> np.ndarray:
    """The seed network in numpy."""
    h = x.reshape(len(x), -1)
    h = np.maximum(h @ p["layer1.weight"] + p["layer1.bias"], 0)
    h = np.maximum(h @ p["layer2.weight"] + p["layer2.bias"], 0)
    return h @ p["layer3.weight"] + p["layer3.bias"]


def misbehave(how: str) -> None:
    """Rank 2's fault, called in the middle of a forward pass (after layer1 has communicated)."""
    print(f"rank {FAULTY} misbehaves: {how}", flush=True)
    if how == "raise":
        raise RuntimeError(f"rank {FAULTY} fails on purpose")
    if how in ("exit0", "exit1"):
        sys.exit(int(how[-1]))
    if how == "os_exit":
        os._exit(0)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    if how == "thread":
        worker = threading.Thread(target=lambda: 1 / 0, name="loader")
        worker.start()
        worker.join()
        time.sleep(30)
    if how == "hang":
        time.sleep(60)


class Network(nn.Cell):
    """The seed network, calling ``misbehave`` on rank 2 after layer1 when asked to."""

    def __init__(self, fault: str = "") -> None:
        super().__init__()
        self.net = seed_network()
        self.fault = fault if get_rank() == FAULTY else ""

    def construct(self, x):
        x = self.net.relu1(self.net.layer1(self.net.flatten(x)))
        if self.fault:
            misbehave(self.fault)
        return self.net.layer3(self.net.relu2(self.net.layer2(x)))


def sharded(**ctx) -> None:
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", full_batch=True, **ctx)


def reference_weights() -> dict:
    """The initial weights as one process makes them (``set_seed(1)``; they do not depend on the rank count)."""
    ms.reset_auto_parallel_context()
    ms.set_seed(1)
    return {name: p.asnumpy() for name, p in seed_network(shard=False).parameters_and_names()}


def setup(fault: str, rank2_strategy) -> tuple[dict, Network]:
    """The single-process reference weights, and the sharded network (rank 2's own strategy if given)."""
    want = reference_weights()
    sharded()
    ms.set_seed(1)
    net = Network(fault)
    if rank2_strategy and get_rank() == FAULTY:
        net.net.layer1.matmul.shard(rank2_strategy)
    return want, net


def predict(fault: str = "", batch: int = BATCH, rank2_strategy=None) -> None:
    want, net = setup(fault, rank2_strategy)
    x = np.random.default_rng(0).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    y = ms.Model(net).predict(ms.Tensor(x)).asnumpy()
    err = float(np.abs(y - forward(x, want)).max())
    assert err < 1e-4, f"predict differs from numpy by {err}"
    print(f"rank {get_rank()} predict ok (max error {err:.1e})", flush=True)


def train(fault: str = "", rank2_strategy=None, steps: int = 2) -> None:
    start, net = setup(fault, rank2_strategy)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
    label = rng.integers(0, 10, BATCH).astype(np.int32)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), nn.SGD(net.trainable_params(), 0.1))
    losses = [float(step(ms.Tensor(x), ms.Tensor(label)).asnumpy()) for _ in range(steps)]
    if not fault:  # one process, in numpy: the first loss
        logits = forward(x, start)
        z = logits - logits.max(1, keepdims=True)
        want = float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(BATCH), label]))
        assert abs(losses[0] - want) < 1e-4 * abs(want), f"loss {losses[0]} != numpy's {want}"
    print(f"rank {get_rank()} train ok (losses {np.round(losses, 4).tolist()})", flush=True)


def load(workdir: Path, fault: str = "") -> None:
    """The 8-rank fixtures loaded into 4 ranks by their predict layout, then a predict against numpy."""
    files = [str(SEED / f"rank_{r}" / "checkpoint-1_1.ckpt") for r in range(8)]
    if fault == "order" and get_rank() == 1:
        files = files[::-1]
    if fault == "corrupt":
        bad = workdir / "rank_5.ckpt"
        if get_rank() == 0:
            shutil.copy(files[5], bad)
            with open(bad, "r+b") as fh:
                fh.truncate(bad.stat().st_size // 2)
        _backend.world().barrier()
        files[5] = str(bad)
    sharded()
    net = seed_network()
    x = np.random.default_rng(2).standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
    model = ms.Model(net)
    layout = model.infer_predict_layout(ms.Tensor(x))
    ms.load_distributed_checkpoint(net, files, layout, train_strategy_filename=str(FIX / "strategy" / "seed_8dev.ckpt"))
    y = model.predict(ms.Tensor(x)).asnumpy()
    err = float(np.abs(y - forward(x, dict(np.load(SEED / "full.npz")))).max())
    assert err < 1e-4, f"the loaded network predicts with max error {err}"
    print(f"rank {get_rank()} load ok (max error {err:.1e})", flush=True)


def main(scenario: str, workdir: Path) -> None:
    init()
    rank = get_rank()
    if scenario == "ok":
        predict()
        train()
        load(workdir)
    elif scenario in ("raise", "exit0", "os_exit", "interrupt", "thread", "hang"):
        if scenario == "hang":
            ms.set_context(comm_timeout=4)
        predict(scenario)
    elif scenario in ("exit1", "kill"):
        train(scenario)
    elif scenario == "return":
        if rank != FAULTY:
            predict()
        print(f"rank {rank} returns from the script", flush=True)
    elif scenario == "shape":
        predict(batch=4 if rank == FAULTY else BATCH)
    elif scenario == "strategy":
        train(rank2_strategy=((1, 1), (1, 4)))
    elif scenario in ("order", "corrupt"):
        load(workdir, scenario)
    elif scenario == "extra_collective":
        if rank == FAULTY:
            _backend.world().allreduce(np.ones(3, np.float32), ((0, 1, 2, 3),), what="an extra sum")
        predict()
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
