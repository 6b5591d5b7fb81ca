"""Image-classification datasets as float32 arrays in [-1, 1]: MNIST, Fashion-MNIST,
EMNIST Balanced and CIFAR-10.

``load(name, split)`` returns a :class:`Dataset` with ``images`` of shape ``(N, H, W, C)``
(float32, ``uint8 v -> v / 127.5 - 1``) and ``labels`` of shape ``(N,)`` (int32).
``load(..., bounds=(lo, hi))`` scales to another domain instead,
``uint8 v -> lo + (hi - lo) v / 255`` (e.g. ``bounds=(0, 1)``: ``v / 255``); the
:class:`Dataset` records it in ``bounds``.

Sources
-------
``source="auto"`` first asks whether the user named a directory: the ``data_dir`` argument,
else ``$NSJAX_DATA_DIR`` (when set and not empty). Both are explicit user intent and are
treated alike.

*A directory was named*: only sources that read from that directory are tried, and nothing
else is ever substituted for it:

1. ``files``: the publishers' own files (gzipped IDX for the MNIST family, the python-pickle
   ``cifar-10-batches-py`` for CIFAR-10) in the directory or its conventional subfolders.
2. ``tfds``: a dataset *already prepared* by TensorFlow Datasets inside that directory.

If neither has the data, :class:`DatasetNotFoundError` lists what was tried and says what
was deliberately not tried (system files, tfds's default directory, the embedded sample). A
mistyped ``--data-dir`` therefore fails instead of quietly training on other data.

*No directory was named*: the sources are tried in this order of preference:

1. ``system``: the Debian/Ubuntu package ``dataset-fashion-mnist``, which installs the
   original files under ``/usr/share/datasets/fashion-mnist`` (:data:`SYSTEM_ROOT`);
   fashion_mnist only. Same format and reader as ``files``.
2. ``tfds``: a dataset *already prepared* by TensorFlow Datasets (array_record or parquet
   format, which ``tfds.data_source`` reads without TensorFlow) under ``$TFDS_DATA_DIR`` or
   ``~/tensorflow_datasets``. Only tried when such a prepared folder exists: ``auto`` never
   imports tfds otherwise and never downloads (``download=False``), so it fails fast
   offline instead of retrying the network. After ``system`` because it is slower
   (per-record PNG decoding) and tfds shuffles the record order.
3. ``embedded``: a real MNIST sample shipped inside the package (first 10,000 training and
   2,000 test images; see ``nsjax/_embedded/README.md``); mnist only. Last because it is
   only a sample: it makes the package work offline right after ``pip install``, and a
   fallback to it warns (:class:`IncompleteDatasetWarning`) unless ``limit`` asked for no
   more than the sample holds.

If none has the data, :class:`DatasetNotFoundError` lists every place tried, why each failed,
and how to get the data. An explicit ``source=`` uses only that source. Corrupt files raise
:class:`CorruptDataError` and are never skipped in favour of another source.

Provenance
----------
Files whose canonical checksums are known are identified by them (:data:`CANONICAL_MD5`:
the publishers' ``.gz`` files of MNIST and Fashion-MNIST; also recognised are the md5s of
their decompressed content, Debian's repackaged Fashion-MNIST files and the embedded
sample's files). Each IDX file read is hashed once (the stored bytes; the decompressed bytes
only when the stored ones are unknown and their size is that of a known file). Then:

- a file that is another dataset's or another split's known file (Fashion-MNIST's files in
  ``mnist/``, test files named as train files) raises :class:`CorruptDataError` naming
  what the file actually is;
- when every file is a known file of this dataset and split, ``Dataset.provenance`` is
  ``"verified"`` and ``Dataset.source`` ends in ``" [md5 verified]"`` (the embedded sample
  is verified against the md5s in ``nsjax/_embedded/README.md``);
- an un-gzipped or re-compressed copy of a canonical file is recognised by the md5 of its
  content, and counts as that file;
- anything else (files made or edited by the user, truncated, or of a dataset whose
  per-file checksums are not known here: CIFAR-10, EMNIST, anything read through tfds)
  still loads, with ``Dataset.provenance == "unverified"`` and ``Dataset.source`` ending in
  ``" [unverified: ...]"``, so every report that prints its data source says so.

Completeness
------------
``Dataset.complete`` is False when fewer examples exist than in the canonical dataset (e.g.
a truncated CIFAR-10 with only some batches); ``load`` then also warns, unless ``limit``
asked for no more than what is there. ``limit`` takes the first ``limit`` examples, in the
source's order; that is deliberate, not an error, and does not warn.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import pickle
import struct
import warnings
import zlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from nsjax._stego import _as_bounds

__all__ = [
    "CANONICAL_MD5",
    "DATASETS",
    "DATA_DIR_ENV",
    "SOURCES",
    "SPLITS",
    "SYSTEM_ROOT",
    "CorruptDataError",
    "Dataset",
    "DatasetNotFoundError",
    "IncompleteDatasetWarning",
    "PROVENANCES",
    "load",
    "to_unit_range",
]

DATASETS = ("mnist", "fashion_mnist", "emnist_balanced", "cifar10")
SOURCES = ("files", "tfds", "system", "embedded")
SPLITS = ("train", "test")
DATA_DIR_ENV = "NSJAX_DATA_DIR"
#: Where Debian's ``dataset-*`` packages install data (``dataset-fashion-mnist`` ->
#: ``SYSTEM_ROOT / "fashion-mnist"``). Read at call time, so tests can monkeypatch it.
SYSTEM_ROOT = Path("/usr/share/datasets")

MNIST_CLASSES = tuple("0123456789")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
EMNIST_BALANCED_CLASSES = tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

_EMBEDDED_COUNTS = {"train": 10_000, "test": 2_000}
_EMBEDDED_SOURCE = "embedded MNIST sample (10,000 train / 2,000 test)"

#: Values of :attr:`Dataset.provenance`.
PROVENANCES = ("verified", "unverified")
#: The paper's image domain, the default of :func:`load` (``uint8 v -> v / 127.5 - 1``).
DEFAULT_BOUNDS = (-1.0, 1.0)

#: md5 of each canonical ``.gz`` file as its publisher distributes it, per dataset.
#: MNIST: the original distribution (yann.lecun.com/exdb/mnist and its mirrors; the same
#: values as ``nsjax/_embedded/make_mnist_sample.py``). Fashion-MNIST: the values published
#: in Zalando's README (github.com/zalandoresearch/fashion-mnist). EMNIST and CIFAR-10 have
#: none here: NIST publishes no per-file checksums for the files inside ``gzip.zip``, and the
#: CIFAR-10 md5 (``c58f30108f718f92721af3b95e74349a``) is of the ``cifar-10-python.tar.gz``
#: archive, not of the batch files that are read, so their files load as "unverified".
CANONICAL_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

# Other files with known content, same layout (dataset -> variant -> file -> md5):
# - "content": md5 of the decompressed bytes of the canonical .gz files above (what an
#   un-gzipped copy, e.g. torchvision's MNIST/raw, holds; also matches a re-compressed copy).
# - "debian": Debian/Ubuntu's dataset-fashion-mnist package. Its .gz files are Zalando's
#   byte for byte except the 10-byte gzip header (no stored file name, another mtime):
#   putting the original header back gives exactly the published md5s above.
# - "embedded sample": the package's own sample (nsjax/_embedded/README.md).
_OTHER_MD5 = {
    "mnist": {
        "content": {
            "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
        },
        "embedded sample": {
            "train-images-idx3-ubyte.gz": "ad4493c73c84641fe2fc5192c57ee4cc",
            "train-labels-idx1-ubyte.gz": "734f75e4b96a64b2e5c2b7a7bbf46f2a",
            "t10k-images-idx3-ubyte.gz": "e65562570d98a26914850f52f900e431",
            "t10k-labels-idx1-ubyte.gz": "c22811ab5845e193a5d25a4f9b6d5de0",
        },
    },
    "fashion_mnist": {
        "content": {
            "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        "debian": {
            "train-images-idx3-ubyte.gz": "cf8536b0aa1a6ac5fa3f23001093305c",
            "train-labels-idx1-ubyte.gz": "10bea18fdb374794d4bb42e356e600c9",
            "t10k-images-idx3-ubyte.gz": "f78720b4224f21cce2f2ccf2d7a94c9a",
            "t10k-labels-idx1-ubyte.gz": "0d30e22e447f3c33dab9ed536400ac01",
        },
    },
}

# Decompressed sizes of the known files: content is only hashed when its size is one of these.
_KNOWN_CONTENT_SIZES = frozenset({47_040_016, 60_008, 7_840_016, 10_008})

_DISPLAY = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST",
            "emnist_balanced": "EMNIST Balanced", "cifar10": "CIFAR-10"}


@dataclasses.dataclass(frozen=True)
class _Known:
    """What a known md5 identifies."""

    dataset: str
    split: str  # "train" or "test"
    kind: str  # "images" or "labels"
    variant: str  # "original", "content", "debian" or "embedded sample"

    def describe(self) -> str:
        owner = ("the embedded MNIST sample" if self.variant == "embedded sample"
                 else _DISPLAY[self.dataset])
        return f"{owner}'s {self.split} {self.kind} file"


def _known_table() -> dict[str, _Known]:
    table = {}
    variants = [(d, "original", files) for d, files in CANONICAL_MD5.items()]
    variants += [(d, v, files) for d, vs in _OTHER_MD5.items() for v, files in vs.items()]
    for dataset, variant, files in variants:
        for fname, md5 in files.items():
            split = "train" if fname.startswith("train") else "test"
            kind = "images" if "-images-" in fname else "labels"
            table[md5] = _Known(dataset, split, kind, variant)
    return table


_KNOWN_MD5 = _known_table()


@dataclasses.dataclass(frozen=True)
class _Spec:
    counts: dict[str, int]  # canonical number of examples per split
    shape: tuple[int, int, int]  # (H, W, C)
    class_names: tuple[str, ...]
    tfds_name: str
    subdirs: tuple[str, ...]  # conventional folders under a data dir (files source)
    system_subdir: str | None  # folder under SYSTEM_ROOT
    how_to_get: str


_SPECS = {
    "mnist": _Spec(
        {"train": 60_000, "test": 10_000}, (28, 28, 1), MNIST_CLASSES, "mnist",
        ("mnist", "MNIST/raw", "MNIST"), None,
        "the four .gz files from http://yann.lecun.com/exdb/mnist/ (or a mirror such as "
        "https://ossci-datasets.s3.amazonaws.com/mnist/) into DIR/mnist/"),
    "fashion_mnist": _Spec(
        {"train": 60_000, "test": 10_000}, (28, 28, 1), FASHION_MNIST_CLASSES,
        "fashion_mnist",
        ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST", "fashion"),
        "fashion-mnist",
        "the four .gz files from https://github.com/zalandoresearch/fashion-mnist into "
        "DIR/fashion-mnist/, or on Debian/Ubuntu `apt install dataset-fashion-mnist`"),
    "emnist_balanced": _Spec(
        {"train": 112_800, "test": 18_800}, (28, 28, 1), EMNIST_BALANCED_CLASSES,
        "emnist/balanced",
        ("emnist", "emnist/gzip", "gzip", "EMNIST/raw", "EMNIST/raw/gzip"), None,
        "gzip.zip from https://www.nist.gov/itl/products-and-services/emnist-dataset "
        "(https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip), unzipped into DIR/ "
        "(it unpacks to DIR/gzip/emnist-balanced-*-ubyte.gz)"),
    "cifar10": _Spec(
        {"train": 50_000, "test": 10_000}, (32, 32, 3), CIFAR10_CLASSES, "cifar10",
        ("cifar-10-batches-py",), None,
        "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
        "extracted into DIR/ (`tar xzf cifar-10-python.tar.gz -C DIR` gives "
        "DIR/cifar-10-batches-py/)"),
}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is in none of the places looked at; the message lists them and how to
    get the data."""


class CorruptDataError(ValueError):
    """A data file exists but is not valid: bad magic, header counts not matching the payload
    size, image and label counts differing, labels out of range, unreadable pickle."""


class IncompleteDatasetWarning(UserWarning):
    """The loaded data holds fewer examples than the canonical dataset."""


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """One split of a dataset, in memory.

    Attributes:
      images: ``(N, H, W, C)`` float32 in ``bounds`` (default [-1, 1],
        ``uint8 v -> v / 127.5 - 1``; else ``lo + (hi - lo) v / 255``).
      labels: ``(N,)`` int32 in ``[0, num_classes)``.
      class_names: ``num_classes`` human-readable names, indexed by label.
      name: dataset name, one of :data:`DATASETS`.
      split: ``"train"`` or ``"test"``.
      source: which source and path the data came from (human-readable), ending in
        ``" [md5 verified]"`` or ``" [unverified: <why>]"`` as ``provenance`` says.
      complete: False when fewer examples were available than in the canonical dataset
        (independent of ``limit``).
      provenance: ``"verified"`` when every file read has a known md5 of this dataset and
        split (the publisher's files, or the embedded sample's); ``"unverified"`` otherwise
        (see the module docstring).
      bounds: ``(lo, hi)``, the domain the pixels were scaled to (0 -> lo, 255 -> hi).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str
    split: str
    source: str
    complete: bool
    provenance: str = "unverified"
    bounds: tuple[float, float] = DEFAULT_BOUNDS

    def __post_init__(self):
        if self.provenance not in PROVENANCES:
            raise ValueError(f"provenance must be one of {', '.join(PROVENANCES)}, got "
                             f"{self.provenance!r}")
        object.__setattr__(self, "bounds", _as_bounds(self.bounds))
        im, lab = self.images, self.labels
        if not (isinstance(im, np.ndarray) and im.ndim == 4 and im.dtype == np.float32):
            raise ValueError(f"images must be a float32 (N, H, W, C) array, got "
                             f"{getattr(im, 'dtype', type(im))} {np.shape(im)}")
        if not (isinstance(lab, np.ndarray) and lab.shape == im.shape[:1]
                and lab.dtype == np.int32):
            raise ValueError(f"labels must be an int32 ({im.shape[0]},) array, got "
                             f"{getattr(lab, 'dtype', type(lab))} {np.shape(lab)}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
                f"complete={self.complete}, provenance={self.provenance!r}, "
                f"bounds=({self.bounds[0]:g}, {self.bounds[1]:g}), source={self.source!r})")


def to_unit_range(images: np.ndarray, bounds=DEFAULT_BOUNDS) -> np.ndarray:
    """uint8 array (any shape) -> C-contiguous float32 array of the same shape in ``bounds``.

    Default ``[-1, 1]``: ``v / 127.5 - 1`` (0 -> -1.0 and 255 -> 1.0 exactly).  Other
    ``bounds=(lo, hi)``: ``lo + (hi - lo) v / 255`` computed in float64 and rounded once
    (0 -> float32(lo), 255 -> float32(hi) exactly; ``(0, 1)`` gives ``v / 255``).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"to_unit_range expects uint8 pixels, got {images.dtype}")
    lo, hi = _as_bounds(bounds)
    if (lo, hi) != DEFAULT_BOUNDS:
        table = lo + (hi - lo) * (np.arange(256) / 255.0)
        table[0], table[255] = lo, hi
        return np.ascontiguousarray(table.astype(np.float32)[images])
    out = images.astype(np.float32, order="C")
    out /= np.float32(127.5)
    out -= np.float32(1.0)
    return out


# ----------------------------------------------------------------------------- readers


def _read_bytes(path, raw: bytes | None = None) -> bytes:
    """Contents of ``path`` (a Path or importlib Traversable; ``raw``: its bytes, already
    read), gunzipped when it starts with the gzip magic (whatever its extension)."""
    raw = path.read_bytes() if raw is None else raw
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise CorruptDataError(f"{path}: not a valid gzip stream ({e})") from e


def _read_idx(path, ndim: int | None = None, content: bytes | None = None) -> np.ndarray:
    """Read an uint8 IDX file (gzipped or not) -> uint8 array of the header's dims.

    The header is big-endian: magic ``0x000008NN`` (``NN`` = number of dimensions; 0x801 for
    labels, 0x803 for images), then one uint32 per dimension. The payload must hold exactly
    ``prod(dims)`` bytes. ``ndim`` (1 labels, 3 images), when given, is checked against the
    magic. Raises :class:`CorruptDataError` otherwise. The array is a read-only view of the
    file's bytes (``content``: the decompressed bytes, already read).
    """
    raw = _read_bytes(path) if content is None else content
    if len(raw) < 4:
        raise CorruptDataError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if raw[:3] != b"\x00\x00\x08" or not 1 <= raw[3] <= 4:
        raise CorruptDataError(
            f"{path}: bad IDX magic 0x{magic:08x} (expected 0x00000801 for labels or "
            f"0x00000803 for images: big-endian, uint8 data)")
    if ndim is not None and raw[3] != ndim:
        kind = {1: "labels", 3: "images"}.get(ndim, f"{ndim}-d data")
        raise CorruptDataError(f"{path}: IDX magic 0x{magic:08x} but {kind} need "
                               f"0x{0x800 + ndim:08x}")
    nd = raw[3]
    start = 4 + 4 * nd
    if len(raw) < start:
        raise CorruptDataError(f"{path}: {len(raw)} bytes, too short for its "
                               f"{start}-byte IDX header")
    dims = struct.unpack(f">{nd}I", raw[4:start])
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(raw) - start
    if actual != expected:
        what = "truncated" if actual < expected else "trailing bytes"
        raise CorruptDataError(
            f"{path}: IDX header says {' x '.join(map(str, dims))} = {expected:,} bytes of "
            f"data, but the file holds {actual:,} ({what})")
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=start).reshape(dims)


def _identify(path, name: str, split: str, kind: str) -> tuple[bytes, _Known | None]:
    """Read ``path`` -> (decompressed bytes, what its md5 identifies or None).

    Hashes the stored bytes; when they are unknown, gzipped and decompress to the size of a
    known file, the decompressed bytes too. Raises :class:`CorruptDataError` when the file is
    a known file of another dataset, split or kind than ``name`` ``split`` ``kind``.
    """
    raw = path.read_bytes()
    digest = hashlib.md5(raw).hexdigest()
    known, how = _KNOWN_MD5.get(digest), f"md5 {digest}"
    content = _read_bytes(path, raw)
    if known is None and content is not raw and len(content) in _KNOWN_CONTENT_SIZES:
        digest = hashlib.md5(content).hexdigest()
        known, how = _KNOWN_MD5.get(digest), f"md5 of its decompressed content {digest}"
    if known is not None and known.variant == "debian":
        how += ", Debian dataset-fashion-mnist's copy"
    if known is not None and (known.dataset, known.split, known.kind) != (name, split, kind):
        raise CorruptDataError(
            f"{path} is {known.describe()} ({how}), not {_DISPLAY[name]}'s {split} {kind}: "
            f"a file of another dataset or split is in the wrong place or misnamed")
    return content, known


def _read_idx_pair(images_path, labels_path, *, name: str, split: str,
                   transpose: bool = False):
    """Images and labels IDX files of ``name`` ``split`` -> ``(uint8 (N, 28, 28, 1),
    uint8 (N,), provenance, note)``; provenance and note as :func:`_provenance` gives them.

    ``transpose`` swaps each image's rows and columns (EMNIST stores images transposed).
    """
    im_content, im_known = _identify(images_path, name, split, "images")
    lab_content, lab_known = _identify(labels_path, name, split, "labels")
    images = _read_idx(images_path, ndim=3, content=im_content)
    labels = _read_idx(labels_path, ndim=1, content=lab_content)
    if images.shape[0] != labels.shape[0]:
        raise CorruptDataError(f"{images.shape[0]:,} images in {images_path} but "
                               f"{labels.shape[0]:,} labels in {labels_path}")
    if transpose:
        images = images.transpose(0, 2, 1)
    return (images[..., None], labels, *_provenance(name, [im_known, lab_known]))


def _provenance(name: str, known: Sequence[_Known | None]) -> tuple[str, str]:
    """What the md5s of the files read say -> (provenance, note appended to the source)."""
    if known and all(k is not None for k in known):
        if any(k.variant == "embedded sample" for k in known):
            return "verified", " [md5 verified: the embedded MNIST sample's files]"
        return "verified", " [md5 verified]"
    if name in CANONICAL_MD5:
        return "unverified", " [unverified: checksums not the canonical ones]"
    return "unverified", (f" [unverified: no canonical per-file checksums known for "
                          f"{_DISPLAY[name]}]")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only builds what a CIFAR batch contains (dicts, lists, bytes, numpy
    arrays): loading a data file must not run arbitrary code."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes"),
        ("__builtin__", "bytearray"), ("builtins", "bytearray"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # no numpy 2 deprecation
        return super().find_class(module, name)


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, ImportError) as e:
        raise CorruptDataError(f"{path}: not a valid CIFAR pickle "
                               f"({type(e).__name__}: {e})") from e


def _get(d: dict, key: str) -> Any:
    """``d[b"key"]`` (python-2 pickles read with encoding="bytes") or ``d["key"]``."""
    if key.encode() in d:
        return d[key.encode()]
    return d[key]


def _read_cifar_batch(path: Path):
    """A CIFAR-10 python batch -> ``(uint8 (N, 32, 32, 3), int64 (N,))``.

    The pickle holds ``b"data"``: ``(N, 3072)`` uint8, channel-major (1024 red, 1024 green,
    1024 blue values, each row-major 32x32) and ``b"labels"``: N ints.
    """
    d = _unpickle(path)
    try:
        data, labels = _get(d, "data"), _get(d, "labels")
    except (KeyError, TypeError) as e:
        raise CorruptDataError(f"{path}: CIFAR batch must be a dict with 'data' and "
                               f"'labels', got {type(d).__name__}") from e
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3072):
        raise CorruptDataError(f"{path}: 'data' must be (N, 3072) uint8, got "
                               f"{getattr(data, 'dtype', type(data))} {np.shape(data)}")
    labels = np.asarray(labels)
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise CorruptDataError(f"{path}: {data.shape[0]:,} images but labels are "
                               f"{labels.dtype} {labels.shape}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int64)


def _cifar_class_names(folder: Path) -> tuple[str, ...]:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return CIFAR10_CLASSES
    d = _unpickle(meta)
    try:
        names = tuple(n.decode() if isinstance(n, bytes) else str(n)
                      for n in _get(d, "label_names"))
    except (KeyError, TypeError, UnicodeDecodeError) as e:
        raise CorruptDataError(f"{meta}: no readable 'label_names'") from e
    if len(names) != 10:
        raise CorruptDataError(f"{meta}: {len(names)} label names, CIFAR-10 has 10")
    return names


# ----------------------------------------------------------------------------- helpers


@dataclasses.dataclass
class _Raw:
    """What a source found, before conversion: uint8 images (N, H, W, C), integer labels."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    available: int  # examples available (before limit)
    missing: str = ""  # extra detail for the incompleteness warning
    warn_incomplete: bool = True
    provenance: str = "unverified"
    note: str = " [unverified]"  # appended to source in the Dataset: what provenance says


class _NotHere(Exception):
    """A source does not have the dataset; the message says where it looked and why."""


def _finish(raw: _Raw, name: str, split: str, limit: int | None,
            bounds=DEFAULT_BOUNDS) -> tuple[Dataset, str]:
    """Validate, cut to ``limit``, convert -> the Dataset and an incompleteness warning ("" if
    none is due)."""
    spec = _SPECS[name]
    images, labels = raw.images[:limit], raw.labels[:limit]
    if images.shape[1:] != spec.shape:
        raise CorruptDataError(f"{raw.source}: images of shape {images.shape[1:]}, "
                               f"{name} has {spec.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(raw.class_names)):
        raise CorruptDataError(f"{raw.source}: labels span [{labels.min()}, {labels.max()}], "
                               f"{name} has {len(raw.class_names)} classes")
    canonical = spec.counts[split]
    complete = raw.available >= canonical
    msg = ""
    if not complete and raw.warn_incomplete and (limit is None or limit > raw.available):
        msg = (f"{name} {split}: only {raw.available:,} of the canonical {canonical:,} "
               f"examples are available ({raw.source})"
               f"{'; ' + raw.missing if raw.missing else ''}. Dataset.complete is False.")
    ds = Dataset(images=to_unit_range(images, bounds), labels=labels.astype(np.int32),
                 class_names=tuple(raw.class_names), name=name, split=split,
                 source=raw.source + raw.note, complete=complete, provenance=raw.provenance,
                 bounds=bounds)
    return ds, msg


def _normalize_name(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)} "
                         f"(dashes accepted for underscores)")
    return key


def _user_data_dir(data_dir) -> tuple[Path | None, str]:
    """The files-source directory and a description of where it came from."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "data_dir"
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        return Path(env).expanduser(), f"${DATA_DIR_ENV}"
    return None, ""


# ----------------------------------------------------------------------------- sources


def _idx_names(name: str, split: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Accepted file names (first found wins) for the images and the labels of a split."""
    if name == "emnist_balanced":
        stem = f"emnist-balanced-{split}"
        im, lab = (f"{stem}-images-idx3-ubyte",), (f"{stem}-labels-idx1-ubyte",)
    else:
        p = "train" if split == "train" else "t10k"
        im = (f"{p}-images-idx3-ubyte", f"{p}-images.idx3-ubyte")
        lab = (f"{p}-labels-idx1-ubyte", f"{p}-labels.idx1-ubyte")
    return (tuple(n + ext for n in im for ext in (".gz", "")),
            tuple(n + ext for n in lab for ext in (".gz", "")))


def _root_allowed(name: str, root: Path) -> bool:
    """MNIST and Fashion-MNIST files have the same names: do not read the files directly in
    a folder whose name says it holds the other dataset."""
    base = root.name.lower()
    if name == "mnist":
        return "fashion" not in base
    if name == "fashion_mnist":
        return not ("mnist" in base and "fashion" not in base)
    return True


def _find_first(folder: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    return None


def _idx_from_dir(name: str, split: str, root: Path, label: str) -> _Raw:
    """MNIST-family IDX files from ``root`` or its conventional subfolders."""
    spec = _SPECS[name]
    if not root.is_dir():
        raise _NotHere(f"{label} {root} is not a directory")
    im_names, lab_names = _idx_names(name, split)
    folders = [root / s for s in spec.subdirs]
    if _root_allowed(name, root):
        folders.append(root)
    partial = []
    for folder in folders:
        im, lab = _find_first(folder, im_names), _find_first(folder, lab_names)
        if im and lab:
            images, labels, prov, note = _read_idx_pair(
                im, lab, name=name, split=split, transpose=name == "emnist_balanced")
            return _Raw(images, labels, spec.class_names, f"{label}: {im}", len(labels),
                        provenance=prov, note=note)
        if im or lab:
            partial.append(f"{im or lab} has no matching "
                           f"{(lab_names if im else im_names)[1]}[.gz]")
    rel = ", ".join(str(f.relative_to(root)) if f != root else "." for f in folders)
    msg = f"{label} {root}: no {im_names[1]}[.gz] + {lab_names[1]}[.gz] (looked in: {rel})"
    if partial:
        msg += "; " + "; ".join(partial)
    raise _NotHere(msg)


def _cifar_dirs(root: Path) -> list[Path]:
    """Candidate ``cifar-10-batches-py`` folders: ``root`` itself, ``root/cifar-10-batches-py``
    and ``root/cifar10*/``, ``root/cifar-10*/`` and the ``cifar-10-batches-py`` below them."""
    out = [root, root / "cifar-10-batches-py"]
    for d in sorted({*root.glob("cifar10*"), *root.glob("cifar-10*")}):
        if d.is_dir():
            out += [d, d / "cifar-10-batches-py"]
    return list(dict.fromkeys(out))


def _cifar_from_dir(split: str, root: Path, label: str) -> _Raw:
    if not root.is_dir():
        raise _NotHere(f"{label} {root} is not a directory")
    wanted = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    best, best_n = None, 0
    for folder in _cifar_dirs(root):
        n = sum((folder / f).is_file() for f in wanted)
        if n > best_n:
            best, best_n = folder, n
    if best is None:
        hint = ""
        if list(root.glob("cifar-10-python.tar.gz")):
            hint = " (cifar-10-python.tar.gz is there: extract it with `tar xzf`)"
        looked = ", ".join(str(d) for d in _cifar_dirs(root))
        what = "data_batch_1..5" if split == "train" else "test_batch"
        raise _NotHere(f"{label} {root}: no {what} in {looked}{hint}")
    images, labels, notes = [], [], []
    per_batch = 10_000
    for f in wanted:
        path = best / f
        if not path.is_file():
            notes.append(f"{f} missing")
            continue
        im, lab = _read_cifar_batch(path)
        if len(lab) < per_batch:
            notes.append(f"{f} holds {len(lab):,} of {per_batch:,}")
        images.append(im)
        labels.append(lab)
    images = np.concatenate(images) if len(images) > 1 else images[0]
    labels = np.concatenate(labels) if len(labels) > 1 else labels[0]
    return _Raw(images, labels, _cifar_class_names(best), f"{label}: {best}", len(labels),
                missing="; ".join(notes), note=_provenance(name="cifar10", known=[])[1])


def _from_files(name: str, split: str, root: Path, label: str) -> _Raw:
    if name == "cifar10":
        raw = _cifar_from_dir(split, root, label)
    else:
        raw = _idx_from_dir(name, split, root, label)
    raw.source = f"files from {raw.source}"
    return raw


def _from_system(name: str, split: str) -> _Raw:
    sub = _SPECS[name].system_subdir
    if sub is None:
        raise _NotHere("only fashion_mnist is provided (Debian package dataset-fashion-mnist)")
    folder = Path(SYSTEM_ROOT) / sub
    if not folder.is_dir():
        raise _NotHere(f"{folder} does not exist (Debian/Ubuntu: "
                       f"`apt install dataset-{sub}`)")
    return _idx_from_dir(name, split, folder, "system")


def _tfds_default_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"),
                                                           "tensorflow_datasets")


def _tfds_prepared(tfds_name: str, dirs: Sequence[str]) -> tuple[list, list[str]]:
    """Prepared tfds datasets ``[(data_dir, version, file_format)]`` under ``dirs``, newest
    version first per dir, found without importing tfds; and notes on what was seen."""
    found, notes = [], []
    for d in dirs:
        if "://" in d:  # gs:// etc.: only tfds itself can look there
            continue
        base = Path(d) / tfds_name
        versions = []
        for v in base.glob("*") if base.is_dir() else []:
            info = v / "dataset_info.json"
            if v.name.startswith("incomplete.") or not info.is_file():
                continue
            try:
                fmt = json.loads(info.read_text()).get("fileFormat", "tfrecord")
            except (OSError, ValueError):
                notes.append(f"{info} is unreadable")
                continue
            key = tuple(int(x) if x.isdigit() else 0 for x in v.name.split("."))
            versions.append((key, d, v.name, fmt))
        for _, d_, ver, fmt in sorted(versions, reverse=True):
            found.append((d_, ver, fmt))
    return found, notes


def _tfds_dirs(data_dir) -> list[str]:
    dirs = [] if data_dir is None else [os.fspath(Path(data_dir).expanduser())]
    env = os.environ.get(DATA_DIR_ENV, "")
    if data_dir is None and env:
        dirs.append(os.fspath(Path(env).expanduser()))
    dirs.append(_tfds_default_dir())
    return list(dict.fromkeys(dirs))


_READABLE_FORMATS = ("array_record", "parquet")


def _tfds_readable(tfds_name: str, dirs: Sequence[str]):
    """The first prepared dataset tfds.data_source can read, or None, and a reason."""
    found, notes = _tfds_prepared(tfds_name, dirs)
    for d, ver, fmt in found:
        if fmt in _READABLE_FORMATS:
            return (d, ver), ""
    why = [f"{Path(d) / tfds_name / ver} is prepared as {fmt}, which tfds.data_source cannot "
           f"read (needs array_record; re-prepare with tfds.data_source(..., download=True))"
           for d, ver, fmt in found]
    if not found:
        why.append(f"no prepared tfds dataset {tfds_name!r} in {', '.join(dirs)}")
    return None, "; ".join(why + notes)


def _from_tfds(name: str, split: str, data_dir, limit: int | None, *, prepared=None) -> _Raw:
    """Read every record (or the first ``limit``) of a tfds data source, without TensorFlow.

    Uses ``tfds.data_source(..., download=False)``: random access to array_record files,
    images decoded by PIL/OpenCV. (``tfds.load`` would need TensorFlow.) tfds stores EMNIST
    exactly as the IDX files, i.e. transposed, so EMNIST images are transposed here too.
    """
    spec = _SPECS[name]
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise _NotHere(f"tensorflow_datasets is not importable ({e})") from e
    if prepared is None:
        prepared, why = _tfds_readable(spec.tfds_name, _tfds_dirs(data_dir))
    else:
        why = ""
    if prepared is not None:
        ds_dir, version = prepared
        ds_name = f"{spec.tfds_name}:{version}"
    else:  # let tfds look for itself (its default dir; tfds.testing.mock_data patches this)
        ds_dir, ds_name = (None if data_dir is None else os.fspath(data_dir)), spec.tfds_name
    try:
        src = tfds.data_source(ds_name, split=split, data_dir=ds_dir, download=False)
    except Exception as e:  # tfds raises many types here (NotImplementedError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise _NotHere(f"{why or 'tfds could not open it'} (tfds.data_source({ds_name!r}, "
                       f"download=False) said {type(e).__name__}: {first})") from e
    n = len(src)
    m = n if limit is None else min(limit, n)
    images = np.empty((m, *spec.shape), dtype=np.uint8)
    labels = np.empty((m,), dtype=np.int64)
    # Batched __getitems__ is ~1.5x faster than src[k] on real array_record files. Under
    # tfds.testing.mock_data (tfds 4.9.10) it raises TypeError: the mock sets __getitems__
    # as an unbound functools.partial on a MagicMock; src[k] works there, so fall back to it.
    getitems = getattr(src, "__getitems__", None)
    chunk = 2048
    for start in range(0, m, chunk):
        keys = list(range(start, min(m, start + chunk)))
        records = None
        if getitems is not None:
            try:
                records = getitems(keys)
            except TypeError:
                getitems = None
        if records is None:
            records = [src[k] for k in keys]
        for k, rec in zip(keys, records, strict=True):
            image = np.asarray(rec["image"])
            if image.shape != spec.shape:
                raise CorruptDataError(f"tfds {ds_name} record {k}: image shape "
                                       f"{image.shape}, expected {spec.shape}")
            images[k] = image
            labels[k] = rec["label"]
    if name == "emnist_balanced":
        images = np.ascontiguousarray(images.transpose(0, 2, 1, 3))
    where = ds_dir or "tfds default data_dir"
    return _Raw(images, labels, spec.class_names,
                f"tfds: {ds_name} split {split!r} in {where}", n,
                note=" [unverified: read through tfds, no file checksums to check]")


def _embedded_dir():
    return resources.files(__package__ or "nsjax") / "_embedded" / "mnist-sample"


def _from_embedded(name: str, split: str) -> _Raw:
    if name != "mnist":
        raise _NotHere("only mnist has an embedded sample")
    folder = _embedded_dir()
    p = "train" if split == "train" else "t10k"
    im = folder / f"{p}-images-idx3-ubyte.gz"
    lab = folder / f"{p}-labels-idx1-ubyte.gz"
    if not (im.is_file() and lab.is_file()):
        raise _NotHere(f"the embedded sample is missing from this installation ({folder}; "
                       f"package data nsjax/_embedded/ not installed?)")
    images, labels, prov, note = _read_idx_pair(im, lab, name="mnist", split=split)
    if len(labels) != _EMBEDDED_COUNTS[split]:
        raise CorruptDataError(f"{im}: {len(labels):,} examples, the embedded sample has "
                               f"{_EMBEDDED_COUNTS[split]:,}")
    if prov == "verified":  # the source already says it is the sample
        note = " [md5 verified]"
    else:
        note = " [unverified: md5s differ from nsjax/_embedded/README.md]"
    return _Raw(images, labels, MNIST_CLASSES, _EMBEDDED_SOURCE, len(labels),
                warn_incomplete=False, provenance=prov, note=note)


# ----------------------------------------------------------------------------- load


def _how_to_get(name: str) -> str:
    spec = _SPECS[name]
    lines = [
        f"  - download {spec.how_to_get}, then pass data_dir=DIR or "
        f"set {DATA_DIR_ENV}=DIR",
        f"  - or, once, with network access and TensorFlow installed: python -c \"import "
        f"tensorflow_datasets as tfds; tfds.data_source('{spec.tfds_name}', download=True)\" "
        f"(prepares ~/tensorflow_datasets or $TFDS_DATA_DIR in array_record format)",
    ]
    if name == "mnist":
        lines.append("  - or use the embedded 10,000-image sample: source='embedded'")
    return "How to get it:\n" + "\n".join(lines)


def _not_found(name: str, split: str, tried: list[tuple[str, str]], *,
               note: str = "") -> DatasetNotFoundError:
    places = "\n".join(f"  - {src}: {why}" for src, why in tried)
    note = f"{note}\n" if note else ""
    return DatasetNotFoundError(f"{name} ({split}) not found. Looked in:\n{places}\n"
                                f"{note}{_how_to_get(name)}")


def load(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
         source: str = "auto", limit: int | None = None,
         bounds: tuple[float, float] = DEFAULT_BOUNDS) -> Dataset:
    """Load one split of a dataset as float32 images in [-1, 1] (or ``bounds``) and int32
    labels.

    Args:
      name: one of :data:`DATASETS` (dashes accepted: ``"fashion-mnist"``).
      split: ``"train"`` or ``"test"``.
      data_dir: folder for the ``files`` source (the dataset folder itself or a parent with
        conventional subfolders such as ``mnist/``, ``fashion-mnist/``, ``gzip/``,
        ``cifar-10-batches-py/``, ``cifar10*/``); default ``$NSJAX_DATA_DIR``. Also searched
        for a prepared tfds dataset (``tfds`` source). With ``source="auto"``, a directory
        given here or by ``$NSJAX_DATA_DIR`` is the only place looked in: no fallback.
      source: ``"auto"`` (see the module docstring for the order) or one of :data:`SOURCES`.
      limit: keep only the first ``limit`` examples (in the source's order); ``None``: all.
      bounds: ``(lo, hi)``, the pixel domain: ``uint8 v -> lo + (hi - lo) v / 255``;
        default the paper's ``(-1, 1)`` (``v / 127.5 - 1``); ``(0, 1)``: ``v / 255``.

    Returns:
      :class:`Dataset` with images ``(N, H, W, C)`` float32 and labels ``(N,)`` int32;
      ``Dataset.bounds`` is ``bounds``.

    Raises:
      ValueError: unknown name, split or source; bad limit or bounds; a source that does not
        provide this dataset (``system`` and ``embedded`` provide one each).
      DatasetNotFoundError: the data is not there (the message lists where it looked).
      CorruptDataError: a data file is invalid, or its md5 is that of another dataset's or
        split's canonical file.
    """
    name = _normalize_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if source != "auto" and source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid: auto, {', '.join(SOURCES)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | np.integer)
                              or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    limit = None if limit is None else int(limit)
    bounds = _as_bounds(bounds)

    if source == "auto":
        raw, msg = _auto(name, split, data_dir, limit)
    else:
        raw, msg = _explicit(name, split, data_dir, source, limit), ""
    ds, incomplete = _finish(raw, name, split, limit, bounds)
    for m in (msg, incomplete):
        if m:
            warnings.warn(m, IncompleteDatasetWarning, stacklevel=2)
    return ds


def _auto(name: str, split: str, data_dir, limit: int | None) -> tuple[_Raw, str]:
    """The first source in the order of preference that has the data -> (raw data, warning
    to emit or ""). A directory named by ``data_dir`` or ``$NSJAX_DATA_DIR`` is the only
    place looked in (:func:`_auto_in_dir`)."""
    root, label = _user_data_dir(data_dir)
    if root is not None:
        return _auto_in_dir(name, split, root, label, limit), ""
    tried: list[tuple[str, str]] = [
        ("files", f"no data_dir given and ${DATA_DIR_ENV} is not set")]
    try:
        return _from_system(name, split), ""
    except _NotHere as e:
        tried.append(("system", str(e)))
    prepared, why = _tfds_readable(_SPECS[name].tfds_name, _tfds_dirs(None))
    if prepared is None:
        tried.append(("tfds", why))
    else:  # a prepared dataset exists: failing to read it is an error, not a fall-through
        try:
            return _from_tfds(name, split, None, limit, prepared=prepared), ""
        except _NotHere as e:
            raise _not_found(name, split, [*tried, ("tfds", str(e))]) from e
    try:
        raw = _from_embedded(name, split)
    except _NotHere as e:
        tried.append(("embedded", str(e)))
        raise _not_found(name, split, tried) from None
    msg = ""
    if limit is None or limit > raw.available:
        reasons = "; ".join(f"{s}: {w}" for s, w in tried)
        msg = (f"full MNIST not found ({reasons}); using the {_EMBEDDED_SOURCE}. "
               f"Pass data_dir= or set {DATA_DIR_ENV} for the full dataset.")
    return raw, msg


def _auto_in_dir(name: str, split: str, root: Path, label: str, limit: int | None) -> _Raw:
    """``auto`` when the user named a directory: its files, then a prepared tfds dataset in
    it; never anything else (no system files, no other tfds dir, no embedded sample)."""
    tried: list[tuple[str, str]] = []
    try:
        return _from_files(name, split, root, label)
    except _NotHere as e:
        tried.append(("files", str(e)))
    prepared, why = _tfds_readable(_SPECS[name].tfds_name, [os.fspath(root)])
    if prepared is None:
        tried.append(("tfds", why))
    else:
        try:
            return _from_tfds(name, split, root, limit, prepared=prepared)
        except _NotHere as e:
            tried.append(("tfds", str(e)))
    skipped = []
    if _SPECS[name].system_subdir is not None:
        skipped.append(f"system files ({Path(SYSTEM_ROOT) / _SPECS[name].system_subdir})")
    skipped.append(f"tfds's default data dir ({_tfds_default_dir()})")
    if name == "mnist":
        skipped.append("the embedded MNIST sample")
    note = (f"Not tried, because {label} {root} was given and a named data directory never "
            f"falls back to other places: {', '.join(skipped)}. Fix the directory, or leave "
            f"data_dir and ${DATA_DIR_ENV} unset to search them")
    if name == "mnist":
        note += " (source='embedded' asks for the sample explicitly)"
    raise _not_found(name, split, tried, note=note + ".")


def _explicit(name: str, split: str, data_dir, source: str, limit: int | None) -> _Raw:
    """Only the given source."""
    if source == "system" and _SPECS[name].system_subdir is None:
        raise ValueError(f"source='system' only provides fashion_mnist (Debian package "
                         f"dataset-fashion-mnist), not {name}")
    if source == "embedded" and name != "mnist":
        raise ValueError(f"source='embedded' only provides mnist, not {name}")
    try:
        if source == "files":
            root, label = _user_data_dir(data_dir)
            if root is None:
                raise _NotHere(f"source='files' needs data_dir= or ${DATA_DIR_ENV}")
            return _from_files(name, split, root, label)
        if source == "system":
            return _from_system(name, split)
        if source == "tfds":
            return _from_tfds(name, split, data_dir, limit)
        return _from_embedded(name, split)
    except _NotHere as e:
        raise _not_found(name, split, [(source, str(e))]) from None
