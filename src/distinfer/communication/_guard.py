"""Keeps a job of many ranks from hanging or going silently wrong.

Every communication call of a rank is a :class:`Step`: what it is for (the op being run, the
plan, the shapes and dtype), with a fingerprint of those facts that every rank computes alike.

* Point-to-point messages carry their step's fingerprint, the per-pair message number, and the
  message's shapes in their MPI tag, so a message only matches the receive of a rank doing the
  same thing: a different plan, shape or dtype is never copied into a wrong-sized buffer.
* A reduction carries the fingerprint as a stamp at the head of its data: from the reduced stamp
  every member tells whether all stamps were equal (one reduction both checks and moves data).
  Other collectives first reduce the fingerprint alone (MAX of it and of its negation). Ranks
  that disagree find out at that step, and every view is printed.
* Waiting never blocks inside MPI: requests are tested, first in a short spin, then with growing
  sleeps, and while a step waits the guard reads control messages (another rank's status, a
  rank that left), asks the ranks it waits for what they are doing, finds two ranks waiting for
  each other in different steps, and raises when the watchdog limit is reached.
* On the way out (:meth:`Guard.finish`, run at exit) a rank tells every other rank how far it
  got, and waits for all of them before MPI is finalised: a rank that returns or calls
  ``sys.exit`` while others still need it ends the job with its message instead of a hang.

A failed step raises :class:`~distinfer.errors.CommError` (or ``DivergenceError``) with
outstanding requests cancelled or their buffers kept alive, marks the rank failed, and the
uncaught-exception hook aborts the job; a caught one aborts at the next communication call.
"""
from __future__ import annotations

import atexit
import collections
import functools
import hashlib
import json
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import CommError, DivergenceError
from ._agree import name_ranks

log = logging.getLogger(__name__)

TIMEOUT_ENV = "DISTINFER_COMM_TIMEOUT"
DEFAULT_TIMEOUT = 600.0  # seconds a step may wait before the watchdog ends the job
_SPIN = 0.02  # seconds of testing before sleeping: about as long as a collective takes on a busy machine
_OVERSUBSCRIBED = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", "1")) > (os.cpu_count() or 1)
_PATIENCE = 1.0  # seconds a step waits before asking the ranks it waits for what they are doing
_ANSWER_WAIT = 3.0  # seconds to collect answers before reporting a timeout or a divergence
_QUERY, _STATUS, _LEFT = 1, 2, 3  # control message tags
_TEXT = 300  # longest description in a control message (which stay below Open MPI's eager limits)


STAMP = 32  # elements of the fingerprint's stamp at the head of reduced data


def stamp(fingerprint: int, op: str, dtype: Any) -> np.ndarray:
    """The fingerprint as 16 four-bit digits, then their squares (``op="sum"``) or negations
    (max, min): reduced over ``n`` ranks, every rank can tell whether all stamps were equal.

    >>> s = stamp(0x2A, "sum", np.float32)
    >>> s[:3].tolist(), s[16:19].tolist()
    ([10.0, 2.0, 0.0], [100.0, 4.0, 0.0])
    >>> bool(stamps_agree(2 * s, "sum", 2)), bool(stamps_agree(s + stamp(0x2B, "sum", np.float32), "sum", 2))
    (True, False)
    """
    digits = np.array([(fingerprint >> shift) & 0xF for shift in range(0, 64, 4)], np.int64)
    return np.concatenate([digits, digits * digits if op == "sum" else -digits]).astype(dtype)


def stamps_agree(reduced: np.ndarray, op: str, n: int) -> bool:
    """Whether ``n`` reduced stamps were all equal: a sum of digits squared equals ``n`` times the
    sum of their squares only then (Cauchy-Schwarz); a max (min) of digits equals minus the max
    (min) of their negations only then. Every rank gets the same answer."""
    with np.errstate(invalid="ignore"):
        first, second = reduced[:16].astype(np.int64), reduced[16:STAMP].astype(np.int64)
    if op == "sum":
        return bool(np.all(first * first == n * second))
    return bool(np.all(first == -second))


@functools.lru_cache(maxsize=8192)
def digest(*parts: Any) -> int:
    """A 62-bit fingerprint of ``parts`` that every rank and host computes alike (``hash()`` of a
    str is salted per process). Steps repeat (every predict runs the same plans), so it is cached.

    >>> digest("allreduce", (8, 16), "<f4") == digest("allreduce", (8, 16), "<f4")
    True
    >>> digest("allreduce", (8, 16)) == digest("allreduce", (4, 16))
    False
    """
    raw = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(raw, "little") >> 2


# ------------------------------------------------------------------------------------ op scope
_OPS: list[tuple[str, str]] = []  # (op name, label) of the ops being run, innermost last


class op_scope:
    """Name the op whose communication follows (``MatMul``, labelled ``MatMul(layer1.weight)``):
    the name enters every step's fingerprint, the label its description.

    >>> with op_scope("MatMul", "MatMul(layer1.weight)"):
    ...     current_op()
    ('MatMul', 'MatMul(layer1.weight)')
    >>> current_op()
    (None, 'no op (a network output or a gradient)')
    """

    __slots__ = ("entry",)

    def __init__(self, name: str, label: str | None = None) -> None:
        self.entry = (name, label or name)

    def __enter__(self) -> None:
        _OPS.append(self.entry)

    def __exit__(self, *exc: Any) -> None:
        _OPS.pop()


def current_op() -> tuple[str | None, str]:
    return _OPS[-1] if _OPS else (None, "no op (a network output or a gradient)")


# ----------------------------------------------------------------------------------------- steps
@dataclass
class Step:
    """One communication call of this rank: what it is for, and whom it waits for.

    A collective is number ``index`` on ``group`` (world ranks); an exchange sends message number
    ``sends[d]`` to each rank ``d`` and receives number ``recvs[s]`` from each ``s``.
    """

    kind: str
    what: str
    op: str
    fingerprint: int
    group: tuple[int, ...] = ()
    index: int = 0
    sends: dict[int, int] = field(default_factory=dict)
    recvs: dict[int, int] = field(default_factory=dict)
    recv_tags: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def describe(self) -> str:
        where = f" #{self.index} on ranks {list(self.group)}" if self.group else ""
        return f"{self.kind}{where} in {self.op} (fingerprint {self.fingerprint & 0xFFFFFFFF:08x}): {self.what}"

    def to_json(self) -> dict:
        return {"describe": self.describe()[:_TEXT], "fingerprint": self.fingerprint, "group": list(self.group),
                "index": self.index,
                "sends": {str(k): v for k, v in self.sends.items()},
                "recvs": {str(k): v for k, v in self.recvs.items()}}


def _tag(base: int, number: int) -> int:
    """The MPI tag of message ``number`` of a pair, for a step and message shapes with digest ``base``:
    consecutive numbers always give different tags (an odd multiplier is a bijection mod 2**31)."""
    return (base + number * 0x9E3779B1) & 0x7FFFFFFF


def _group_key(group: Sequence[int]) -> str:
    return ",".join(map(str, group))


def timeout_from_env() -> float:
    """The watchdog limit from ``DISTINFER_COMM_TIMEOUT`` (seconds; 0 waits forever), else 600 s."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds (0 waits forever)") from None
    if value < 0:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds >= 0 (0 waits forever)")
    return value


# ----------------------------------------------------------------------------------------- guard
class Guard:
    """The steps, waits, control messages and exit protocol of one MPI rank (see module doc)."""

    def __init__(self, MPI: Any, comm: Any, limit: float | None = None) -> None:
        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.p2p = comm.Dup()  # exchanges: tags are fingerprints, so no other traffic may share it
        self.ctrl = comm.Dup()  # control messages (queries, status answers, goodbyes)
        self.limit = timeout_from_env() if limit is None else limit
        self.done: collections.Counter = collections.Counter()  # collectives passed, per group
        self.sent = [0] * self.size  # messages posted to each rank
        self.received = [0] * self.size  # receives posted from each rank
        self.sent_log = [collections.deque(maxlen=4) for _ in range(self.size)]  # (number, tag, step)
        self.left: dict[int, dict] = {}  # rank -> its goodbye
        self.answers: dict[int, dict] = {}  # rank -> its latest status answer
        self.queries = 0
        self.step: Step | None = None  # the step being waited for
        self.last: Step | None = None  # the last step passed
        self.failed: str | None = None
        self.outbox: list = []  # (request, buffer) of control messages in flight
        self.kept: list = []  # buffers of requests abandoned after a failure (MPI may still write them)

    # ------------------------------------------------------------------------------- steps
    def begin(self, kind: str, what: str, *facts: Any, group: Sequence[int] = ()) -> Step:
        """A new step; ``facts`` (shapes, dtypes, reduce op...) enter its fingerprint."""
        if self.failed is not None:
            self.abort(f"rank {self.rank} communicates again after a failed step:\n{self.failed}")
        name, label = current_op()
        step = Step(kind, what, label, digest(kind, what, name, tuple(group), *facts), tuple(group))
        if group:
            step.index = self.done[step.group] + 1
        return step

    def message_tags(self, step: Step, sends: dict[int, list], recvs: dict[int, list]) -> tuple[dict, dict]:
        """Number the step's messages per pair and tag each with the step, its number and its
        ``(shape, dtype)`` list, as the sender and the receiver both compute it."""
        send_tags = {}
        for dst, specs in sends.items():
            self.sent[dst] += 1
            step.sends[dst] = self.sent[dst]
            send_tags[dst] = _tag(digest(step.fingerprint, specs), self.sent[dst])
            self.sent_log[dst].append((self.sent[dst], send_tags[dst], step))
        for src, specs in recvs.items():
            self.received[src] += 1
            step.recvs[src] = self.received[src]
            step.recv_tags[src] = _tag(digest(step.fingerprint, specs), self.received[src])
        return send_tags, step.recv_tags

    def arrive(self, comm: Any, step: Step) -> None:
        """Every member of ``step.group`` (``comm``) reaches this collective with the same
        fingerprint, or every member raises :class:`DivergenceError` naming each view."""
        self._check_fingerprints(comm, step)
        self.passed(step)

    def reduce(self, comm: Any, step: Step, data: np.ndarray, op: str, dtype: np.dtype,
               scatter: bool = False) -> np.ndarray:
        """``data`` summed (maxed, minned) over the group in ``dtype``, as a flat array: all of it,
        or with ``scatter`` this member's piece of ``data``'s first axis (cut evenly). The
        fingerprint's stamp rides at the head of every member's piece, so one reduction both
        moves the data and shows every member whether all agreed (dtypes that cannot carry it
        exactly check the fingerprint first, with one more reduction)."""
        MPI = self.MPI
        pieces = comm.Get_size() if scatter else 1
        head = STAMP if dtype.kind in "fiu" and dtype.itemsize >= 4 else 0
        if not head:
            self._check_fingerprints(comm, step)
        buf = np.empty((pieces, head + data.size // pieces), dtype)
        if head:
            buf[:, :head] = stamp(step.fingerprint, op, dtype)
        # Splitting the contiguous last axis of the body is always a view: one copy, with the cast.
        buf[:, head:].reshape((pieces, data.shape[0] // pieces) + data.shape[1:])[...] = \
            data.reshape((pieces, data.shape[0] // pieces) + data.shape[1:])
        mpi_op = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]
        if scatter:
            out = np.empty(buf.shape[1], dtype)
            request = comm.Ireduce_scatter_block(buf, out, op=mpi_op)
        else:
            out = buf.reshape(-1)
            request = comm.Iallreduce(MPI.IN_PLACE, out, op=mpi_op)
        self.wait([request], step, (buf, out))
        if head and not stamps_agree(out[:head], op, comm.Get_size()):
            self._diverged(comm, step)
        self.passed(step)
        return out[head:]

    def _check_fingerprints(self, comm: Any, step: Step) -> None:
        mine = np.array([step.fingerprint, -step.fingerprint], np.int64)
        seen = np.empty_like(mine)
        self.wait([comm.Iallreduce(mine, seen, op=self.MPI.MAX)], step, (mine, seen))
        if seen[0] != step.fingerprint or -seen[1] != step.fingerprint:
            self._diverged(comm, step)

    def _diverged(self, comm: Any, step: Step) -> None:
        """Raise :class:`DivergenceError` with every member's view of ``step``. Every member saw the
        same reduced fingerprints, so all gather their views here (unless data of another size
        garbled the result differently: then after a few seconds with the views that came)."""
        mine = np.zeros(1024, np.uint8)
        text = step.describe().encode()[:1024]
        mine[:len(text)] = np.frombuffer(text, np.uint8)
        views = np.zeros((comm.Get_size(), 1024), np.uint8)
        request = comm.Iallgather(mine, views)
        deadline = time.monotonic() + _ANSWER_WAIT
        while not request.Test() and time.monotonic() < deadline:
            time.sleep(0.001)
        if request.Get_status():
            texts = [bytes(v).rstrip(b"\0").decode(errors="replace") for v in views]
        else:
            self.kept.append((request, mine, views))
            texts = [step.describe() if m == self.rank else "(no answer)" for m in step.group]
        by_view: dict[str, list[int]] = {}
        for member, view in zip(step.group, texts):
            by_view.setdefault(view, []).append(member)
        lines = "\n".join(f"  {name_ranks(members)}: {view}" for view, members in by_view.items())
        self.fail(DivergenceError(f"ranks disagree at {step.kind} #{step.index} on ranks {list(step.group)}:\n{lines}"))

    def passed(self, step: Step) -> None:
        """``step`` completed on this rank."""
        if step.group:
            self.done[step.group] += 1
        self.last = step

    def _last(self) -> str:
        return self.last.describe()[:_TEXT] if self.last is not None else "no communication yet"

    # -------------------------------------------------------------------------------- waiting
    def wait(self, requests: list, step: Step, buffers: Any = (), receives: dict | None = None) -> None:
        """Until every request completes (``receives``: the receive request from each source,
        among ``requests``); on any failure (MPI error, a rank that left, ranks that diverged,
        the watchdog, an interrupt) the requests are cancelled and ``buffers`` kept alive before
        the error propagates."""
        MPI = self.MPI
        try:
            if MPI.Request.Testall(requests):
                return
            deadline = time.monotonic() + _SPIN
            while time.monotonic() < deadline:
                if _OVERSUBSCRIBED:  # let the ranks sharing this core run (as Open MPI's own wait does)
                    os.sched_yield()
                if MPI.Request.Testall(requests):
                    return
            self.step = step
            try:
                self._wait_slowly(requests, step, receives or {})
            finally:
                self.step = None
        except MPI.Exception as exc:
            self._abandon(requests, buffers)
            self._failed_in_mpi(step, exc)
        except BaseException:
            self._abandon(requests, buffers)
            raise

    def _wait_slowly(self, requests: list, step: Step, receives: dict) -> None:
        """Sleep between tests (up to 2 ms for a second, 20 ms for a minute, then 0.1 s), and
        meanwhile: read control messages, look for a rank that left or that sent something else,
        ask the ranks waited for what they are doing (after 1 s, then less and less often), and
        end the step at the watchdog limit."""
        t0 = step.started
        nap, next_query, next_probe, warned = 5e-5, t0 + _PATIENCE, t0, False
        first_query = self.queries + 1
        while not self.MPI.Request.Testall(requests):
            now = time.monotonic()
            self.poll()
            self._check_left(step)
            if receives and now >= next_probe:
                self._check_tags(step, receives)
                next_probe = now + 0.05
            if now >= next_query:
                self.query(self._peers(step))
                next_query = now + min(2 * (now - t0), 30.0)
            self._check_deadlock(step, first_query)
            waited = now - t0
            if self.limit and waited > self.limit:
                self._timeout(step, first_query)
            if waited > 60 and not warned:
                warned = True
                log.warning("waiting %.0f s so far in %s (the watchdog ends the job at %s s)", waited,
                            step.describe(), self.limit or "no limit")
            time.sleep(nap)
            nap = min(2 * nap, 0.002 if waited < 1 else 0.02 if waited < 60 else 0.1)

    def _failed_in_mpi(self, step: Step, exc: Exception) -> None:
        """An MPI error (a message of another size, a lost peer): ask the ranks of the step what
        they were doing, so that ranks that diverged are named with their views."""
        peers = [p for p in self._peers(step) if p not in self.left]
        self.query(peers)
        views = [f"  rank {p}: {a['step']['describe'] if a.get('step') else 'computing; last: ' + a['last']}"
                 for p, a in sorted(self._collect(peers, self.queries).items())]
        self.fail(CommError(f"rank {self.rank}: {step.describe()} failed in MPI: {exc}"
                            + ("\nthe other ranks of the step:\n" + "\n".join(views) if views else "")))

    def _abandon(self, requests: list, buffers: Any) -> None:
        """Cancel what can be cancelled; keep every buffer alive, as MPI may still use it."""
        self.kept.append((requests, buffers))
        for req in requests:
            try:
                if not req.Get_status():
                    req.Cancel()
            except Exception:  # noqa: BLE001 - collective requests cannot be cancelled
                pass
        deadline = time.monotonic() + 0.5
        try:
            while time.monotonic() < deadline and not self.MPI.Request.Testall(requests):
                time.sleep(0.001)
        except Exception:  # noqa: BLE001 - the buffers stay kept whatever MPI says
            pass

    def fail(self, error: Exception) -> None:
        """Raise ``error``, remembering it: this rank aborts at its next communication or exit."""
        self.failed = str(error)
        raise error

    # ------------------------------------------------------------------------ control messages
    def _send(self, dst: int, tag: int, body: dict) -> None:
        buf = bytearray(json.dumps(body).encode())
        self.outbox.append((self.ctrl.Isend([buf, self.MPI.BYTE], dest=dst, tag=tag), buf))

    def poll(self) -> None:
        """Read every control message that has arrived; answer status queries."""
        MPI = self.MPI
        status = MPI.Status()
        while True:
            msg = self.ctrl.Improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)
            if msg is None:
                break
            buf = bytearray(status.Get_count(MPI.BYTE))
            msg.Recv([buf, MPI.BYTE])
            src, tag, body = status.Get_source(), status.Get_tag(), json.loads(buf)
            if tag == _QUERY:
                self._send(src, _STATUS, dict(self._counts(src), q=body["q"], step=self.step and self.step.to_json()))
            elif tag == _STATUS:
                self.answers[src] = body
            elif tag == _LEFT:
                self.left[src] = body
        self.outbox = [(req, buf) for req, buf in self.outbox if not req.Test()]

    def _counts(self, peer: int) -> dict:
        """How far this rank got with ``peer``: collectives passed on groups holding it, messages."""
        return {"done": {_group_key(g): n for g, n in self.done.items() if peer in g},
                "sent": self.sent[peer], "received": self.received[peer],
                "log": [(n, tag, st.describe()[:_TEXT]) for n, tag, st in self.sent_log[peer]],
                "last": self._last()}

    def query(self, peers: Sequence[int]) -> None:
        """Ask ``peers`` what they are doing (answers arrive through :meth:`poll`)."""
        self.queries += 1
        for p in peers:
            if p not in self.left:
                self._send(p, _QUERY, {"q": self.queries})

    def _fresh(self, peer: int, first_query: int) -> dict | None:
        answer = self.answers.get(peer)
        return answer if answer is not None and answer["q"] >= first_query else None

    # ------------------------------------------------------------------------------ diagnosis
    def _peers(self, step: Step) -> list[int]:
        if step.group:
            return [p for p in step.group if p != self.rank]
        return sorted(set(step.sends) | set(step.recvs))

    def _needs(self, step: Step, peer: int, counts: dict) -> bool:
        """Whether ``step`` still needs ``peer``, which reports ``counts`` (see :meth:`_counts`)."""
        if step.group:
            if peer not in step.group or counts["done"].get(_group_key(step.group), 0) >= step.index:
                return False
            other = counts.get("step")
            return not (other and tuple(other["group"]) == step.group and other["index"] == step.index)
        return (step.recvs.get(peer, 0) > counts["sent"]) or (step.sends.get(peer, 0) > counts["received"])

    def _waits_for_me(self, peer: int, other: dict) -> bool:
        """Whether ``peer``'s step ``other`` (from its status answer) needs something from this rank."""
        group = tuple(other["group"])
        if group:
            mine = self.step
            if mine is not None and mine.group == group and mine.index == other["index"]:
                return False  # both here: the collective waits for someone else
            return self.rank in group and self.done[group] < other["index"]
        me = str(self.rank)
        return other["recvs"].get(me, 0) > self.sent[peer] or other["sends"].get(me, 0) > self.received[peer]

    def _check_left(self, step: Step) -> None:
        for peer, bye in self.left.items():
            if self._needs(step, peer, bye):
                self.fail(CommError(
                    f"rank {peer} left the script ({bye['how']}) after {bye['last']}; rank {self.rank} is "
                    f"waiting for it in {step.describe()}"))

    def _check_tags(self, step: Step, receives: dict) -> None:
        """A pending receive whose source's next message has another tag: that rank sent something
        else (a different plan, shape or dtype) where this rank expects this step's message. (All
        earlier messages from that source were received in earlier steps, and a message with the
        expected tag would have matched the posted receive.)"""
        status = self.MPI.Status()
        for src, req in receives.items():
            if req.Get_status() or not self.p2p.Iprobe(src, self.MPI.ANY_TAG, status):
                continue
            tag = status.Get_tag()
            if tag == step.recv_tags[src] or req.Get_status():
                continue
            self.query([src])
            answer = self._collect([src], self.queries).get(src)
            theirs = next((d for n, t, d in answer["log"] if t == tag), None) if answer else None
            sent = f"sent {theirs}" if theirs else f"sent a message with another fingerprint (tag {tag:#x})"
            self.fail(DivergenceError(
                f"rank {self.rank} expected message #{step.recvs[src]} from rank {src} for {step.describe()}; "
                f"rank {src} {sent}"))

    def _check_deadlock(self, step: Step, first_query: int) -> None:
        """Two ranks in the same collective with different fingerprints (sizes that differ can
        keep it from completing), or each blocked in a different step that needs the other:
        they diverged."""
        for peer in self._peers(step):
            answer = self._fresh(peer, first_query)
            other = answer and answer.get("step")
            if other and step.group and (tuple(other["group"]), other["index"]) == (step.group, step.index) \
                    and other["fingerprint"] != step.fingerprint:
                self.fail(DivergenceError(
                    f"ranks disagree at {step.kind} #{step.index} on ranks {list(step.group)}:\n"
                    f"  rank {self.rank}: {step.describe()}\n  rank {peer}: {other['describe']}"))
            if other and self._needs(step, peer, answer) and self._waits_for_me(peer, other):
                self.fail(DivergenceError(
                    f"ranks {self.rank} and {peer} wait for each other in different steps:\n"
                    f"  rank {self.rank}: {step.describe()}\n  rank {peer}: {other['describe']}"))

    def _collect(self, peers: Sequence[int], query: int) -> dict[int, dict]:
        """Answers to query number ``query`` from ``peers``, waiting up to a few seconds."""
        deadline = time.monotonic() + _ANSWER_WAIT
        while True:
            self.poll()
            got = {p: a for p in peers if (a := self._fresh(p, query)) is not None}
            if len(got) == len([p for p in peers if p not in self.left]) or time.monotonic() > deadline:
                return got
            time.sleep(0.005)

    def _timeout(self, step: Step, first_query: int) -> None:
        peers = [p for p in self._peers(step) if p not in self.left]
        self.query(peers)
        answers = self._collect(peers, self.queries)
        lines = []
        for p in peers:
            a = answers.get(p)
            if a is None:
                lines.append(f"  rank {p}: no answer (busy outside any communication, or stuck)")
            elif not self._needs(step, p, a):
                lines.append(f"  rank {p}: arrived")
            else:
                doing = a["step"]["describe"] if a.get("step") else f"computing; its last step: {a['last']}"
                lines.append(f"  rank {p}: not arrived; {doing}")
        self.fail(CommError(
            f"rank {self.rank} waited {time.monotonic() - step.started:.0f} s (the watchdog limit, "
            f"{TIMEOUT_ENV} or set_context(comm_timeout=...)) in {step.describe()}:\n" + "\n".join(lines)))

    # ------------------------------------------------------------------------- leaving the job
    def finish(self, how: str = "returned from the script or called sys.exit") -> None:
        """Tell every rank how far this one got, wait for all of them to finish too, and check that
        no message was sent that its receiver never took. Any failure aborts the job."""
        if self.failed is not None:
            self.abort(f"rank {self.rank} is exiting after a failed step:\n{self.failed}")
        for p in range(self.size):
            if p != self.rank:
                self._send(p, _LEFT, dict(self._counts(p), how=how))
        step = Step("exit", "waiting for every rank to finish the script", "no op", 0)
        start = time.monotonic()
        nap = 5e-5
        try:
            self.step = step
            while len(self.left) < self.size - 1:
                self.poll()
                waited = time.monotonic() - start
                if self.limit and waited > self.limit:
                    missing = [p for p in range(self.size) if p != self.rank and p not in self.left]
                    self.abort(f"rank {self.rank} finished the script and waited {waited:.0f} s (the watchdog "
                               f"limit) for {name_ranks(missing)} to finish")
                time.sleep(nap)
                nap = min(2 * nap, 0.002 if waited < 1 else 0.02 if waited < 60 else 0.1)
        finally:
            self.step = None
        for p, bye in sorted(self.left.items()):
            if bye["sent"] != self.received[p] or bye["received"] != self.sent[p]:
                self.abort(self._unreceived(p, bye))
        deadline = time.monotonic() + 5.0
        while self.outbox and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.001)

    def _unreceived(self, peer: int, bye: dict) -> str:
        if bye["sent"] > self.received[peer]:
            lost = [d for n, _, d in bye["log"] if n > self.received[peer]]
            return (f"rank {peer} sent {bye['sent']} messages to rank {self.rank}, which took only "
                    f"{self.received[peer]}; unreceived: {lost or 'older than the log'} (the ranks diverged)")
        lost = [st.describe() for n, _, st in self.sent_log[peer] if n > bye["received"]]
        return (f"rank {self.rank} sent {self.sent[peer]} messages to rank {peer}, which took only "
                f"{bye['received']}; unreceived: {lost or 'older than the log'} (the ranks diverged)")

    def abort(self, message: str) -> None:
        """Print ``message`` as this rank's and end the whole job."""
        _say(self.rank, message)
        self.comm.Abort(1)


def _say(rank: int, message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"[distinfer rank {rank}] {message}\n")
    sys.stderr.flush()


def install(guard: Guard) -> None:
    """End the job whichever way this rank leaves: an uncaught exception (any thread; also
    ``KeyboardInterrupt``) prints this rank's traceback and aborts; a normal end (return,
    ``sys.exit`` with any code) runs :meth:`Guard.finish` before MPI is finalised."""
    pid = os.getpid()

    def hook(exc_type, exc, tb):
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        guard.abort(f"uncaught exception, aborting all ranks:\n{text}")

    def thread_hook(args):
        name = args.thread.name if args.thread is not None else "a thread"
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        guard.abort(f"uncaught exception in thread {name!r}, aborting all ranks:\n{text}")

    def at_exit():
        if os.getpid() == pid:  # not in a forked child
            sys.stdout.flush()
            sys.stderr.flush()
            guard.finish()

    sys.excepthook = hook
    threading.excepthook = thread_hook
    atexit.register(at_exit)  # runs before mpi4py finalises MPI (its hook is registered with Py_AtExit)
