"""The ``distinfer`` command: inspect, plan, transform, merge; exit codes and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from distinfer import cli
from distinfer.io import CkptFile, SafetensorsFile


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_ckpt_and_strategy(ms_fixtures, capsys):
    code, out, _ = _run(capsys, "inspect", str(ms_fixtures / "distributed" / "seed_8dev" / "rank_2" / "checkpoint-1_1.ckpt"))
    assert code == 0 and "layer1.weight" in out and "(784, 256)" in out and "Float32" in out
    code, out, _ = _run(capsys, "inspect", "--json", str(ms_fixtures / "strategy" / "pipeline" / "merged.ckpt"))
    obj = json.loads(out)
    assert code == 0 and obj["kind"] == "strategy"
    assert {r["name"]: r["stage"] for r in obj["layouts"]}["layer3.weight"] == 1
    code, out, _ = _run(capsys, "inspect", str(ms_fixtures / "strategy" / "seed_8dev.json"))
    assert code == 0 and "tensor_map=[-1, 1]" in out and "shape=[784, 512]" in out
    code, out, _ = _run(capsys, "inspect", "--json", str(ms_fixtures / "safetensors" / "dtypes.safetensors"))
    assert code == 0 and json.loads(out)["kind"] == "checkpoint"


def test_plan(ms_fixtures, capsys):
    s = ms_fixtures / "strategy"
    code, out, _ = _run(capsys, "plan", "--src-strategy", str(s / "seed_8dev.ckpt"), "--dst-strategy",
                        str(s / "dst_4dev.ckpt"), "--src-dir", str(ms_fixtures / "distributed" / "seed_8dev"), "--json")
    obj = json.loads(out)
    assert code == 0 and len(obj["ranks"]) == 4
    r0 = obj["ranks"][0]
    assert [p.split("/")[-2] for p in r0["files"]] == ["rank_0", "rank_2"]
    assert r0["bytes_needed"] == r0["bytes_written"] - 8  # + global_step and learning_rate
    assert r0["over_read"] == pytest.approx(1.0)
    code, out, _ = _run(capsys, "plan", "--src-strategy", str(s / "seed_8dev.ckpt"), "--dst-strategy", str(s / "dst_4dev.ckpt"))
    assert code == 0 and "rank 1: source ranks [3, 1]" in out


def test_transform_and_merge(ms_fixtures, tmp_path, capsys):
    seed = ms_fixtures / "distributed" / "seed_8dev"
    s = ms_fixtures / "strategy"
    code, _, err = _run(capsys, "transform", str(seed), str(tmp_path / "out"), "--src-strategy", str(s / "seed_8dev.ckpt"),
                        "--dst-strategy", str(s / "opt_4dev.ckpt"))
    assert code == 0, err
    for r in range(4):
        assert (tmp_path / "out" / f"rank_{r}" / f"checkpoint_{r}.ckpt").read_bytes() == \
            (seed / "transformed_opt" / f"rank_{r}" / f"checkpoint_{r}.ckpt").read_bytes()
    full = np.load(seed / "full.npz")
    for name in ("m.ckpt", "m.safetensors"):
        code, _, err = _run(capsys, "merge", str(seed), str(tmp_path / name), "--src-strategy", str(s / "seed_8dev.ckpt"))
        assert code == 0, err
        f = CkptFile(tmp_path / name) if name.endswith(".ckpt") else SafetensorsFile(tmp_path / name)
        with f:
            for k in full.files:
                np.testing.assert_array_equal(f.read(k), full[k])


def test_unify(ms_fixtures, tmp_path, capsys):
    """``distinfer unify`` (unified_safetensors) on MindSpore's seed rank files: full tensors, map, hyper params."""
    seed = ms_fixtures / "distributed" / "seed_8dev"
    strategy = str(ms_fixtures / "strategy" / "seed_8dev.ckpt")
    code, _, err = _run(capsys, "unify", str(seed), str(tmp_path / "u"), "--src-strategy", strategy)
    assert code == 0, err
    weight_map = json.loads((tmp_path / "u" / "param_name_map.json").read_text())["weight_map"]
    full = np.load(seed / "full.npz")
    assert sorted(weight_map) == sorted(full.files)
    for name, part in weight_map.items():
        with SafetensorsFile(tmp_path / "u" / part) as f:
            np.testing.assert_array_equal(f.read(name), full[name])
    with SafetensorsFile(tmp_path / "u" / "hyper_param.safetensors") as f, \
            CkptFile(seed / "rank_0" / "checkpoint-1_1.ckpt") as ref:
        assert sorted(f.names()) == ["global_step", "learning_rate"]
        for n in f.names():
            np.testing.assert_array_equal(f.read(n), ref.read(n))
    code, _, err = _run(capsys, "unify", str(tmp_path), str(tmp_path / "v"), "--src-strategy", strategy)
    assert code == 1 and "rank_0" in err and err.count("\n") == 1


def test_errors_and_exit_codes(ms_fixtures, tmp_path, capsys):
    code, _, err = _run(capsys, "inspect", str(tmp_path / "missing.ckpt"))
    assert code == 1 and err.count("\n") == 1 and "missing.ckpt" in err
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x01\x02garbage")
    code, _, err = _run(capsys, "inspect", str(bad))
    assert code == 1 and "bad.ckpt" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "transform", str(tmp_path), str(tmp_path / "o"), "--src-strategy",
                        str(ms_fixtures / "strategy" / "seed_8dev.ckpt"))
    assert code == 1 and "rank_0" in err
    assert _run(capsys, "nosuch")[0] == 2
    assert _run(capsys, "plan")[0] == 2
    assert _run(capsys, "--help")[0] == 0


def test_subcommand_registry_is_extensible(capsys):
    @cli.subcommand("echo-test", help="test only")
    def _echo(args):
        print(args.word)
        return 0

    @_echo.configure
    def _(p):
        p.add_argument("word")

    try:
        assert _run(capsys, "echo-test", "hi")[:2] == (0, "hi\n")
    finally:
        del cli.SUBCOMMANDS["echo-test"]


def test_python_dash_m(ms_fixtures):
    res = subprocess.run([sys.executable, "-m", "distinfer", "inspect",
                          str(ms_fixtures / "strategy" / "dst_4dev.ckpt")], capture_output=True, text=True)
    assert res.returncode == 0 and "layer1.weight" in res.stdout
