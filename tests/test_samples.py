"""MindSpore's distributed tutorial samples (docs/sample_code/, MindSpore 2.3-2.6), as distinfer examples,
run on 8 or 4 ranks and checked against single-process numpy references.

The training data is one batch of 32 MNIST digits. Every rank reads the whole folder (or its shard
of it, in the data-parallel samples) and shuffles it its own way, so a rank's batch is some
permutation of the 32 digits: a mean loss and its gradient do not depend on the order, so each
step's loss is a deterministic number that numpy reproduces from the same initial weights (which
depend only on the seed and the order the parameters are created in, not on the rank count).
"""
from __future__ import annotations

import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import distinfer as ms
from distinfer import nn
from distinfer.common.initializer import HeUniform, initializer
from distinfer.dataset.idx import read_idx
from distinfer.io import CkptFile, read_strategy

from _examples import ROOT, launch_example, printed_arrays, write_mnist

BATCH = 32
LOSS_LINE = re.compile(r"^epoch: (\d+), step: 0, loss is (\S+)$", re.M)


@pytest.fixture(scope="module")
def one_batch(tmp_path_factory) -> Path:
    """32 training digits of the embedded subset as plain idx files: one batch per epoch."""
    return write_mnist(tmp_path_factory.mktemp("mnist32"), BATCH)


def _batch(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The samples' preprocessing in numpy: scale to [0, 1], normalise, flatten; int labels."""
    images = read_idx(str(folder / "train-images-idx3-ubyte")).astype(np.float64) / 255.0
    x = ((images - 0.1307) / 0.3081).reshape(len(images), -1)
    return x, read_idx(str(folder / "train-labels-idx1-ubyte")).astype(np.int64)


def _losses(outputs: list[str]) -> dict[int, list[float]]:
    """``{epoch: [each rank's printed loss]}`` from the samples' ``epoch: E, step: 0, loss is L`` lines."""
    found: dict[int, list[float]] = {}
    for out in outputs:
        for epoch, value in LOSS_LINE.findall(out):
            found.setdefault(int(epoch), []).append(float(value))
    return found


# ----------------------------------------------------------------------- numpy references
def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(y)), y]))
    p[np.arange(len(y)), y] -= 1.0
    return loss, p / len(y)


def _train_mlp(layers: list[list[np.ndarray]], x: np.ndarray, y: np.ndarray, steps: int, scale: float = 1.0,
               lr: float = 1e-2, relu_last: bool = False) -> list[float]:
    """SGD on ``relu(x @ W1 + b1) ... @ Wk + bk`` (``[W]`` or ``[W, b]`` per layer, W as ``[in, out]``);
    the loss (and so its gradient) is ``scale`` times the mean cross-entropy. Returns each step's loss."""
    layers = [[p.astype(np.float64) for p in layer] for layer in layers]
    losses = []
    for _ in range(steps):
        acts = [x]
        for i, layer in enumerate(layers):
            z = acts[-1] @ layer[0] + (layer[1] if len(layer) > 1 else 0.0)
            acts.append(np.maximum(z, 0.0) if i < len(layers) - 1 or relu_last else z)
        loss, grad = _cross_entropy(acts[-1], y)
        losses.append(scale * loss)
        grad = scale * grad
        for i in reversed(range(len(layers))):
            if i < len(layers) - 1 or relu_last:
                grad = grad * (acts[i + 1] > 0)
            update = [acts[i].T @ grad] + ([grad.sum(axis=0)] if len(layers[i]) > 1 else [])
            grad = grad @ layers[i][0].T
            for p, g in zip(layers[i], update):
                p -= lr * g
    return losses


def _dense_layers(*sizes: tuple[int, int], **kwargs) -> list[list[np.ndarray]]:
    """Initial ``[W.T, b]`` of ``nn.Dense`` layers created in this order after ``ms.set_seed(1)``."""
    ms.set_seed(1)
    cells = [nn.Dense(i, o, **kwargs) for i, o in sizes]
    return [[c.weight.asnumpy().T, c.bias.asnumpy()] for c in cells]


def _check_losses(out: list[str], reference: list[float], ranks: int = 8, skip_zeros: bool = False) -> None:
    losses = _losses(out)
    assert sorted(losses) == list(range(len(reference))), out[0][-3000:]
    for epoch, want in enumerate(reference):
        got = [v for v in losses[epoch] if not (skip_zeros and v == 0.0)]
        assert len(got) == ranks, (epoch, losses[epoch])
        np.testing.assert_allclose(got, want, rtol=2e-5, err_msg=f"epoch {epoch}")


# ---------------------------------------------------------------------------- the samples
@pytest.mark.parametrize("example", ["operator_parallel.py", "operator_parallel_auto.py"])
def test_operator_parallel_samples(tmp_path, one_batch, example):
    """MatMul((2, 4), (4, 1)) etc. on 8 ranks: the MindSpore 2.5 form (set_auto_parallel_context, ms.jit)
    and the 2.6 form (AutoParallel, no_init_parameters) train exactly as one numpy process does."""
    out = launch_example(8, example, tmp_path, one_batch)
    ms.set_seed(1)
    weights = [[initializer("normal", s, ms.float32).asnumpy()] for s in ([784, 512], [512, 512], [512, 10])]
    x, y = _batch(one_batch)
    _check_losses(out, _train_mlp(weights, x, y, 10))


def test_optimizer_parallel_sample(tmp_path, one_batch):
    """The parallel optimizer (weights and SGD state sharded over the 8 data-parallel replicas) with
    one communication fusion group per layer trains as plain SGD does."""
    out = launch_example(8, "optimizer_parallel.py", tmp_path, one_batch)
    x, y = _batch(one_batch)
    _check_losses(out, _train_mlp(_dense_layers((784, 512), (512, 512), (512, 10)), x, y, 10))


def test_pipeline_parallel_sample(tmp_path, one_batch):
    """Two stages of 4 ranks, 4 micro-batches: the last stage prints the summed micro-batch loss (four
    times the mean, as each micro-batch is one rank's whole batch), the first stage prints 0 as in
    MindSpore, and ops.Print shows each rank's [8, 512] block of the first layer's output."""
    out = launch_example(8, "pipeline_parallel.py", tmp_path, one_batch)
    ms.set_seed(1)
    first = initializer(HeUniform(math.sqrt(5)), [784, 512]).asnumpy()
    second, third = nn.Dense(512, 512), nn.Dense(512, 10)
    layers = [[first]] + [[c.weight.asnumpy().T, c.bias.asnumpy()] for c in (second, third)]
    x, y = _batch(one_batch)
    _check_losses(out, _train_mlp(layers, x, y, 10, scale=4.0), ranks=4, skip_zeros=True)
    assert all(v.count(0.0) == 4 for v in _losses(out).values())
    printed = [o.count("out is:\nTensor(shape=[8, 512], dtype=Float32, value=") for o in out]
    assert printed == [10 * 4] * 4 + [0] * 4, printed  # steps x micro-batches, on the first stage's ranks


def test_pipeline_inference_sample(tmp_path):
    """Four stages of 2 ranks: the embedding table of stage 0 is also the head's weight on stage 3, and
    the result is broadcast to every rank. Each rank prints numpy's logits."""
    out = launch_example(8, "pipeline_inference.py", tmp_path, None)
    ms.set_seed(1)  # the sample's seed also seeds numpy, which then draws the input ids
    layers = [nn.Dense(32, 32), nn.Dense(32, 32)]
    ids = np.random.randint(low=0, high=32, size=(8, 1))
    table = np.ones((32, 32))
    state = table[ids[:, 0]]
    for layer in layers:
        state = state @ layer.weight.asnumpy().T + layer.bias.asnumpy()
    want = state @ table.T
    for got in printed_arrays(out, (8, 32)):
        np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("example,sizes", [("data_parallel.py", ((784, 512), (512, 512), (512, 10))),
                                           ("startup_net.py", ((784, 10),))])
def test_data_parallel_samples(tmp_path, one_batch, example, sizes):
    """DATA_PARALLEL: each rank trains on its shard of the 32 digits (4 each) and the gradients are
    averaged; the mean of the 8 printed shard losses is the loss of the whole batch."""
    out = launch_example(8, example, tmp_path, one_batch)
    x, y = _batch(one_batch)
    reference = _train_mlp(_dense_layers(*sizes, weight_init="normal", bias_init="zeros"), x, y, 10,
                           relu_last=example == "startup_net.py")
    losses = _losses(out)
    assert sorted(losses) == list(range(10)) and all(len(v) == 8 for v in losses.values()), out[0][-3000:]
    np.testing.assert_allclose([np.mean(losses[e]) for e in range(10)], reference, rtol=2e-5)


# ---------------------------------------------------------- model transformation samples
def _full_weights(ckpt_dir: Path, strategy: Path) -> dict[str, np.ndarray]:
    """The trained network's full tensors, merged from the 8 rank files in one process."""
    sys.path.insert(0, str(ROOT / "examples"))
    from seed_net import seed_network

    ms.reset_auto_parallel_context()
    net = seed_network(shard=False)
    files = [str(next((ckpt_dir / f"rank_{r}").glob("*.ckpt"))) for r in range(8)]
    ms.load_distributed_checkpoint(net, files, None, train_strategy_filename=str(strategy))
    return {n: p.asnumpy() for n, p in net.parameters_and_names()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory, one_batch) -> Path:
    """MindSpore's saving sample on 8 ranks, its rank files renamed ``rank_<r>/checkpoint_<r>.ckpt``
    as the transformation tutorial asks."""
    folder = tmp_path_factory.mktemp("saved")
    launch_example(8, "train_saving.py", folder, one_batch)
    for r in range(8):
        (src,) = (folder / "src_checkpoints" / f"rank_{r}").glob("checkpoint-*.ckpt")
        src.rename(src.with_name(f"checkpoint_{r}.ckpt"))
    return folder


def _copy_run(saved: Path, tmp_path: Path) -> Path:
    shutil.copytree(saved / "src_checkpoints", tmp_path / "src_checkpoints")
    shutil.copy(saved / "src_strategy.ckpt", tmp_path / "src_strategy.ckpt")
    return tmp_path


def test_transformation_infer_sample(tmp_path, saved, one_batch):
    """8 training ranks -> 4 inference ranks with other strategies, converted rank by rank
    (rank_list_for_transform + transform_checkpoint_by_rank), then loaded and run: each rank's
    prediction equals numpy's with the merged trained weights. Optimizer state, which the inference
    strategy does not name, keeps each source rank's slice, as MindSpore's transform does."""
    work = _copy_run(saved, tmp_path)
    for r in range(4):
        (work / "dst_checkpoints" / f"rank_{r}").mkdir(parents=True)
    launch_example(4, "transformation_infer.py", work, one_batch, "--only_compile=1")
    out = launch_example(4, "transformation_infer.py", work, one_batch)
    full = _full_weights(work / "src_checkpoints", work / "src_strategy.ckpt")
    np.random.seed(1)  # the sample seeds numpy through ms.set_seed(1), then draws its input
    state = np.random.randn(1, 28 * 28)
    for layer in (1, 2, 3):
        state = state @ full[f"layer{layer}.weight"] + full[f"layer{layer}.bias"]
        state = np.maximum(state, 0) if layer < 3 else state
    for got in printed_arrays(out, (1, 10)):
        np.testing.assert_allclose(got, state, rtol=1e-4, atol=1e-6)
    for r in range(4):
        with CkptFile(work / "dst_checkpoints" / f"rank_{r}" / f"checkpoint_{r}.ckpt") as dst, \
                CkptFile(work / "src_checkpoints" / f"rank_{r}" / f"checkpoint_{r}.ckpt") as src:
            kept = [n for n in dst.names() if n.startswith("accum.")]
            assert kept, dst.names()
            for n in kept:
                np.testing.assert_array_equal(dst.read(n), src.read(n), err_msg=f"rank {r} {n}")


def test_transformation_retrain_sample(tmp_path, saved, one_batch):
    """8 training ranks -> 4 ranks with other strategies and the parallel optimizer, converted by
    transform_checkpoints on every rank at once (not collective: each writes every file), then loaded
    for two more epochs. Each converted file holds that rank's blocks of the merged weights."""
    work = _copy_run(saved, tmp_path)
    launch_example(4, "transformation_retrain.py", work, one_batch, "--only_compile=1")
    launch_example(4, "transformation_retrain.py", work, one_batch)
    full = _full_weights(work / "src_checkpoints", work / "src_strategy.ckpt")
    strategy = read_strategy(str(work / "dst_strategy.ckpt")).layouts
    for r in range(4):
        with CkptFile(work / "dst_checkpoints" / f"rank_{r}" / f"checkpoint_{r}.ckpt") as f:
            for name, whole in full.items():
                block = strategy[name].to_layout(whole.shape).slice(whole, r)
                np.testing.assert_allclose(f.read(name), block, rtol=0, atol=0, err_msg=f"rank {r} {name}")


def test_pipeline_transformation_sample(tmp_path, one_batch):
    """A 2-stage pipeline run on 8 ranks, then rank 0 alone merges its strategies and converts its
    checkpoints for 4 non-pipeline ranks (the other ranks do not wait for it), then training goes on."""
    launch_example(8, "pipeline_train.py", tmp_path, one_batch)
    launch_example(4, "pipeline_transformation_retrain.py", tmp_path, one_batch, "--only_compile=1")
    assert sorted(p.name for p in (tmp_path / "dst_checkpoints_pipeline").iterdir()) == [f"rank_{r}" for r in range(4)]
    launch_example(4, "pipeline_transformation_retrain.py", tmp_path, one_batch)
    merged = read_strategy(str(tmp_path / "src_pipeline_strategy.ckpt")).layouts
    assert {"0-layer1.weight", "1-layer3.weight"} <= set(merged)
