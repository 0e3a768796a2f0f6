"""The pieces of the communication guard that need no MPI: fingerprints, stamps, tags, the
watchdog setting and the agreement message (the guard itself is exercised by tests/test_faults.py)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import distinfer as ms
from distinfer.communication import _agree, _backend, _guard


def test_digest_is_the_same_in_every_process():
    """Unlike ``hash()`` of a str, a digest does not change with the interpreter's hash seed."""
    code = "from distinfer.communication._guard import digest; print(digest('exchange', 'MatMul', (8, 16), '<f4'))"
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2)}
    assert seen == {f"{_guard.digest('exchange', 'MatMul', (8, 16), '<f4')}\n"}


@settings(max_examples=200, deadline=None)
@given(fps=st.lists(st.integers(0, 2 ** 62 - 1), min_size=1, max_size=9), op=st.sampled_from(["sum", "max", "min"]),
       dtype=st.sampled_from([np.float32, np.float64, np.int32, np.int64]), same=st.booleans())
def test_reduced_stamps_tell_every_rank_whether_all_fingerprints_were_equal(fps, op, dtype, same):
    if same:
        fps = [fps[0]] * len(fps)
    stamps = np.stack([_guard.stamp(fp, op, dtype) for fp in fps])
    reduced = {"sum": stamps.sum(0), "max": stamps.max(0), "min": stamps.min(0)}[op].astype(dtype)
    assert _guard.stamps_agree(reduced, op, len(fps)) == (len(set(fps)) == 1)


def test_garbage_in_a_stamp_is_a_disagreement():
    reduced = 4 * _guard.stamp(12345, "sum", np.float32)
    reduced[3] = np.nan
    assert not _guard.stamps_agree(reduced, "sum", 4)


def test_consecutive_messages_of_a_pair_have_different_tags():
    base = _guard.digest("exchange", "redistribute", ((4, 4), "<f4"))
    tags = [_guard._tag(base, n) for n in range(1, 10000)]
    assert len(set(tags)) == len(tags) and all(0 <= t <= 0x7FFFFFFF for t in tags)


def test_op_scope_names_the_innermost_op():
    with _guard.op_scope("MatMul", "MatMul(layer1.weight)"):
        with _guard.op_scope("Cast"):
            assert _guard.current_op() == ("Cast", "Cast")
        assert _guard.current_op() == ("MatMul", "MatMul(layer1.weight)")
    assert _guard.current_op()[0] is None


@pytest.mark.parametrize("raw,want", [("", 600.0), ("30", 30.0), ("0.5", 0.5), ("0", 0.0)])
def test_watchdog_limit_from_the_environment(monkeypatch, raw, want):
    monkeypatch.setenv(_guard.TIMEOUT_ENV, raw)
    assert _guard.timeout_from_env() == want


@pytest.mark.parametrize("raw", ["ten", "-1"])
def test_bad_watchdog_limit_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv(_guard.TIMEOUT_ENV, raw)
    with pytest.raises(ValueError, match=f"DISTINFER_COMM_TIMEOUT={raw!r}"):
        _guard.timeout_from_env()


def test_set_context_comm_timeout_checks_and_sets_the_limit(monkeypatch):
    monkeypatch.setattr(_backend, "_TIMEOUT", None)
    ms.set_context(comm_timeout=12.5)
    try:
        assert ms.get_context("comm_timeout") == 12.5 and _backend._TIMEOUT == 12.5
        with pytest.raises(TypeError, match="comm_timeout"):
            ms.set_context(comm_timeout="10")
        with pytest.raises(ValueError, match="comm_timeout"):
            ms.set_context(comm_timeout=-1)
    finally:
        ms.set_context(comm_timeout=None)
    assert _backend._TIMEOUT is None


def test_agreement_in_a_world_of_one_is_a_no_op():
    _backend.agree("anything", {"files": ["a", "b"]})


def test_disagreement_names_the_ranks_and_where_the_values_differ():
    views = [{"files": ["a", "b"], "strategy": "s"}, {"files": ["a", "b"], "strategy": "t"},
             {"files": ["x", "y"], "strategy": "s"}]
    texts = [_agree.canonical(v) for v in views]
    keys = [_guard.digest(_agree.canonical(sorted(v["files"]))) for v in views]  # rank 2 loads other files
    digests = np.array([[k, _guard.digest(t)] for k, t in zip(keys, texts)])
    assert not _agree.consistent(digests)
    msg = _agree.disagreement("load", digests, texts)
    assert 'rank 0: {"files": ["a", "b"], "strategy": "s"}' in msg
    assert 'rank 1: {"files": ["a", "b"], "strategy": "t"}' in msg
    assert 'first difference: strategy is "s" on rank 0 but "t" on rank 1' in msg
    assert "rank 2" not in msg  # other files: not compared with ranks 0 and 1
