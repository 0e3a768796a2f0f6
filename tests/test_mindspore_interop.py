"""MINDIR files across distinfer and real MindSpore 2.10, both ways (needs MindSpore's own Python).

The MindSpore side runs in a separate interpreter, found in ``DISTINFER_MINDSPORE_PYTHON`` (or
``/work/msenv/bin/python`` when that exists); without one every test here is skipped, saying
why. Its work is batched into one subprocess (tests/mindspore_side.py):

* distinfer's stand-alone exports of the seed network, the GPT block of examples/gpt_block.py and
  a network per supported op are loaded and run by ``mindspore.load`` + ``nn.GraphCell``, and
  agree with distinfer's predictions to a max relative error of 1e-5;
* every per-rank file of the 8-rank seed export and of a 4-rank GPT export is parsed by
  ``mindspore.load``;
* MindSpore's own export of the GPT block runs in distinfer with MindSpore's prediction;
* distinfer's ``mind_ir`` schema equals MindSpore's, field by field.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import distinfer as ms
from distinfer import context, nn
from distinfer._proto import mind_ir_pb2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from gpt_block import GPTBlock, full_params  # noqa: E402
from mindspore_side import describe  # noqa: E402
from op_cases import op_cases, outputs  # noqa: E402
from seed_net import seed_network  # noqa: E402

DEFAULT_PYTHON = "/work/msenv/bin/python"
GPT_CONFIG = dict(vocab=64, hidden=32, heads=4, seq=8, ffn=64)


def _mindspore_python() -> str | None:
    path = os.environ.get("DISTINFER_MINDSPORE_PYTHON") or (DEFAULT_PYTHON if os.path.exists(DEFAULT_PYTHON) else None)
    if path is None:
        return None
    probe = subprocess.run([path, "-c", "import mindspore; print(mindspore.__version__)"], capture_output=True,
                           text=True, timeout=300)
    return path if probe.returncode == 0 else None


MINDSPORE = _mindspore_python()
pytestmark = [pytest.mark.mindspore,
              pytest.mark.skipif(MINDSPORE is None, reason="MindSpore's Python not found: set DISTINFER_MINDSPORE_"
                                 f"PYTHON to an interpreter with mindspore==2.10.0 installed (default {DEFAULT_PYTHON})")]


def max_relative_error(got: np.ndarray, want: np.ndarray) -> float:
    want = np.asarray(want, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


# ---------------------------------------------------------------------- the exchange
@pytest.fixture(scope="module")
def exchange(tmp_path_factory, ms_fixtures):
    """Everything distinfer writes, handed to one MindSpore subprocess; returns what came back."""
    context.reset_auto_parallel_context()
    work = tmp_path_factory.mktemp("interop")
    tasks, expected = [], {}

    def run_task(name: str, net, inputs: list[np.ndarray]) -> None:
        path = ms.export(net, *[ms.Tensor(a) for a in inputs], file_name=str(work / name))
        np.savez(work / f"{name}_in.npz", **{f"x{i}": a for i, a in enumerate(inputs)})
        expected[name] = outputs(net(*[ms.Tensor(a) for a in inputs]))
        tasks.append({"kind": "run", "name": name, "file": path, "inputs": str(work / f"{name}_in.npz"),
                      "output": str(work / f"{name}_out.npz")})

    seed = seed_network(shard=False)
    full = np.load(ms_fixtures / "distributed" / "seed_8dev" / "full.npz")
    for name, p in seed.parameters_and_names():
        p.set_data(ms.Tensor(full[name]))
    run_task("seed", seed, [np.load(ms_fixtures / "mindir" / "input.npz")["x"]])
    ms.set_seed(7)
    gpt = GPTBlock(**GPT_CONFIG)
    ids = np.random.RandomState(0).randint(0, GPT_CONFIG["vocab"], size=(2, GPT_CONFIG["seq"])).astype(np.int32)
    run_task("gpt", gpt, [ids])
    for name, (net, inputs) in op_cases().items():
        run_task(f"op_{name}", net, inputs)

    for n, script, args in ((8, "export_seed.py", ["data_parallel"]), (4, "export_gpt.py", [])):
        folder = work / f"ranks{n}"
        folder.mkdir()
        _launch(n, script, [str(folder)] + args)
        tasks += [{"kind": "load", "name": f"ranks{n}/{f.name}", "file": str(f)} for f in sorted(folder.glob("*.mindir"))]

    np.savez(work / "gpt_params.npz", **full_params(gpt))
    np.savez(work / "gpt_ids.npz", ids=ids)
    tasks.append({"kind": "export_gpt", "name": "ms_gpt", "config": GPT_CONFIG, "params": str(work / "gpt_params.npz"),
                  "ids": str(work / "gpt_ids.npz"), "file": str(work / "ms_gpt.mindir"),
                  "output": str(work / "ms_gpt_out.npz")})
    tasks.append({"kind": "schema", "name": "schema", "output": str(work / "schema.json")})
    (work / "tasks.json").write_text(json.dumps(tasks))
    proc = subprocess.run([MINDSPORE, str(ROOT / "tests" / "mindspore_side.py"), str(work / "tasks.json"),
                           str(work / "report.json")], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((work / "report.json").read_text())
    return {"work": work, "tasks": {t["name"]: t for t in tasks}, "expected": expected,
            "report": {t["name"]: report[str(i)] for i, t in enumerate(tasks)}, "gpt_ids": ids}


def _launch(n: int, script: str, args: list[str]) -> None:
    from distinfer.launch import mpirun_command, mpirun_env

    cmd = mpirun_command(n, [str(ROOT / "tests" / "mpi" / script)] + args)
    proc = subprocess.run(cmd, env=mpirun_env(dict(os.environ), n), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _ran(exchange, name: str) -> list[np.ndarray]:
    assert exchange["report"][name] == "ok", f"MindSpore failed on {name}: {exchange['report'][name]}"
    with np.load(exchange["tasks"][name]["output"]) as z:
        return [z[f"y{i}"] for i in range(len(z.files))]


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", ["seed", "gpt"])
def test_mindspore_runs_standalone_exports(exchange, name):
    got = _ran(exchange, name)
    (want,) = exchange["expected"][name]
    assert got[0].shape == want.shape and got[0].dtype == want.dtype
    assert max_relative_error(got[0], want) <= 1e-5


def test_seed_export_matches_mindspores_prediction(exchange, ms_fixtures):
    """MindSpore running distinfer's file reproduces MindSpore's own prediction of the seed network."""
    want = np.load(ms_fixtures / "mindir" / "expected_output.npz")["y"]
    assert max_relative_error(_ran(exchange, "seed")[0], want) <= 1e-5


@pytest.mark.parametrize("name", sorted(op_cases()))
def test_mindspore_runs_every_exported_op(exchange, name):
    got = _ran(exchange, f"op_{name}")
    want = exchange["expected"][f"op_{name}"]
    assert len(got) == len(want), f"{name}: {len(got)} outputs from MindSpore, {len(want)} from distinfer"
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (name, g.shape, g.dtype, w.shape, w.dtype)
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w, err_msg=name)
        else:
            tol = 1e-3 if w.dtype == np.float16 else 1e-5
            assert max_relative_error(g, w) <= tol, name


def test_mindspore_parses_every_per_rank_file(exchange):
    loads = {k: v for k, v in exchange["report"].items() if exchange["tasks"][k]["kind"] == "load"}
    assert len([k for k in loads if k.startswith("ranks8/")]) == 8
    assert len([k for k in loads if k.startswith("ranks4/")]) == 12  # gpt_rank_*, mm_rank_* and rows_rank_*
    assert all(v == "ok" for v in loads.values()), {k: v for k, v in loads.items() if v != "ok"}


def test_distinfer_runs_mindspores_gpt_export(exchange):
    """The GPT block exported by MindSpore itself (primitive functions with constant inputs) runs here."""
    (want,) = _ran(exchange, "ms_gpt")
    graph = ms.load(exchange["tasks"]["ms_gpt"]["file"])
    assert graph.producer == "MindSpore"
    got = nn.GraphCell(graph)(ms.Tensor(exchange["gpt_ids"])).asnumpy()
    assert max_relative_error(got, want) <= 1e-5
    assert max_relative_error(got, exchange["expected"]["gpt"][0]) <= 1e-5  # and distinfer's own prediction


def test_schema_equals_mindspores(exchange):
    assert exchange["report"]["schema"] == "ok"
    theirs = json.loads(Path(exchange["tasks"]["schema"]["output"]).read_text())
    assert describe(mind_ir_pb2) == theirs
