"""Finding the rank files of a checkpoint directory: ``src_dir/rank_<r>/`` holds rank ``r``'s file.

MindSpore's rules for which file of a rank directory is used: ``.ckpt`` files, the
lexicographically last (``transform_checkpoints``); ``.safetensors`` files, the one with the
largest last two numbers in its name; with ``file_suffix``, the file whose name ends with
``{file_suffix}.{ext}`` (the shortest such name).

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> for r in range(2):
...     os.makedirs(f"{d}/rank_{r}")
...     for step in (2, 10):
...         _ = open(f"{d}/rank_{r}/net-1_{step}.safetensors", "wb").write(b"x")
>>> {r: os.path.basename(p) for r, p in pick_rank_files(d, 2).items()}
{0: 'net-1_10.safetensors', 1: 'net-1_10.safetensors'}
"""
from __future__ import annotations

import glob
import os
import re
from typing import Iterable, Optional, Union

__all__ = ["pick_rank_files", "pick_one"]


def _trailing_numbers(path: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", os.path.basename(path))
    return tuple(int(n) for n in nums[-2:])


def pick_one(d: str, ext: str, file_suffix: Optional[str], api: str) -> Optional[str]:
    """The file of one rank directory among ``*.{ext}`` (None if there is none).

    ``.ckpt`` without ``file_suffix``: the lexicographically last (MindSpore's transform);
    ``.safetensors``: the largest last two numbers in the name. With ``file_suffix``: the files
    ending with ``{file_suffix}.{ext}``, the shortest name if several (ValueError on a tie).
    """
    found = glob.glob(os.path.join(glob.escape(d), f"*{glob.escape(file_suffix or '')}.{ext}"))
    if not found:
        return None
    if file_suffix is not None and len(found) > 1:
        shortest = min(len(os.path.basename(p)) for p in found)
        best = sorted(p for p in found if len(os.path.basename(p)) == shortest)
        if len(best) > 1:
            raise ValueError(f"For '{api}', several .{ext} files in {d} end with {file_suffix!r}: "
                             f"{[os.path.basename(p) for p in best]}; set 'file_suffix' to a longer common suffix")
        return best[0]
    if ext == "ckpt":
        return sorted(found)[-1]
    return max(found, key=lambda p: (_trailing_numbers(p), p))


def pick_rank_files(src_dir: str, ranks: Union[int, Iterable[int]], api: str = "transform_checkpoints",
                    file_suffix: Optional[str] = None) -> dict[int, str]:
    """MindSpore's input selection: ``{rank: file}`` from ``src_dir/rank_<r>/`` for each of ``ranks``.

    ``ranks`` is a device count (ranks ``0 .. n-1``) or the ranks themselves. Each directory
    must hold ``.ckpt`` or ``.safetensors`` files (see :func:`pick_one` for which one is used),
    and all the ranks one kind.
    """
    rank_ids = list(range(ranks)) if isinstance(ranks, int) else list(ranks)
    files: dict[int, str] = {}
    kinds: set[str] = set()
    for r in rank_ids:
        d = os.path.join(src_dir, f"rank_{r}")
        if not os.path.isdir(d):
            raise ValueError(f"For '{api}', the source directory {src_dir} has no rank_{r} sub-directory, but "
                             f"the source strategy needs rank {r} (ranks {rank_ids[0]}..{rank_ids[-1]})")
        for ext in ("ckpt", "safetensors"):
            f = pick_one(d, ext, file_suffix, api)
            if f is not None:
                files[r] = f
                kinds.add(ext)
                break
        else:
            what = f" ending with {file_suffix!r}" if file_suffix is not None else ""
            raise ValueError(f"For '{api}', {d} holds no .ckpt or .safetensors file{what}")
    if len(kinds) > 1:
        raise ValueError(f"For '{api}', {src_dir} mixes .ckpt and .safetensors rank files; use one kind")
    return files
