"""Do the ranks agree on their inputs? Values compared by digest; the message for those that differ.

A collective load or transform divides one job among the ranks, so every rank must have been
given the same files and strategies: ``Backend.agree`` compares a digest of each rank's
canonical value, and only when they differ gathers the values to say how.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

_SHOWN = 400  # characters of one view shown in a message


def canonical(value: Any) -> str:
    """``value`` as JSON with sorted keys (tuples as lists, numpy values as Python ones), so equal
    values give equal text on every rank.

    >>> canonical({"b": (1, 2), "a": np.int64(3)})
    '{"a": 3, "b": [1, 2]}'
    """
    return json.dumps(value, sort_keys=True, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


def consistent(digests: np.ndarray) -> bool:
    """``digests[r] = (key, value)`` digests of rank ``r``: one value per key?

    >>> consistent(np.array([[1, 7], [2, 8], [1, 7]])), consistent(np.array([[1, 7], [1, 8]]))
    (True, False)
    """
    values: dict[int, int] = {}
    return all(values.setdefault(int(k), int(v)) == int(v) for k, v in digests)


def disagreement(what: str, digests: np.ndarray, texts: Sequence[str]) -> str:
    """The message naming, for each key whose ranks disagree, which ranks hold which value and
    where the values first differ.

    >>> d = np.array([[0, 1], [0, 2], [0, 1]])
    >>> print(disagreement("load", d, ['{"files": ["a", "b"]}', '{"files": ["b", "a"]}', '{"files": ["a", "b"]}']))
    load: the ranks were given different inputs (they must be the same on every rank):
      ranks 0, 2: {"files": ["a", "b"]}
      rank 1: {"files": ["b", "a"]}
      first difference: files[0] is "a" on rank 0 but "b" on rank 1
    """
    lines = [f"{what}: the ranks were given different inputs (they must be the same on every rank):"]
    keys: dict[int, list[int]] = {}
    for r, (k, _) in enumerate(digests):
        keys.setdefault(int(k), []).append(r)
    for ranks in keys.values():
        views: dict[int, list[int]] = {}
        for r in ranks:
            views.setdefault(int(digests[r][1]), []).append(r)
        if len(views) < 2:
            continue
        firsts = [members[0] for members in views.values()]
        for members in views.values():
            text = texts[members[0]]
            shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
            lines.append(f"  {name_ranks(members)}: {shown}")
        where = _first_difference(json.loads(texts[firsts[0]]), json.loads(texts[firsts[1]]))
        if where:
            path, a, b = where
            lines.append(f"  first difference: {path or 'the value'} is {json.dumps(a)[:_SHOWN]} on rank "
                         f"{firsts[0]} but {json.dumps(b)[:_SHOWN]} on rank {firsts[1]}")
    return "\n".join(lines)


def _first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
        if len(a) != len(b):
            return f"{path} length", len(a), len(b)
        return None
    return (path, a, b) if a != b else None


def name_ranks(ranks: Sequence[int]) -> str:
    """``rank 2`` or ``ranks 0, 1, 3``.

    >>> name_ranks([3, 0, 1]), name_ranks([2])
    ('ranks 0, 1, 3', 'rank 2')
    """
    ranks = sorted(ranks)
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))
