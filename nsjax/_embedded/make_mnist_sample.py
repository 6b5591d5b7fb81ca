"""Cut the embedded MNIST sample from the original MNIST distribution (run once).

Usage::

    python nsjax/_embedded/make_mnist_sample.py MNIST_DIR [--check]

``MNIST_DIR`` holds the four original gzipped IDX files (``train-images-idx3-ubyte.gz``,
...). Their md5s are checked against the original distribution, then the first
10,000 training and the first 2,000 test images and labels are written, in the same IDX
format (only the count in the header changes), to ``mnist-sample/`` beside this script.
The output is gzip-compressed with ``mtime=0`` and no file name, so rerunning gives the same
bytes (for a given zlib). ``--check`` compares instead of writing and exits 1 on difference.

Standard library only, on purpose: provenance should not depend on the package it feeds.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import struct
import sys
from pathlib import Path

# md5 of the original distribution's files (yann.lecun.com/exdb/mnist and its mirrors).
SOURCE_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
COUNTS = {"train": 10_000, "t10k": 2_000}
OUT_DIR = Path(__file__).resolve().parent / "mnist-sample"


def _head(raw: bytes, n: int) -> bytes:
    """First ``n`` records of an uint8 IDX file ``raw``, with the header count set to ``n``."""
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError("not an uint8 IDX file")
    ndim = raw[3]
    dims = list(struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim]))
    if dims[0] < n:
        raise ValueError(f"file holds {dims[0]} records, fewer than {n}")
    record = 1
    for d in dims[1:]:
        record *= d
    header = raw[:4] + struct.pack(f">{ndim}I", n, *dims[1:])
    start = 4 + 4 * ndim
    return header + raw[start : start + n * record]


def build(src: Path) -> dict[str, bytes]:
    """The sample's file name -> gzipped bytes, cut from the original files in ``src``."""
    for fname, md5 in SOURCE_MD5.items():
        got = hashlib.md5((src / fname).read_bytes()).hexdigest()
        if got != md5:
            raise SystemExit(f"{src / fname}: md5 {got}, expected {md5} (not the original file)")
    out = {}
    for prefix, n in COUNTS.items():
        for kind in ("images-idx3", "labels-idx1"):
            fname = f"{prefix}-{kind}-ubyte.gz"
            raw = gzip.decompress((src / fname).read_bytes())
            out[fname] = gzip.compress(_head(raw, n), compresslevel=9, mtime=0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mnist_dir", type=Path, help="folder with the four original MNIST .gz files")
    p.add_argument("--check", action="store_true", help="compare with the files on disk")
    args = p.parse_args(argv)
    files = build(args.mnist_dir)
    status = 0
    OUT_DIR.mkdir(exist_ok=True)
    for fname, data in files.items():
        path = OUT_DIR / fname
        if args.check:
            same = path.is_file() and path.read_bytes() == data
            status |= not same
            print(f"{'ok  ' if same else 'DIFF'} {path}")
        else:
            path.write_bytes(data)
            print(f"{hashlib.md5(data).hexdigest()}  {fname}  ({len(data):,} bytes)")
    return status


if __name__ == "__main__":
    sys.exit(main())
