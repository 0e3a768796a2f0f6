"""``mindspore.common.api``: the graph-compilation markers, which run the same eager SPMD code on CPUs.

MindSpore compiles a function decorated with :func:`jit` (or a Cell's ``construct``) into a graph;
distinfer runs every op eagerly on every rank, so a compiled and an uncompiled call are the same
computation. The markers keep MindSpore's signatures and argument checks.

One thing a compiled graph does in MindSpore's (semi-)auto parallel mode is kept: a call of a
:func:`jit` function from outside any graph runs as a parallel graph, its Tensor inputs being
each rank's share of the global inputs under the dataset strategy and its Tensor outputs coming
back as each rank's share (as ``Model.predict`` treats them), and its first call writes the
strategy file if ``strategy_ckpt_config["save_file"]`` asks for one. Calls made inside a graph
(a nested jit function, a network run by ``Model`` or ``AutoParallel``) are plain calls.

>>> import numpy as np, distinfer as ms
>>> @ms.jit(jit_level="O1")
... def double(x):
...     return x * 2
>>> double(ms.Tensor(np.array([1.0, 2.0], np.float32))).asnumpy().tolist()
[2.0, 4.0]
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, Optional

__all__ = ["jit", "jit_class", "JitConfig", "lazy_inline", "no_inline", "graph_scope", "in_graph", "run_as_graph"]


class _Graph:
    depth = 0  # graphs running (nested calls inside one are plain calls)
    # Runs a jit function called from outside any graph: (function, args, kwargs, first call?) -> outputs.
    # Set by distinfer.train.auto_parallel, which knows the dataset strategy (a floor above this one).
    runner: Optional[Callable[..., Any]] = None


@contextlib.contextmanager
def graph_scope() -> Iterator[None]:
    """Mark the block as running inside a graph (nested :func:`jit` calls are then plain calls).

    >>> from distinfer.common.api import graph_scope, in_graph
    >>> with graph_scope():
    ...     in_graph()
    True
    """
    _Graph.depth += 1
    try:
        yield
    finally:
        _Graph.depth -= 1


def in_graph() -> bool:
    """True inside :func:`graph_scope`."""
    return _Graph.depth > 0


def run_as_graph(fn: Callable, args: tuple, kwargs: dict, first: bool, layout_only: bool = False) -> Any:
    """Run ``fn`` as a parallel graph called from outside any graph (see the module doc)."""
    if _Graph.runner is None:
        return None if layout_only else fn(*args, **kwargs)
    with graph_scope():
        return _Graph.runner(fn, args, kwargs, first, layout_only=layout_only)

_CAPTURE_MODES = ("ast", "bytecode", "trace")
_JIT_LEVELS = ("O0", "O1")  # the levels the jit decorator takes (MindSpore 2.x)
_CONFIG_LEVELS = ("O0", "O1", "O2")  # the levels JitConfig and set_context(jit_config=...) take


def _one_of(api: str, name: str, value: Any, allowed: tuple) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"For '{api}', the '{name}' must be str and must be in '{list(allowed)}', but got "
                         f"{value!r}.")


def jit(function: Optional[Callable] = None, *, capture_mode: str = "ast", jit_level: str = "O0", dynamic: int = 0,
        fullgraph: bool = False, backend: str = "", **options: Any) -> Any:
    """``mindspore.jit``: a decorator (bare or with arguments) returning the function unchanged in behaviour.

    MindSpore 2.3's keywords (``mode``, ``input_signature``, ``hash_args``, ``jit_config``,
    ``compile_once``) are accepted too.

    >>> import distinfer as ms
    >>> ms.jit(lambda x: x + 1)(1)
    2
    >>> ms.jit(capture_mode="graph")
    Traceback (most recent call last):
    ...
    ValueError: For 'jit', the 'capture_mode' must be str and must be in '['ast', 'bytecode', 'trace']', but got 'graph'.
    """
    _one_of("jit", "capture_mode", capture_mode, _CAPTURE_MODES)
    _one_of("jit", "jit_level", jit_level, _JIT_LEVELS)

    def wrap(fn: Callable) -> Callable:
        if not callable(fn):
            return fn
        calls = [0]

        @functools.wraps(fn)
        def compiled(*args: Any, **kwargs: Any) -> Any:
            if in_graph():
                return fn(*args, **kwargs)
            calls[0] += 1
            return run_as_graph(fn, args, kwargs, calls[0] == 1)

        compiled.jit_level = jit_level  # type: ignore[attr-defined]
        return compiled

    return wrap if function is None else wrap(function)


def jit_class(cls: type) -> type:
    """``mindspore.jit_class``: marks a class usable inside compiled code; returned unchanged.

    >>> import distinfer as ms
    >>> @ms.jit_class
    ... class Scale:
    ...     k = 2
    >>> Scale.k
    2
    """
    if not isinstance(cls, type):
        raise TypeError(f"Decorator jit_class can only be used for class type, but got {cls!r:.80}.")
    return cls


class JitConfig:
    """``mindspore.JitConfig``: compilation options for ``Cell.set_jit_config`` (recorded, no effect on CPUs).

    >>> import distinfer as ms
    >>> ms.JitConfig(jit_level="O1").jit_config_dict["jit_level"]
    'O1'
    """

    def __init__(self, jit_level: str = "", exc_mode: str = "auto", jit_syntax_level: str = "",
                 debug_level: str = "RELEASE", infer_boost: str = "off", **kwargs: Any) -> None:
        for name, value, allowed in (("jit_level", jit_level, ("",) + _CONFIG_LEVELS),
                                     ("exc_mode", exc_mode, ("auto", "sink", "no_sink")),
                                     ("jit_syntax_level", jit_syntax_level, ("", "STRICT", "COMPATIBLE", "LAX")),
                                     ("debug_level", debug_level, ("RELEASE", "DEBUG")),
                                     ("infer_boost", infer_boost, ("on", "off"))):
            if value not in allowed:
                raise ValueError(f"For '{name}' must be one of {list(a for a in allowed if a)}.")
        self.jit_config_dict = {"jit_level": jit_level, "exc_mode": exc_mode, "jit_syntax_level": jit_syntax_level,
                                "debug_level": debug_level, "infer_boost": infer_boost, **kwargs}


def lazy_inline(fn: Optional[Callable] = None, attrs: Any = None, policy: Any = None) -> Any:
    """``mindspore.lazy_inline``: marks a Cell's ``__init__`` for graph reuse; a no-op here.

    >>> import distinfer as ms
    >>> from distinfer import nn
    >>> class Block(nn.Cell):
    ...     @ms.lazy_inline
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Dense(2, 2)
    >>> [n for n, _ in Block().parameters_and_names()]
    ['fc.weight', 'fc.bias']
    """
    def wrap(init: Callable) -> Callable:
        if not callable(init):
            raise TypeError(f"lazy_inline decorates a Cell's __init__, got {init!r:.80}")
        return init

    return wrap if fn is None else wrap(fn)


def no_inline(fn: Optional[Callable] = None) -> Any:
    """``mindspore.no_inline``: keeps a function as one graph node; a no-op here.

    >>> import distinfer as ms
    >>> ms.no_inline(abs)(-3)
    3
    """
    return (lambda f: f) if fn is None else fn
