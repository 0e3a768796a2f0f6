"""Atomic file replacement shared by the writers: temp file beside the target, fsync, rename."""
from __future__ import annotations

import contextlib
import os
import secrets
from typing import BinaryIO, Iterator, Union

__all__ = ["atomic_output", "atomic_path"]


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike]) -> Iterator[str]:
    """Like :func:`atomic_output`, for writers that want a file name rather than a handle.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "y.bin")
    >>> with atomic_path(p) as tmp: _ = open(tmp, "wb").write(b"ok")
    >>> open(p, "rb").read()
    b'ok'
    """
    path = os.fspath(path)
    # Only ever replace a regular file: renaming over a directory fails late, and over a device
    # or a pipe (say /dev/null, for a root user) it would silently replace the node itself.
    if os.path.lexists(path) and not os.path.isfile(path):
        raise FileExistsError(f"{path}: exists and is not a regular file; refusing to replace it")
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def atomic_output(path: Union[str, os.PathLike]) -> Iterator[BinaryIO]:
    """Open a temporary file in ``path``'s directory; on success fsync it and rename it to ``path``.

    On any exception (or a kill) ``path`` keeps its previous content; the temporary file is
    removed on exceptions. The rename is atomic because both names are in one directory.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "x.bin")
    >>> with atomic_output(p) as f: _ = f.write(b"ok")
    >>> open(p, "rb").read()
    b'ok'
    """
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb", buffering=1 << 20) as fh:
            yield fh
