#!/usr/bin/env python3
"""Side-by-side runs of the GPT block of ``examples/gpt_block.py`` for bench_predict.py and bench_train.py.

Every contender runs in a fresh process, started by :func:`measure` in alternation with the
others over several rounds, and prints one ``RESULT {json}`` line (the median of its timed
calls). The network, weights and inputs are the same everywhere: ``--side prepare`` builds the
block once with distinfer, writes its weights and inputs (``.npy``) and its ONNX export, and the
other sides read them:

* ``distinfer``: ``Model.predict`` / one ``TrainOneStepCell`` step (Momentum), in one process or
  on several ranks (Megatron-style ``dp x mp`` strategies from ``shard_gpt``);
* ``onnxruntime``: distinfer's ONNX export, default session options;
* ``mindspore``: the same ``examples/gpt_block.py`` source run by a Python with MindSpore 2.x
  installed (``import distinfer as ms`` resolves to ``mindspore`` there), GRAPH_MODE, CPU, with
  the weights loaded from the files. This side never imports distinfer.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MESH = {1: (1, 1), 2: (1, 2), 4: (2, 2), 8: (2, 4)}  # ranks -> (dp, mp)
# The thread variables a job started "as the tutorials do" does not have.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "GOTO_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
WARMUP = 2


def add_size_args(ap: argparse.ArgumentParser) -> None:
    """The network and batch; defaults are GPT-2-small width with an 8,192-way vocabulary."""
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ffn", type=int, default=3072)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)


def bench_args(description: str, repeat: int, argv=None, extra=lambda ap: None) -> argparse.Namespace:
    """The options bench_predict.py and bench_train.py share (and ``extra`` ones)."""
    ap = argparse.ArgumentParser(description=description)
    add_size_args(ap)
    ap.add_argument("--ranks", default="1,2,4,8", help="distinfer rank counts (1 = one plain process)")
    ap.add_argument("--rounds", type=int, default=3, help="fresh-process rounds per contender")
    ap.add_argument("--repeat", type=int, default=repeat, help="timed calls per process")
    ap.add_argument("--mindspore-python", help="a Python with MindSpore installed")
    ap.add_argument("--no-mindspore", action="store_true", help="skip the MindSpore contender")
    extra(ap)
    return ap.parse_args(argv)


@contextlib.contextmanager
def prepared(a: argparse.Namespace, task: str):
    """A temporary folder with the weights, inputs and ONNX export (``--side prepare``)."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{task}_") as tmp:
        d = Path(tmp)
        prep = run_side(side_command(sys.executable, "prepare", a, d, task))
        if "error" in prep:
            raise SystemExit(f"prepare failed: {prep['error']}")
        yield d


def net_config(a: argparse.Namespace) -> dict:
    return dict(vocab=a.vocab, hidden=a.hidden, heads=a.heads, seq=a.seq, ffn=a.ffn)


def size_argv(a: argparse.Namespace) -> list[str]:
    return [f"--{k}={getattr(a, k)}" for k in ("vocab", "hidden", "heads", "ffn", "seq", "batch")]


def mindspore_python(explicit: str | None = None) -> str | None:
    """A Python with MindSpore: ``--mindspore-python``, ``DISTINFER_MINDSPORE_PYTHON``, /work/msenv/bin/python."""
    path = explicit or os.environ.get("DISTINFER_MINDSPORE_PYTHON") or "/work/msenv/bin/python"
    return path if Path(path).is_file() else None


# ------------------------------------------------------------------------------ the sides
def _timed(call, repeat: int, sync=lambda: None) -> float:
    for _ in range(WARMUP):
        call()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _inputs(d: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(d / "ids.npy"), np.load(d / "labels.npy")


def side_prepare(a: argparse.Namespace, d: Path) -> dict:
    """Weights, inputs, distinfer's output and first-step loss, and the ONNX export."""
    sys.path.insert(0, str(ROOT / "examples"))
    import distinfer as ms
    from gpt_block import GPTBlock, full_params

    rng = np.random.RandomState(0)
    ids = rng.randint(0, a.vocab, size=(a.batch, a.seq)).astype(np.int32)
    np.save(d / "ids.npy", ids)
    np.save(d / "labels.npy", rng.randint(0, a.vocab, size=(a.batch, a.seq)).astype(np.int32))
    ms.set_seed(1)
    net = GPTBlock(**net_config(a))
    for name, value in full_params(net).items():
        np.save(d / f"param_{name}.npy", value)
    np.save(d / "distinfer_out.npy", ms.Model(net).predict(ms.Tensor(ids)).asnumpy())
    ms.export(net, ms.Tensor(ids), file_name=str(d / "gpt"), file_format="ONNX")
    return {"params": len(full_params(net))}


def side_distinfer(a: argparse.Namespace, d: Path) -> dict:
    """Predict or one training step, in one process or as one rank of an MPI job."""
    sys.path.insert(0, str(ROOT / "examples"))
    import distinfer as ms
    from distinfer import nn
    from distinfer.communication import _backend, init
    from distinfer.parallel import _executor as ex
    from gpt_block import GPTBlock, TokenLoss, shard_gpt

    init()
    world = _backend.world()
    ids, labels = _inputs(d)
    if world.size > 1:
        ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", full_batch=True)
    ms.set_seed(1)
    net = GPTBlock(**net_config(a))
    if world.size > 1:
        shard_gpt(net, *MESH[world.size])
    out: dict = {"ranks": world.size}
    if a.task == "predict":
        model = ms.Model(net)
        x = ms.Tensor(ids)
        out["seconds"] = _timed(lambda: model.predict(x), a.repeat, world.barrier)
        out.update(_comm_counts(world, ex, lambda: model.predict(x)))
        if world.size > 1:
            out["checked"], out["plain"] = _checking_cost(lambda: model.predict(x), world, a.repeat)
    else:
        step = nn.TrainOneStepCell(nn.WithLossCell(net, TokenLoss()), nn.Momentum(net.trainable_params(), 0.01, 0.9))
        feed = [ms.Tensor(ids), ms.Tensor(labels)]
        if world.size > 1:
            from distinfer.parallel.inputs import distribute_inputs

            feed = distribute_inputs(feed, world.size)
        out["first_loss"] = float(step(*feed).asnumpy())
        out["seconds"] = _timed(lambda: step(*feed), a.repeat, world.barrier)
    from distinfer._cpu import blas_threads

    out["blas_threads"] = blas_threads()
    return out if world.rank == 0 else {}


def _comm_counts(world, ex, call) -> dict:
    """Point-to-point bytes of one predict against the planner's minimum, and its allreduces."""

    class Tally:
        moved = 0

        def op(self, *args):
            pass

        def comm(self, kind, **info):
            if kind == "redistribute":
                Tally.moved += info["plan"].moved_elements()

    world.stats.reset()
    with ex.observing(Tally()):
        call()
    st = world.stats
    sent = world.allgather_object((st.bytes_sent, st.messages, st.allreduces, st.allreduce_bytes))
    return dict(bytes_sent=sum(s[0] for s in sent), minimum=Tally.moved * 4, messages=sum(s[1] for s in sent),
                allreduces=sent[0][2], allreduce_bytes=sent[0][3])


class _Unchecked:
    """The backend's data calls as plain blocking mpi4py calls with no step checks: the baseline
    the checking cost is measured against (float32/int32 data, as the GPT block moves)."""

    def __init__(self, world) -> None:
        self._world = world
        self._ops = {"sum": world.MPI.SUM, "max": world.MPI.MAX, "min": world.MPI.MIN}

    def __getattr__(self, name: str):
        return getattr(self._world, name)

    def allreduce(self, arr, partition, op="sum", what=""):
        src = np.ascontiguousarray(arr).reshape(np.shape(arr))
        out = np.empty_like(src)
        self._world.group_comm(partition).Allreduce(src, out, op=self._ops[op])
        return out

    def reduce_scatter(self, arr, partition, axis, op="sum", what=""):
        comm = self._world.group_comm(partition)
        send = np.ascontiguousarray(np.moveaxis(arr, axis, 0))
        recv = np.empty((send.shape[0] // comm.Get_size(),) + send.shape[1:], send.dtype)
        comm.Reduce_scatter_block(send, recv, op=self._ops[op])
        return np.ascontiguousarray(np.moveaxis(recv, 0, axis))

    def exchange(self, sends, recvs, what=""):
        """One message per peer (the arrays back to back), as the checked backend sends them."""
        MPI, comm = self._world.MPI, self._world.comm
        sizes = {src: [int(np.prod(shape)) * np.dtype(dt).itemsize for shape, dt in specs]
                 for src, specs in recvs.items()}
        inbox = {src: np.empty(sum(n), np.uint8) for src, n in sizes.items()}
        outbox = [np.concatenate([np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays])
                  for arrays in sends.values()]
        reqs = [comm.Irecv([buf, MPI.BYTE], source=src, tag=17) for src, buf in inbox.items()]
        reqs += [comm.Isend([buf, MPI.BYTE], dest=dst, tag=17) for dst, buf in zip(sends, outbox)]
        MPI.Request.Waitall(reqs)
        out = {}
        for src, specs in recvs.items():
            cuts = np.cumsum([0] + sizes[src])
            out[src] = [inbox[src][lo:hi].view(dt).reshape(shape) for lo, hi, (shape, dt) in zip(cuts, cuts[1:], specs)]
        return out


def _checking_cost(call, world, repeat: int) -> tuple[float, float]:
    """Median seconds per predict with the checked backend and with ``_Unchecked``, alternating."""
    from distinfer.communication import _backend

    plain = _Unchecked(world)
    times: dict[str, list[float]] = {"checked": [], "plain": []}
    for i in range(2 * repeat):
        mode = ("checked", "plain")[(i + i // 2) % 2]  # checked, plain, plain, checked, ...
        _backend.reset_for_tests(world if mode == "checked" else plain)
        world.barrier()
        t0 = time.perf_counter()
        call()
        world.barrier()
        times[mode].append(time.perf_counter() - t0)
    _backend.reset_for_tests(world)
    return statistics.median(times["checked"]), statistics.median(times["plain"])


def side_onnxruntime(a: argparse.Namespace, d: Path) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(str(d / "gpt.onnx"), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: _inputs(d)[0]}
    np.save(d / "onnxruntime_out.npy", session.run(None, feed)[0])
    return {"seconds": _timed(lambda: session.run(None, feed), a.repeat)}


def _gpt_block_on_mindspore():
    """``examples/gpt_block.py`` with ``distinfer`` standing for ``mindspore`` (its documented swap)."""
    import mindspore
    from mindspore.common import initializer

    alias = types.ModuleType("distinfer")
    alias.__dict__.update(vars(mindspore))
    alias.common = types.SimpleNamespace(initializer=initializer)
    sys.modules.update({"distinfer": alias, "distinfer.common": alias.common,
                        "distinfer.common.initializer": initializer})
    sys.path.insert(0, str(ROOT / "examples"))
    import gpt_block

    return mindspore, gpt_block


def side_mindspore(a: argparse.Namespace, d: Path) -> dict:
    ms, gpt_block = _gpt_block_on_mindspore()
    from mindspore import nn

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    net = gpt_block.GPTBlock(**net_config(a))
    ms.load_param_into_net(net, {name: ms.Parameter(ms.Tensor(np.load(d / f"param_{name}.npy")), name=name)
                                 for name, _ in net.parameters_and_names()}, strict_load=True)
    ids, labels = _inputs(d)
    out: dict = {"version": ms.__version__}
    if a.task == "predict":
        model = ms.Model(net)
        x = ms.Tensor(ids)
        np.save(d / "mindspore_out.npy", model.predict(x).asnumpy())
        out["seconds"] = _timed(lambda: model.predict(x).asnumpy(), a.repeat)
    else:
        step = nn.TrainOneStepCell(nn.WithLossCell(net, gpt_block.TokenLoss()),
                                   nn.Momentum(net.trainable_params(), 0.01, 0.9))
        x, y = ms.Tensor(ids), ms.Tensor(labels)
        out["first_loss"] = float(step(x, y).asnumpy())
        out["seconds"] = _timed(lambda: step(x, y).asnumpy(), a.repeat)
    return out


SIDES = {"prepare": side_prepare, "distinfer": side_distinfer, "onnxruntime": side_onnxruntime,
         "mindspore": side_mindspore}


def side_main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="one side of the GPT-block benchmark (run by bench_*.py)")
    ap.add_argument("--side", choices=sorted(SIDES), required=True)
    ap.add_argument("--task", choices=("predict", "train"), default="predict")
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=5)
    add_size_args(ap)
    a = ap.parse_args(argv)
    result = SIDES[a.side](a, a.dir)
    if result:
        print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- the parent side
def plain_env() -> dict:
    """The environment of a job started as MindSpore's tutorials start one: no thread variables
    (running as root still needs Open MPI's permission)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def side_command(python: str, side: str, a: argparse.Namespace, d: Path, task: str) -> list[str]:
    return [python, str(Path(__file__).resolve()), "--side", side, "--task", task, "--dir", str(d),
            "--repeat", str(a.repeat), *size_argv(a)]


def run_side(cmd: list[str], env: dict | None = None, timeout: float = 1800) -> dict:
    """Run one contender; its RESULT line as a dict (``error`` set if it failed)."""
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode or not lines:
        return {"error": f"exit {res.returncode}: {(res.stderr or res.stdout)[-1500:]}"}
    return json.loads(lines[-1][len("RESULT "):])


def measure(contenders: dict[str, tuple[list[str], dict | None]], rounds: int) -> dict[str, dict]:
    """Run every contender once per round, alternating; per contender the median of its rounds'
    seconds and its last result."""
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    last: dict[str, dict] = {}
    for _ in range(rounds):
        for name, (cmd, env) in contenders.items():
            r = run_side(cmd, env)
            last[name] = r
            if "seconds" in r:
                seconds[name].append(r["seconds"])
    return {name: {**last[name], "seconds": statistics.median(s) if s else None, "rounds": s}
            for name, s in seconds.items()}


def import_seconds(python: str, module: str, rounds: int, env: dict | None = None) -> float:
    """Median wall time of ``import module`` in a fresh interpreter (measured inside it)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, env=env,
                                  timeout=300).stdout.split()[-1]) for _ in range(rounds)]
    return statistics.median(times)


def agreement(d: Path, name: str) -> float | None:
    """Max |other - distinfer| / max |distinfer| of the predicted logits, if ``name`` saved its output."""
    path = d / f"{name}_out.npy"
    if not path.exists():
        return None
    ours = np.load(d / "distinfer_out.npy").astype(np.float64)
    return float(np.abs(np.load(path) - ours).max() / np.abs(ours).max())


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


if __name__ == "__main__":
    side_main()
