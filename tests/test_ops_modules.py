"""MindSpore's module paths under ``ops``: ``operations`` (P), ``functional`` (F), ``composite`` (C).

Each exposes the very objects ``distinfer.ops`` does. Against real MindSpore (an optional interop
check, skipped without it): every name they expose is one MindSpore's module of that name
exposes, and every name distinfer has that MindSpore's module exposes is there too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import distinfer as ms
from distinfer import autograd, ops
from distinfer.ops import composite as C
from distinfer.ops import functional as F
from distinfer.ops import operations as P
from distinfer.ops import registry

MODULES = {"operations": P, "functional": F, "composite": C}


def _mindspore_python() -> str | None:
    exe = os.environ.get("DISTINFER_MINDSPORE_PYTHON") or "/work/msenv/bin/python"
    return exe if os.path.exists(exe) else None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_name_is_the_object_ops_exposes(name):
    mod = MODULES[name]
    assert mod.__all__ and len(set(mod.__all__)) == len(mod.__all__)
    for n in mod.__all__:
        assert getattr(mod, n) is getattr(ops, n), f"{name}.{n}"
        assert n in ops.__all__, f"{name}.{n} is not in ops.__all__"


def test_what_each_module_holds():
    assert all(getattr(P, n) is registry.lookup(n) for n in P.__all__)
    assert F.grad is ms.grad is ops.grad and F.value_and_grad is ms.value_and_grad is ops.value_and_grad
    assert C.GradOperation is autograd.GradOperation is ops.GradOperation
    assert F.Primitive is ops.Primitive and F.tensor_add.name == "Add" and F.reduce_max.name == "ReduceMax"
    assert ms.ops.functional is F and ms.ops.composite is C and ms.ops.operations is P


def test_importing_ops_modules_runs_no_higher_floor():
    """With the package face bypassed (an empty ``distinfer`` package), importing the ops floor and its
    faces loads no module of floor 4 or 5 until a floor-4 name is asked for."""
    code = f"""
import json, sys, types
pkg = types.ModuleType("distinfer")
pkg.__path__ = [{os.path.dirname(ms.__file__)!r}]
sys.modules["distinfer"] = pkg
import distinfer.ops, distinfer.ops.primitive, distinfer.ops.function, distinfer.ops.operations
before = sorted(m for m in sys.modules if m.startswith("distinfer."))
distinfer.ops.GradOperation
after = sorted(m for m in sys.modules if m.startswith("distinfer."))
print(json.dumps([before, after]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = json.loads(out.stdout)
    higher = ("distinfer.autograd", "distinfer.parallel", "distinfer.nn", "distinfer.exporter", "distinfer.train")
    assert not [m for m in before if m.startswith(higher)], before
    assert "distinfer.autograd" in after and "distinfer.ops.composite" in after


@pytest.fixture(scope="module")
def mindspore_names() -> dict:
    exe = _mindspore_python()
    if exe is None:
        pytest.skip("real MindSpore not found (set DISTINFER_MINDSPORE_PYTHON to its python)")
    code = ("import json, mindspore.ops as ops\n"
            "from mindspore.ops import composite, functional, operations\n"
            "mods = dict(operations=operations, functional=functional, composite=composite)\n"
            "print(json.dumps({k: sorted(n for n in dir(m) if not n.startswith('_')) for k, m in mods.items()}))\n")
    proc = subprocess.run([exe, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_match_mindspore(name, mindspore_names):
    theirs = set(mindspore_names[name])
    ours = set(MODULES[name].__all__)
    assert ours <= theirs, f"distinfer.ops.{name} exposes names MindSpore's does not: {sorted(ours - theirs)}"
    missing = (set(ops.__all__) & theirs) - ours
    assert not missing, f"MindSpore's ops.{name} has {sorted(missing)}, which distinfer.ops has: expose them"
