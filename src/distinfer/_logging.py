"""Logging with the rank in every line.

distinfer logs through the standard :mod:`logging` module under the ``distinfer`` logger. A
handler on that logger (not the root logger) prefixes each line with the MPI rank, so the
interleaved output of ``mpirun`` stays readable. ``DISTINFER_LOG_LEVEL`` (default ``WARNING``,
like MindSpore's default ``GLOG_v=2``) sets the level.
"""
from __future__ import annotations

import logging
import os

_FORMAT = "[%(levelname)s] distinfer rank %(rank)s %(asctime)s %(name)s: %(message)s"


class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from .communication import _backend  # late: logging must not start MPI

        record.rank = _backend.current_rank()
        return True


def _configure() -> logging.Logger:
    logger = logging.getLogger("distinfer")
    if not any(getattr(h, "_distinfer", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler._distinfer = True  # type: ignore[attr-defined]
        handler.addFilter(_RankFilter())
        handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(os.environ.get("DISTINFER_LOG_LEVEL", "WARNING").upper())
    return logger


_configure()
