#!/usr/bin/env python3
"""Regenerate ``src/distinfer/_proto/*_pb2.py`` from the ``.proto`` files beside them.

The protoc is pinned (grpcio-tools ``GRPC_TOOLS_VERSION``, which bundles libprotoc 26.1) so the
output is reproducible and its gencode version (5.26.1) matches the oldest protobuf runtime
distinfer supports (pyproject: ``protobuf>=5.26.1``); newer runtimes accept older gencode.

grpcio-tools needs protobuf<6, which would clash with the project's runtime, so it is installed
into a throw-away virtual environment under the system temp dir (reused between runs)::

    python3 scripts/gen_protos.py          # regenerate
    python3 scripts/gen_protos.py --check  # exit 1 if the committed modules are stale
"""
from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

GRPC_TOOLS_VERSION = "1.63.0"
EXPECTED_PROTOC = "libprotoc 26.1"
ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "src" / "distinfer" / "_proto"
PROTOS = ["checkpoint.proto", "node_strategy.proto", "mind_ir.proto"]
TOOL_VENV = Path(tempfile.gettempdir()) / f"distinfer-grpc-tools-{GRPC_TOOLS_VERSION}"


def tool_python() -> Path:
    """Interpreter of the throw-away venv holding the pinned grpcio-tools."""
    py = TOOL_VENV / "bin" / "python"
    if not py.exists():
        venv.EnvBuilder(with_pip=True).create(TOOL_VENV)
    probe = subprocess.run([str(py), "-c", "import grpc_tools, importlib.metadata as m;"
                            "print(m.version('grpcio-tools'))"], capture_output=True, text=True)
    if probe.stdout.strip() != GRPC_TOOLS_VERSION:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"grpcio-tools=={GRPC_TOOLS_VERSION}"], check=True)
    version = subprocess.run([str(py), "-m", "grpc_tools.protoc", "--version"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != EXPECTED_PROTOC:
        raise SystemExit(f"pinned grpcio-tools reports {version!r}, expected {EXPECTED_PROTOC!r}")
    return py


def generate(out_dir: Path) -> None:
    py = tool_python()
    subprocess.run([str(py), "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}",
                    *PROTOS], check=True, cwd=PROTO_DIR)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of overwrite")
    args = ap.parse_args()
    if not args.check:
        generate(PROTO_DIR)
        print(f"generated {', '.join(p.replace('.proto', '_pb2.py') for p in PROTOS)} in {PROTO_DIR}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [p for p in PROTOS
                 if not filecmp.cmp(Path(tmp) / p.replace(".proto", "_pb2.py"),
                                    PROTO_DIR / p.replace(".proto", "_pb2.py"), shallow=False)]
    if stale:
        print(f"stale generated modules for: {stale}", file=sys.stderr)
        return 1
    print("generated modules are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
