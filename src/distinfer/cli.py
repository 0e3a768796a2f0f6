"""The ``distinfer`` command: inspect files, plan and run checkpoint resharding.

Subcommands register themselves with :func:`subcommand`; adding one is a decorated function
taking the parsed arguments (and a ``configure(parser)`` hook for its options)::

    @subcommand("verify", help="check a checkpoint against a strategy")
    def _verify(args): ...
    @_verify.configure
    def _(p): p.add_argument("file")

Exit codes: 0 success, 2 usage error (argparse), 1 any other error, reported as one line
``distinfer: error: <message naming the file>`` on stderr.

>>> list(SUBCOMMANDS)
['inspect', 'plan', 'transform', 'merge', 'unify', 'verify']
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

__all__ = ["main", "subcommand", "SUBCOMMANDS"]

log = logging.getLogger(__name__)


@dataclass
class _Sub:
    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    configure_fn: Optional[Callable[[argparse.ArgumentParser], None]] = None

    def configure(self, fn: Callable[[argparse.ArgumentParser], None]) -> Callable:
        self.configure_fn = fn
        return fn


#: name -> subcommand, in registration order.
SUBCOMMANDS: dict[str, _Sub] = {}


def subcommand(name: str, help: str) -> Callable[[Callable[[argparse.Namespace], int]], _Sub]:
    """Register ``fn(args) -> exit code`` as ``distinfer <name>``."""
    def deco(fn: Callable[[argparse.Namespace], int]) -> _Sub:
        sub = _Sub(name, help, fn)
        SUBCOMMANDS[name] = sub
        return sub
    return deco


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def _out(args: argparse.Namespace, obj, lines: Sequence[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, indent=1))
    else:
        print("\n".join(lines))


# ----------------------------------------------------------------------------- inspect
@subcommand("inspect", help="list the tensors of a .ckpt/.safetensors file, or the layouts of a strategy file")
def _inspect(args: argparse.Namespace) -> int:
    from .errors import FormatError
    from .io import read_strategy
    from .reshard.sources import open_checkpoint

    path = args.file
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    reader = None
    if not path.endswith(".json"):
        try:
            reader = open_checkpoint(path)
        except FormatError:
            if path.endswith(".safetensors"):
                raise
    if reader is not None:
        with reader:
            rows = [{"name": e.name, "dtype": e.dtype.name, "shape": list(e.shape), "bytes": e.nbytes}
                    for e in (reader.entry(n) for n in reader.names())]
        total = sum(r["bytes"] for r in rows)
        width = max([len(r["name"]) for r in rows] + [4])
        lines = [f"{path}: {len(rows)} tensors, {_size(total)}"]
        lines += [f"  {r['name']:<{width}}  {r['dtype']:<9} {str(tuple(r['shape'])):<18} {_size(r['bytes'])}"
                  for r in rows]
        _out(args, {"file": path, "kind": "checkpoint", "tensors": rows, "bytes": total}, lines)
        return 0
    try:
        sf = read_strategy(path)
    except FormatError as exc:
        raise FormatError(f"{path}: neither a checkpoint nor a strategy file ({exc})") from None
    from .io import split_stage_name
    rows = []
    for raw, pl in sf.layouts.items():
        stage, name = split_stage_name(raw)
        rows.append({"name": name, "stage": stage, "dev_matrix": pl.dev_matrix,
                     "tensor_map": [list(e) if isinstance(e, tuple) else e for e in pl.tensor_map],
                     "opt_weight_shard_step": pl.opt_weight_shard_step,
                     "opt_weight_shard_size": pl.opt_weight_shard_size, "tensor_shape": pl.tensor_shape,
                     "devices": math.prod(pl.dev_matrix)})
    lines = [f"{path}: strategy file, {len(rows)} layouts, {len(sf.items)} operator strategies, "
             f"current_stage={sf.current_stage}"]
    width = max([len(r["name"]) for r in rows] + [4])
    for r in rows:
        opt = f" opt(step={r['opt_weight_shard_step']}, size={r['opt_weight_shard_size']})" \
            if r["opt_weight_shard_step"] or r["opt_weight_shard_size"] else ""
        st = f"stage {r['stage']} " if r["stage"] is not None else ""
        shape = f" shape={r['tensor_shape']}" if r["tensor_shape"] is not None else ""
        lines.append(f"  {r['name']:<{width}}  {st}dev_matrix={r['dev_matrix']} tensor_map={r['tensor_map']}"
                     f"{opt}{shape}")
    for key, (stage, strat) in sf.items.items():
        lines.append(f"  op {key}: stage {stage} strategy {strat}")
    _out(args, {"file": path, "kind": "strategy", "layouts": rows,
                "items": {k: {"stage": s, "strategy": v} for k, (s, v) in sf.items.items()}}, lines)
    return 0


@_inspect.configure
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help=".ckpt, .safetensors or strategy (.ckpt protobuf / .json) file")
    p.add_argument("--json", action="store_true", help="machine-readable output")


# -------------------------------------------------------------------------------- plan
@subcommand("plan", help="per destination rank: source files, bytes read, over-read and peak memory (reads nothing)")
def _plan(args: argparse.Namespace) -> int:
    from .reshard.api import rank_list_for_transform
    from .reshard.planning import TrainStrategy
    from .reshard.targets import plan_transform

    if args.src_dir is None:
        dst = TrainStrategy.from_file(args.dst_strategy) if args.dst_strategy else None
        n = dst.device_num if dst is not None else 1
        rows = [{"rank": r, "source_ranks": rank_list_for_transform(r, args.src_strategy, args.dst_strategy)}
                for r in range(n)]
        _out(args, {"ranks": rows}, [f"rank {r['rank']}: source ranks {r['source_ranks']}" for r in rows]
             + ["(pass --src-dir for bytes and memory)"])
        return 0
    job = plan_transform(args.src_dir, args.src_strategy, args.dst_strategy)
    try:
        rows = [job.cost(r) for r in sorted(job.layouts)]
    finally:
        job.close()
    lines = []
    for c in rows:
        lines.append(f"rank {c['rank']}: {len(c['files'])} source files, read {_size(c['bytes_read'])} "
                     f"(needed {_size(c['bytes_needed'])}, over-read x{c['over_read']:.3f}), "
                     f"write {_size(c['bytes_written'])}, peak ~{_size(c['peak_bytes'])}")
        for f, b in c["files"].items():
            lines.append(f"    {f}: {_size(b)}")
    tot_r = sum(c["bytes_read"] for c in rows)
    tot_w = sum(c["bytes_written"] for c in rows)
    lines.append(f"total: read {_size(tot_r)}, write {_size(tot_w)}")
    _out(args, {"ranks": rows, "bytes_read": tot_r, "bytes_written": tot_w}, lines)
    return 0


@_plan.configure
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src-strategy", required=True, help="training strategy file")
    p.add_argument("--dst-strategy", default=None, help="destination strategy file (omit: one full checkpoint)")
    p.add_argument("--src-dir", default=None, help="directory of rank_<r>/ source checkpoints (for sizes)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


# --------------------------------------------------------------------------- transform
@subcommand("transform", help="reshard rank_<r>/ checkpoints to a destination strategy (transform_checkpoints)")
def _transform(args: argparse.Namespace) -> int:
    from .reshard.api import transform_checkpoints

    transform_checkpoints(args.src_dir, args.dst_dir, args.prefix, args.src_strategy, args.dst_strategy,
                          process_num=args.process_num, output_format=args.format,
                          split_among_ranks=args.split_among_ranks)
    return 0


@_transform.configure
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("src_dir", help="directory holding rank_<r>/*.ckpt")
    p.add_argument("dst_dir", help="output directory (rank_<r>/<prefix><r>.ckpt)")
    p.add_argument("--src-strategy", default=None, help="training strategy file")
    p.add_argument("--dst-strategy", default=None, help="destination strategy file (omit: one full checkpoint)")
    p.add_argument("--prefix", default="checkpoint_", help="output name prefix (default checkpoint_)")
    p.add_argument("-j", "--process-num", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--format", choices=("ckpt", "safetensors"), default="ckpt", help="output format")
    p.add_argument("--split-among-ranks", action="store_true",
                   help="under mpirun: divide the destination ranks among the MPI ranks (every rank runs it)")


# ------------------------------------------------------------------------------- merge
@subcommand("merge", help="merge rank_<r>/ checkpoints into one full checkpoint file")
def _merge(args: argparse.Namespace) -> int:
    from .reshard.targets import plan_transform
    from .reshard.writing import fan_out

    out = args.output
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"{parent}: output directory does not exist")
    job = plan_transform(args.src_dir, args.src_strategy, None)
    try:
        fan_out(job, {0: out}, divide=False)  # .safetensors iff the name says so
    finally:
        job.close()
    return 0


@_merge.configure
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("src_dir", help="directory holding rank_<r>/*.ckpt")
    p.add_argument("output", help="output file (.ckpt or .safetensors)")
    p.add_argument("--src-strategy", required=True, help="training strategy file")


# ------------------------------------------------------------------------------- unify
@subcommand("unify", help="merge rank_<r>/ safetensors into full-tensor part files (unified_safetensors)")
def _unify(args: argparse.Namespace) -> int:
    from .reshard.api import unified_safetensors

    unified_safetensors(args.src_dir, args.src_strategy, args.dst_dir,
                        merge_with_redundancy=not args.deduplicated, file_suffix=args.file_suffix,
                        max_process_num=args.process_num)
    return 0


@_unify.configure
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("src_dir", help="directory holding rank_<r>/*.safetensors (or *.ckpt)")
    p.add_argument("dst_dir", help="output directory (part<i>.safetensors, param_name_map.json, hyper_param.safetensors)")
    p.add_argument("--src-strategy", required=True, help="training strategy file")
    p.add_argument("--file-suffix", default=None, help="pick the rank file whose name ends with this suffix")
    p.add_argument("--deduplicated", action="store_true",
                   help="the rank files were saved with remove_redundancy (merge_with_redundancy=False)")
    p.add_argument("-j", "--process-num", type=int, default=1, help="worker processes (default 1)")


# ------------------------------------------------------------------------------ verify
@subcommand("verify", help="compare the per-rank weights of a MindIR export with a checkpoint")
def _verify(args: argparse.Namespace) -> int:
    from .exporter.verify import run_cli

    return run_cli(args)


@_verify.configure
def _(p: argparse.ArgumentParser) -> None:
    from .exporter.verify import add_arguments

    add_arguments(p)


# -------------------------------------------------------------------------------- main
def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand (with ``only``, only that one gets its
    options: a short command does not import what the others need)."""
    parser = argparse.ArgumentParser(prog="distinfer", description="MindSpore-compatible checkpoint tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    subs.required = True
    for sub in SUBCOMMANDS.values():
        sp = subs.add_parser(sub.name, help=sub.help, description=sub.help)
        if sub.configure_fn is not None and only in (None, sub.name):
            sub.configure_fn(sp)
        sp.set_defaults(_run=sub.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``distinfer`` with ``argv``; returns the exit code (0 ok, 1 error, 2 usage)."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=next((w for w in words if w in SUBCOMMANDS), None))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    if args.verbose:
        logging.basicConfig(level=logging.INFO)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("distinfer: interrupted", file=sys.stderr)
        return 130
    except (Exception,) as exc:  # one line, naming the file; -v for the traceback
        if args.verbose:
            log.exception("failed")
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError):
            msg = msg.strip("\"'")
        print(f"distinfer: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
