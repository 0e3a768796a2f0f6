"""``distinfer verify``: reassemble an export's per-rank weight blocks and compare them with checkpoints.

Each rank's file holds its local blocks and (``parallel`` / ``distinfer.param_layouts``) their
layouts. For every parameter the blocks are stitched back into the full tensor with the one
planner (``plan.make_plan`` to a single-rank layout + ``plan.assemble``), every rank's block is
checked against the full tensor's block for that rank (replicas must agree), and the result
is compared with a reference: a full checkpoint (``.ckpt`` or ``.npz``), or a distributed
checkpoint set (a folder of ``rank_<k>/*.ckpt`` plus ``strategy=``, merged the same way).

>>> import numpy as np, tempfile, os, distinfer as ms
>>> from distinfer import nn
>>> d = tempfile.mkdtemp(); net = nn.Dense(3, 2)
>>> _ = ms.export(net, ms.Tensor(np.ones((1, 3), np.float32)), file_name=os.path.join(d, "net"))
>>> np.savez(os.path.join(d, "full.npz"), **{p.name: p.asnumpy() for p in net.get_parameters()})
>>> verify_export(d, checkpoint=os.path.join(d, "full.npz")).ok
True
"""
from __future__ import annotations

import glob
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FormatError
from ..layout import Layout
from ..plan import assemble, extract, make_plan
from .mindir_reader import Graph, read_mindir

log = logging.getLogger(__name__)

__all__ = ["VerifyReport", "verify_export", "export_weights", "register", "add_arguments", "run_cli"]

HELP = "compare the per-rank weights of a MindIR export with a checkpoint"


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_export`: per-parameter problems (empty when everything matches).

    >>> report = VerifyReport(checked=["bias", "weight"], mismatches={"bias": "not in the checkpoint"})
    >>> report.ok
    False
    >>> print(report)
    2 parameter(s) checked, 1 mismatch(es)
      bias: not in the checkpoint
    """

    checked: list[str] = field(default_factory=list)
    mismatches: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def __str__(self) -> str:
        lines = [f"{len(self.checked)} parameter(s) checked, {len(self.mismatches)} mismatch(es)"]
        lines += [f"  {name}: {why}" for name, why in sorted(self.mismatches.items())]
        return "\n".join(lines)


# ------------------------------------------------------------------- the export side
def _rank_of(g: Graph, index: int) -> int:
    if g.rank is not None:
        return g.rank
    m = re.search(r"rank_?(\d+)", os.path.basename(g.path))
    return int(m.group(1)) if m else index


def _layout_from_proto(g: Graph, name: str, block: np.ndarray) -> Layout | None:
    """A MindSpore-made file's layout: LayoutProto plus the block shape (no optimizer shard)."""
    entry = g.parameter_layout_dict().get(name)
    if entry is None:
        return None
    dev, tm, slice_shape, _, _, opt_group = entry
    if opt_group:
        raise FormatError(f"{g.path}: {name} is optimizer-sharded ({opt_group}); its full shape is not recorded")
    probe = Layout(tuple(dev), tuple(tm), (math.prod(dev),) * len(tm))
    return Layout(tuple(dev), tuple(tm), tuple(s * k for s, k in zip(block.shape, probe.splits)))


def _merge(name: str, layout: Layout, blocks: dict[int, np.ndarray], where: str) -> np.ndarray:
    """The full tensor from per-rank blocks (one planner: make_plan + assemble)."""
    whole = Layout((1,), (-1,) * len(layout.shape), layout.shape)
    plan = make_plan(layout, whole)
    missing = sorted({p.src for p in plan.pieces} - set(blocks))
    if missing:
        raise FormatError(f"{where}: {name} needs the blocks of rank(s) {missing}, which are missing")
    dtype = next(iter(blocks.values())).dtype
    return assemble(plan, 0, lambda p: extract(blocks[p.src], layout, p.src, p.box), dtype=dtype)


def _check_replicas(name: str, layout: Layout, full: np.ndarray, blocks: dict[int, np.ndarray]) -> str | None:
    bad = [r for r, b in sorted(blocks.items())
           if b.shape != layout.local_shape or not np.array_equal(b, full[layout.block(r)])]
    return f"block(s) of rank(s) {bad} disagree with the reassembled tensor (replicas differ)" if bad else None


def export_weights(mindir_dir: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``({param: full tensor}, {param: problem})`` reassembled from every ``*.mindir`` in ``mindir_dir``.

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> d = tempfile.mkdtemp(); net = nn.Dense(3, 2, weight_init="ones", bias_init="zeros")
    >>> _ = ms.export(net, ms.Tensor(np.ones((1, 3), np.float32)), file_name=os.path.join(d, "net"))
    >>> full, problems = export_weights(d)
    >>> {name: block.tolist() for name, block in full.items()}, problems
    ({'bias': [0.0, 0.0], 'weight': [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]}, {})
    """
    files = sorted(glob.glob(os.path.join(os.fspath(mindir_dir), "*.mindir")))
    if not files:
        raise FileNotFoundError(f"verify: no .mindir files in {mindir_dir}")
    graphs = [read_mindir(f) for f in files]
    by_rank = {_rank_of(g, i): g for i, g in enumerate(graphs)}
    if len(by_rank) != len(graphs):
        raise FormatError(f"verify: {mindir_dir} holds several files for one rank: {files}")
    names = sorted({n for g in graphs for n in g.weights()})
    full, problems = {}, {}
    for name in names:
        blocks = {r: g.weights()[name] for r, g in by_rank.items() if name in g.weights()}
        g0 = by_rank[min(blocks)]
        layout = g0.param_layouts.get(name) or _layout_from_proto(g0, name, blocks[min(blocks)])
        if layout is None:
            full[name] = blocks[min(blocks)]
            layout = Layout((len(blocks),), (-1,) * blocks[min(blocks)].ndim, blocks[min(blocks)].shape)
        else:
            full[name] = _merge(name, layout, blocks, str(mindir_dir))
        why = _check_replicas(name, layout, full[name], {r % layout.num_devices: b for r, b in blocks.items()})
        if why:
            problems[name] = why
    return full, problems


# --------------------------------------------------------------- the reference side
def _read_full(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    from ..io.ckpt import CkptFile

    with CkptFile(path) as f:
        return {n: v for n in f.names() if isinstance(v := f.read(n), np.ndarray)}


def _rank_files(folder: str) -> dict[int, str]:
    out = {}
    for d in glob.glob(os.path.join(folder, "rank_*")):
        m = re.fullmatch(r"rank_(\d+)", os.path.basename(d))
        files = sorted(glob.glob(os.path.join(d, "*.ckpt")))
        if m and files:
            out[int(m.group(1))] = files[-1]
    if not out:
        raise FileNotFoundError(f"verify: {folder} has no rank_<k>/*.ckpt files")
    return out


def _read_set(folder: str, strategy: str | None) -> dict[str, np.ndarray]:
    """Merge a per-rank checkpoint set with its strategy file into full tensors."""
    if strategy is None:
        raise ValueError(f"verify: {folder} is a per-rank checkpoint set; pass strategy= (its strategy file)")
    from ..io.strategy_file import read_strategy

    layouts = read_strategy(strategy).layouts
    ranks = {r: _read_full(p) for r, p in _rank_files(folder).items()}
    full = {}
    for name in sorted(set().union(*[set(v) for v in ranks.values()])):
        blocks = {r: v[name] for r, v in ranks.items() if name in v}
        pl = layouts.get(name)
        if pl is None:
            full[name] = blocks[min(blocks)]
            continue
        probe = Layout(tuple(pl.dev_matrix), tuple(pl.tensor_map), (math.prod(pl.dev_matrix),) * len(pl.tensor_map))
        local = blocks[min(blocks)].shape
        shape = [s * k for s, k in zip(local, probe.splits)]
        opt = pl.opt_shard_size()
        if opt and shape:
            shape[0] *= min(opt, probe.num_devices // math.prod(probe.splits))
        full[name] = _merge(name, pl.to_layout(shape), blocks, folder)
    return full


def _reference(checkpoint: str, strategy: str | None) -> dict[str, np.ndarray]:
    if os.path.isdir(checkpoint):
        return _read_set(checkpoint, strategy)
    return _read_full(checkpoint)


# ------------------------------------------------------------------------- compare
def verify_export(mindir_dir: str, checkpoint: str, strategy: str | None = None, rtol: float = 0.0,
                  atol: float = 0.0) -> VerifyReport:
    """Compare the weights of an export (one ``.mindir`` per rank in ``mindir_dir``) with a checkpoint.

    ``checkpoint`` is a full ``.ckpt``/``.npz`` or a folder of ``rank_<k>/*.ckpt`` (then pass
    its ``strategy`` file). Only parameters present in the export are compared; ones missing
    from the checkpoint are reported. Exact equality by default.

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> d = tempfile.mkdtemp(); net = nn.Dense(3, 2, weight_init="ones", bias_init="zeros")
    >>> _ = ms.export(net, ms.Tensor(np.ones((1, 3), np.float32)), file_name=os.path.join(d, "net"))
    >>> np.savez(os.path.join(d, "ref.npz"), weight=np.ones((2, 3), np.float32), bias=np.array([0, 1], np.float32))
    >>> print(verify_export(d, checkpoint=os.path.join(d, "ref.npz")))
    2 parameter(s) checked, 1 mismatch(es)
      bias: values differ (max abs diff 1 at (1,))
    """
    full, problems = export_weights(mindir_dir)
    ref = _reference(os.fspath(checkpoint), strategy)
    report = VerifyReport(checked=sorted(full), mismatches=dict(problems))
    for name, arr in full.items():
        if name in report.mismatches:
            continue
        why = _compare(arr, ref.get(name), rtol, atol)
        if why:
            report.mismatches[name] = why
    return report


def _compare(arr: np.ndarray, ref: Any, rtol: float = 0.0, atol: float = 0.0) -> str | None:
    if ref is None:
        return "not in the checkpoint"
    ref = np.asarray(ref)
    if ref.shape != arr.shape:
        return f"shape {arr.shape} in the export, {ref.shape} in the checkpoint"
    a, b = arr.astype(np.float64) if arr.dtype.kind in "fc" or arr.dtype.itemsize == 2 else arr, ref
    if not np.allclose(a, b.astype(a.dtype), rtol=rtol, atol=atol, equal_nan=True):
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        return f"values differ (max abs diff {diff.max():.3g} at {tuple(int(i) for i in np.unravel_index(diff.argmax(), diff.shape))})"
    return None


# ----------------------------------------------------------------------------- CLI
def run_cli(args: Any) -> int:
    """Handler of ``distinfer verify``: print the report; exit status 0 when everything matches."""
    report = verify_export(args.mindir_dir, checkpoint=args.checkpoint, strategy=args.strategy, rtol=args.rtol,
                           atol=args.atol)
    print(report)
    return 0 if report.ok else 1


def add_arguments(p: Any) -> None:
    """The options of ``distinfer verify`` on an argparse parser."""
    p.add_argument("mindir_dir", help="folder holding one .mindir per rank")
    p.add_argument("--checkpoint", required=True, help="full .ckpt/.npz, or a folder of rank_<k>/*.ckpt")
    p.add_argument("--strategy", default=None, help="strategy file of a per-rank checkpoint set")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default: exact)")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default: exact)")


def register(subparsers: Any) -> Any:
    """Add ``verify MINDIR_DIR --checkpoint CKPT [--strategy FILE]`` to an argparse subparsers object.

    The handler is stored as ``func`` (it returns the exit status).
    """
    p = subparsers.add_parser("verify", help=HELP, description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=run_cli)
    return p


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="distinfer")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(argv)
    return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())
