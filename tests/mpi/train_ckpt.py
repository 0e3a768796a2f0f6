"""Sharded training saves what the loading tutorial needs (run from tests/test_training.py).

The set-up of the MindSpore fixtures ``ckpt/train_{sgd,momentum,adam}.ckpt`` (seed network from
``distributed/seed_8dev/full.npz``, layer1/layer2 frozen, 2 epochs x 2 steps of batch 32), but in
semi-auto parallel mode with the tutorial's strategies, ``full_batch=True`` and
``ModelCheckpoint(..., CheckpointConfig(save_checkpoint_steps=2, keep_checkpoint_max=1,
integrated_save=False, append_info=["epoch_num", "step_num"]))``. Each rank's file must hold the
fixture's record names and dtypes, this rank's block of every parameter and optimizer state
(equal to the same block of a single-process run on the same data), and MindSpore's scalars.

    python -m distinfer.launch -n 8 tests/mpi/train_ckpt.py <fixtures root> <output dir>
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import distinfer as ms  # noqa: E402
import distinfer.dataset as ds  # noqa: E402
from distinfer import nn, train  # noqa: E402
from _harness import Checks, assert_close, rank, size  # noqa: E402
from seed_net import seed_network  # noqa: E402

FIX = Path(sys.argv[1])
OUT = Path(sys.argv[2])
KINDS = ("sgd", "momentum", "adam")
RTOL = {"sgd": 1e-5, "momentum": 1e-5, "adam": 1e-4}
checks = Checks()


def dataset() -> ds.Dataset:
    """2 batches of 32 fixed random MNIST-shaped samples (the same on every rank: full_batch)."""
    rng = np.random.RandomState(0)
    x = rng.rand(64, 1, 28, 28).astype(np.float32)
    y = rng.randint(0, 10, 64).astype(np.int32)
    return ds.NumpySlicesDataset({"image": x, "label": y}, shuffle=False).batch(32)


def optimizer(kind: str, params) -> nn.Optimizer:
    if kind == "sgd":
        return nn.SGD(params, 0.01)
    if kind == "momentum":
        return nn.Momentum(params, 0.01, 0.9)
    return nn.Adam(params, 1e-3)


def train_and_save(kind: str, sharded: bool, directory: Path) -> ms.Model:
    """The fixture's training run; returns the Model (its train network holds the layouts)."""
    ms.reset_auto_parallel_context()
    if sharded:
        ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", full_batch=True)
    net = seed_network(shard=sharded)
    full = np.load(FIX / "distributed" / "seed_8dev" / "full.npz")
    for name, p in net.parameters_and_names():
        p.set_data(ms.Tensor(full[name]))
    for p in list(net.layer1.get_parameters()) + list(net.layer2.get_parameters()):
        p.requires_grad = False
    config = train.CheckpointConfig(save_checkpoint_steps=2, keep_checkpoint_max=1, integrated_save=not sharded,
                                    append_info=["epoch_num", "step_num"])
    ckpt = train.ModelCheckpoint(prefix="checkpoint", directory=str(directory), config=config)
    model = ms.Model(net, nn.CrossEntropyLoss(), optimizer(kind, net.trainable_params()))
    model.train(2, dataset(), callbacks=[ckpt])
    return model


def check_kind(kind: str) -> None:
    ref_dir = OUT / f"ref_{kind}_rank{rank()}"
    train_and_save(kind, False, ref_dir)
    ref = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(ref_dir / "checkpoint-2_2.ckpt")).items()}
    rank_dir = OUT / kind / f"rank_{rank()}"
    model = train_and_save(kind, True, rank_dir)
    ms.reset_auto_parallel_context()
    files = sorted(os.listdir(rank_dir))
    assert files == ["checkpoint-2_2.ckpt"], f"{kind}: rank {rank()} wrote {files}"
    got = ms.load_checkpoint(str(rank_dir / files[0]))
    fixture = ms.load_checkpoint(str(FIX / "ckpt" / f"train_{kind}.ckpt"))
    assert set(got) == set(fixture), f"{kind}: names differ: {sorted(set(got) ^ set(fixture))}"
    layouts = {name: p.layout for name, p in model.train_network.parameters_and_names()}
    for name, want in fixture.items():
        value = got[name]
        assert value.dtype == want.dtype, f"{kind}/{name}: dtype {value.dtype}, MindSpore {want.dtype}"
        assert tuple(ref[name].shape) == tuple(want.shape), f"{kind}/{name}: full shape {ref[name].shape}"
        lay = layouts.get(name)
        expected = lay.slice(ref[name], rank()) if lay is not None else ref[name]
        assert_close(value.asnumpy(), expected, RTOL[kind], f"{kind}/{name} (rank {rank()})")
        if want.size == 1:
            assert np.array_equal(value.asnumpy(), want.asnumpy()), \
                f"{kind}/{name}: {value.asnumpy()} != MindSpore's {want.asnumpy()}"
    sliced = {n for n, lay in layouts.items() if lay is not None and not lay.is_replicated}
    want_sliced = {"layer1.weight", "layer3.weight"} | {f"{s}.layer3.weight" for s in {
        "sgd": ("accum", "stat"), "momentum": ("moments",), "adam": ("moment1", "moment2")}[kind]}
    assert sliced >= want_sliced, f"{kind}: sliced records {sorted(sliced)} lack {sorted(want_sliced - sliced)}"
    if size() in (4, 8):  # the tutorial strategies split layer1 by columns and layer3 by rows, 2 ways
        assert tuple(got["layer1.weight"].shape) == (784, 256), got["layer1.weight"].shape
        assert tuple(got["layer3.weight"].shape) == (256, 10), got["layer3.weight"].shape


for _kind in KINDS:
    checks.add(f"sharded {_kind} checkpoint", lambda k=_kind: check_kind(k))

if __name__ == "__main__":
    checks.run()
