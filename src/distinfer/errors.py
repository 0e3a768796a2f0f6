"""The exception types distinfer raises.

Each derives from the builtin type MindSpore raises in the same situation (``ValueError``
for bad values and files, ``RuntimeError`` for shape mismatches at load time), so code written
for MindSpore that catches those keeps working.
"""
from __future__ import annotations

__all__ = ["DistinferError", "FormatError", "StrategyError", "LayoutError", "CommError"]


class DistinferError(Exception):
    """Base of every distinfer-specific error."""


class FormatError(DistinferError, ValueError):
    """A file is not what it claims to be: truncated, corrupt, wrong type, failed CRC...

    The message names the file, the record or tensor, and what was expected.
    """


class StrategyError(DistinferError, ValueError):
    """A ``.shard()`` strategy or a layout that cannot apply to the op, shapes or device count."""


class LayoutError(DistinferError, ValueError):
    """A layout that is inconsistent with a shape or with the device matrix."""


class CommError(DistinferError, RuntimeError):
    """A communication set-up problem (rank counts, groups)."""
