"""Under ``mpirun -n N`` (N in 4, 8): load the 8-rank seed fixtures into a net sharded differently.

The seed network gets layer1 ``((1, N), (N, 1))`` and layer3 ``((2, 2), (2, 1))`` (training used
``((2, 1), (1, 2))`` / ``((2, 2), (2, 1))`` on 8 devices); ``infer_predict_layout`` gives the predict
layout, ``load_distributed_checkpoint`` loads this rank's blocks, and ``predict`` on this rank's batch
shard (data_parallel dataset strategy) must equal a numpy forward with ``full.npz``. Rank 0 prints
``PASS <check>`` / ``FAIL <check>: <error>`` per check and ``DONE``.
"""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

import distinfer as ms  # noqa: E402
from distinfer.communication import _backend, get_rank, init  # noqa: E402
from distinfer.layout import Layout  # noqa: E402
from distinfer.parallel import load_distributed_checkpoint  # noqa: E402
from seed_net import seed_network  # noqa: E402

FIX = Path(os.environ.get("DISTINFER_MS_FIXTURES", ROOT.parent / "shared" / "fixtures" / "mindspore"))
SEED = FIX / "distributed" / "seed_8dev"


def forward(x: np.ndarray, p: dict) -> np.ndarray:
    h = x.reshape(len(x), -1)
    h = np.maximum(h @ p["layer1.weight"] + p["layer1.bias"], 0)
    h = np.maximum(h @ p["layer2.weight"] + p["layer2.bias"], 0)
    return h @ p["layer3.weight"] + p["layer3.bias"]


def main() -> None:
    init()
    w = _backend.world()
    n, me = w.size, get_rank()
    results: list[tuple[str, str]] = []

    def check(name, fn):
        try:
            fn()
            results.append((name, ""))
        except Exception as exc:  # noqa: BLE001 - reported through rank 0
            results.append((name, f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=3)!r}"))

    full = dict(np.load(SEED / "full.npz"))
    files = [str(SEED / f"rank_{r}" / "checkpoint-1_1.ckpt") for r in range(8)]
    strategy = str(FIX / "strategy" / "seed_8dev.ckpt")
    batch = 4
    xs = np.random.RandomState(7).rand(batch * n, 1, 28, 28).astype(np.float32)
    x_local = xs[me * batch:(me + 1) * batch]
    state = {}

    def build_and_load():
        ms.reset_auto_parallel_context()
        ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel")
        net = seed_network(shard=False)
        net.layer1.matmul.shard(((1, n), (n, 1)))
        net.layer3.matmul.shard(((2, 2), (2, 1)))
        model = ms.Model(net)
        layout = model.infer_predict_layout(ms.Tensor(x_local))
        assert layout["layer1.weight"][:2] == [[n], [0, -1]], layout["layer1.weight"]
        assert load_distributed_checkpoint(net, files, layout, train_strategy_filename=strategy) is True
        state["net"], state["model"], state["layout"] = net, model, layout

    def blocks_are_slices():
        net = state["net"]
        rows = 784 // n
        w1 = net.layer1.weight.asnumpy()
        np.testing.assert_array_equal(w1, full["layer1.weight"][me * rows:(me + 1) * rows])
        lay3 = state["layout"]["layer3.weight"]
        want3 = Layout(lay3[0], lay3[1], (512, 10)).slice(full["layer3.weight"], me)
        np.testing.assert_array_equal(net.layer3.weight.asnumpy(), want3)
        np.testing.assert_array_equal(net.layer2.weight.asnumpy(), full["layer2.weight"])

    def predict_matches_numpy():
        y = state["model"].predict(ms.Tensor(x_local)).asnumpy()
        want = forward(x_local, full)
        err = float(np.abs(y - want).max() / np.abs(want).max())
        assert y.shape == want.shape and err < 1e-5, (y.shape, want.shape, err)

    check("build_and_load", build_and_load)
    if "net" in state:
        check("blocks_are_slices", blocks_are_slices)
        check("predict_matches_numpy", predict_matches_numpy)
    gathered = w.allgather_object(results)
    if me == 0:
        names = [name for name, _ in gathered[0]]
        for i, name in enumerate(names):
            errs = [(r, res[i][1]) for r, res in enumerate(gathered) if i < len(res) and res[i][1]]
            print(f"FAIL {name}: rank {errs[0][0]}: {errs[0][1]}" if errs else f"PASS {name}", flush=True)
        print(f"DONE {len(names)}", flush=True)


if __name__ == "__main__":
    main()
