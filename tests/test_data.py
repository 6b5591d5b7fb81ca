"""Tests for nsjax._data: real files from ../shared/data, small canonical-format files written
here, corrupt files, the source order, the embedded sample and tfds under mock_data."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

# Real data: $NSJAX_DATA_DIR (read at import, before isolated_data_env clears it), else the
# repository's ../shared/data.
from _datapaths import (
    DATA,
    SKIP_PREFIX,
    isolated_data_env,  # noqa: F401  (autouse)
)
from _scripts import load_script

from nsjax import _data
from nsjax._data import (
    CorruptDataError,
    DatasetNotFoundError,
    IncompleteDatasetWarning,
    load,
    to_unit_range,
)

EMBEDDED = Path(_data.__file__).resolve().parent / "_embedded"


def _need(sub: str) -> Path:
    path = DATA / sub
    if not path.is_dir():
        pytest.skip(f"{SKIP_PREFIX} {path} is missing")
    return path




# --------------------------------------------------------------------------- file writers


def _write_idx(path: Path, arr: np.ndarray, *, count: int | None = None, magic: int | None = None,
               gz: bool = True) -> Path:
    arr = np.asarray(arr, dtype=np.uint8)
    dims = list(arr.shape)
    if count is not None:
        dims[0] = count
    magic = 0x800 + arr.ndim if magic is None else magic
    raw = struct.pack(f">I{arr.ndim}I", magic, *dims) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def _write_mnist_like(folder: Path, n: int = 5, *, seed: int = 0, gz: bool = True):
    """Small MNIST-format train and test files; returns {split: (images, labels)} (uint8)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        labels = (np.arange(n) % 10).astype(np.uint8)
        ext = ".gz" if gz else ""
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images, gz=gz)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz=gz)
        out[split] = (images, labels)
    return out


def _upright_pattern(n: int) -> np.ndarray:
    """Asymmetric 28x28 images: a bar across the top rows, a marker down the left column and a
    per-image dot, so any transpose or flip is visible."""
    im = np.zeros((n, 28, 28), np.uint8)
    im[:, 2:5, 4:24] = 255
    im[:, 8:20, 0] = 128
    for i in range(n):
        im[i, 20 + i % 6, 10 + i % 7] = 200
    return im


def _cifar_images(n: int, offset: int = 0) -> np.ndarray:
    """(n, 32, 32, 3) uint8 with distinct channels and an asymmetric spatial pattern."""
    im = np.zeros((n, 32, 32, 3), np.uint8)
    im[..., 0], im[..., 1], im[..., 2] = 10, 20, 30
    im[:, 0, 5, 0] = 250  # red dot at row 0, col 5
    im[:, 7, 0, 2] = 240  # blue dot at row 7, col 0
    im[:, 31, 31, 1] = offset + np.arange(n)  # per-image id in green
    return im


def _write_cifar_batch(path: Path, images: np.ndarray, labels, *, protocol: int = 2):
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # channel-major rows
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"test", b"labels": list(map(int, labels)),
                     b"data": np.ascontiguousarray(data)}, f, protocol=protocol)


def _write_cifar(folder: Path, per_batch: int = 3, batches=(1, 2, 3, 4, 5), names=None):
    """A small cifar-10-batches-py folder; returns the train images and labels written."""
    images, labels = [], []
    for b in batches:
        im = _cifar_images(per_batch, offset=10 * b)
        lab = (np.arange(per_batch) + b) % 10
        _write_cifar_batch(folder / f"data_batch_{b}", im, lab)
        images.append(im)
        labels.append(lab)
    _write_cifar_batch(folder / "test_batch", _cifar_images(2), [9, 0], protocol=5)
    if names is not None:
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [n.encode() for n in names]}, f, protocol=2)
    return np.concatenate(images), np.concatenate(labels)


# --------------------------------------------------------------------------- shared real data


@pytest.fixture(scope="module")
def mnist_full():
    if not (DATA / "mnist").is_dir():
        pytest.skip(f"{SKIP_PREFIX} {DATA / 'mnist'} is missing")
    return {s: load("mnist", s, data_dir=DATA, source="files") for s in ("train", "test")}


@pytest.mark.parametrize("split,n", [("train", 60_000), ("test", 10_000)])
def test_mnist_shared(mnist_full, split, n):
    ds = mnist_full[split]
    assert len(ds) == n and ds.images.shape == (n, 28, 28, 1) and ds.input_shape == (28, 28, 1)
    assert ds.images.dtype == np.float32 and ds.labels.dtype == np.int32
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    assert set(np.unique(ds.labels)) == set(range(10))
    assert ds.complete and ds.num_classes == 10 and ds.class_names == tuple("0123456789")
    assert ds.name == "mnist" and ds.split == split and "mnist" in ds.source


@pytest.mark.parametrize("split,n", [("train", 60_000), ("test", 10_000)])
def test_fashion_mnist_shared(split, n):
    _need("fashion-mnist")
    ds = load("fashion-mnist", split, data_dir=DATA)
    assert ds.name == "fashion_mnist" and ds.complete and "fashion-mnist" in ds.source
    assert ds.images.shape == (n, 28, 28, 1) and ds.images.dtype == np.float32
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    assert ds.labels.dtype == np.int32 and set(np.unique(ds.labels)) == set(range(10))
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


@pytest.mark.parametrize("split,n", [("train", 4_000), ("test", 1_000)])
def test_cifar10_shared_truncated(split, n):
    _need("cifar10-partial")
    with pytest.warns(IncompleteDatasetWarning, match=f"{n:,} of the canonical"):
        ds = load("cifar10", split, data_dir=DATA)
    assert len(ds) == n and not ds.complete and "cifar10-partial" in ds.source
    assert ds.images.shape == (n, 32, 32, 3) and ds.images.dtype == np.float32
    assert -1.0 <= ds.images.min() < 0 < ds.images.max() <= 1.0
    assert set(np.unique(ds.labels)) == set(range(10))
    assert ds.class_names == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                              "horse", "ship", "truck")


def test_cifar10_shared_warning_names_missing_batches():
    _need("cifar10-partial")
    with pytest.warns(IncompleteDatasetWarning) as rec:
        load("cifar10", "train", data_dir=DATA / "cifar10-partial")
    msg = str(rec[0].message)
    assert "data_batch_1 holds 4,000 of 10,000" in msg
    assert all(f"data_batch_{i} missing" in msg for i in (2, 3, 4, 5))


# --------------------------------------------------------------------------- readers, small files


def test_emnist_balanced_transposed_files_come_back_upright(tmp_path):
    upright = _upright_pattern(6)
    stored = upright.transpose(0, 2, 1)  # the canonical EMNIST layout
    labels = np.array([0, 9, 10, 35, 36, 46], np.uint8)
    for split in ("train", "test"):  # as the official gzip.zip unpacks: DIR/gzip/
        _write_idx(tmp_path / "gzip" / f"emnist-balanced-{split}-images-idx3-ubyte.gz", stored)
        _write_idx(tmp_path / "gzip" / f"emnist-balanced-{split}-labels-idx1-ubyte.gz", labels)
    with pytest.warns(IncompleteDatasetWarning, match="112,800"):
        ds = load("emnist-balanced", "train", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.images[..., 0], to_unit_range(upright))
    assert ds.images[0, 3, 10, 0] == 1.0 and ds.images[0, 10, 3, 0] == -1.0  # bar on top
    assert ds.num_classes == 47 and "".join(ds.class_names) == (
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")
    assert [ds.class_names[i] for i in ds.labels] == ["0", "9", "A", "Z", "a", "t"]
    assert not ds.complete and ds.images.flags.c_contiguous


def test_cifar10_reader_channel_order_and_meta(tmp_path):
    names = [f"class{i}" for i in range(10)]
    images, labels = _write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py", names=names)
    with pytest.warns(IncompleteDatasetWarning):
        ds = load("cifar10", "train", data_dir=tmp_path, source="files")
    assert ds.images.shape == (15, 32, 32, 3) and ds.class_names == tuple(names)
    np.testing.assert_array_equal(ds.images, to_unit_range(images))
    np.testing.assert_array_equal(ds.labels, labels)
    px = ds.images[0]
    assert px[1, 1, 0] == to_unit_range(np.uint8(10)) and px[1, 1, 2] == to_unit_range(
        np.uint8(30))  # R then G then B
    assert px[0, 5, 0] == to_unit_range(np.uint8(250)) and px[5, 0, 0] != px[0, 5, 0]
    assert px[7, 0, 2] == to_unit_range(np.uint8(240))
    with pytest.warns(IncompleteDatasetWarning):
        test = load("cifar10", "test", data_dir=tmp_path / "cifar10")  # protocol-5 pickle
    assert test.labels.tolist() == [9, 0] and test.images.shape == (2, 32, 32, 3)


def test_cifar10_missing_batches_and_default_names(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, per_batch=10_000 // 1000, batches=(1, 2, 4, 5))
    with pytest.warns(IncompleteDatasetWarning, match="data_batch_3 missing"):
        ds = load("cifar10", "train", data_dir=tmp_path)
    assert len(ds) == 40 and not ds.complete
    assert ds.class_names == _data.CIFAR10_CLASSES  # no batches.meta: the standard names


def test_ungzipped_idx_and_dataset_folder_itself(tmp_path):
    written = _write_mnist_like(tmp_path / "mnist", gz=False)
    with pytest.warns(IncompleteDatasetWarning):
        ds = load("mnist", "test", data_dir=tmp_path / "mnist")
    np.testing.assert_array_equal(ds.images[..., 0], to_unit_range(written["test"][0]))
    np.testing.assert_array_equal(ds.labels, written["test"][1])


def test_mnist_files_are_not_taken_for_fashion_mnist(tmp_path):
    _write_mnist_like(tmp_path / "mnist")
    with pytest.raises(DatasetNotFoundError):
        load("fashion_mnist", data_dir=tmp_path / "mnist", source="files")


# --------------------------------------------------------------------------- corrupt files


def test_truncated_idx(tmp_path):
    _write_mnist_like(tmp_path)
    images = np.zeros((50, 28, 28), np.uint8)
    bad = _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, count=100)
    with pytest.raises(CorruptDataError) as e:
        load("mnist", data_dir=tmp_path, source="files")
    msg = str(e.value)
    assert str(bad) in msg and "78,400" in msg and "39,200" in msg and "truncated" in msg


def test_bad_magic(tmp_path):
    _write_mnist_like(tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5), magic=0x12345678)
    with pytest.raises(CorruptDataError, match="magic 0x12345678"):
        load("mnist", "test", data_dir=tmp_path)


def test_images_where_labels_belong(tmp_path):
    _write_mnist_like(tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((5, 28, 28)))
    with pytest.raises(CorruptDataError, match="0x00000803 but labels need 0x00000801"):
        load("mnist", "test", data_dir=tmp_path)


def test_label_count_mismatch(tmp_path):
    _write_mnist_like(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(4))
    with pytest.raises(CorruptDataError, match="5 images .* but 4 labels"):
        load("mnist", data_dir=tmp_path)


def test_broken_gzip_and_out_of_range_labels(tmp_path):
    _write_mnist_like(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CorruptDataError, match="gzip"):
        load("mnist", data_dir=tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(5, 10))
    with pytest.raises(CorruptDataError, match="10 classes"):
        load("mnist", "test", data_dir=tmp_path)


def test_corrupt_data_is_not_skipped_by_auto(tmp_path):
    _write_mnist_like(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(3))
    with pytest.raises(CorruptDataError):  # not a silent fall-back to the embedded sample
        load("mnist", data_dir=tmp_path)


def test_bad_and_malicious_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"this is not a pickle")
    with pytest.raises(CorruptDataError, match="test_batch"):
        load("cifar10", "test", data_dir=tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(CorruptDataError, match="refusing to load global .*print"):
        load("cifar10", "test", data_dir=tmp_path)
    _write_cifar_batch(folder / "test_batch", _cifar_images(3), [1, 2])
    with pytest.raises(CorruptDataError, match="3 images"):
        load("cifar10", "test", data_dir=tmp_path)


# --------------------------------------------------------------------------- not found, sources


def test_files_not_found_names_the_directory(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load("mnist", data_dir=tmp_path, source="files")
    assert isinstance(e.value, FileNotFoundError)
    assert str(tmp_path) in str(e.value) and "train-images-idx3-ubyte" in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="NSJAX_DATA_DIR"):
        load("mnist", source="files")


def test_auto_not_found_lists_every_source(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:  # no directory named: every source
        load("emnist_balanced", "test")
    msg = str(e.value)
    for where in ("- files:", "- system:", "- tfds:", "- embedded:", str(tmp_path),
                  "tfds-empty", "gzip.zip", "NSJAX_DATA_DIR", "download=True"):
        assert where in msg, where


def test_system_source(monkeypatch, tmp_path):
    root = tmp_path / "usr-share-datasets"
    written = _write_mnist_like(root / "fashion-mnist", n=7)
    monkeypatch.setattr(_data, "SYSTEM_ROOT", root)
    with pytest.warns(IncompleteDatasetWarning):
        ds = load("fashion_mnist", "train", source="system")
    assert ds.source.startswith("system: ") and str(root) in ds.source
    np.testing.assert_array_equal(ds.labels, written["train"][1])
    with pytest.warns(IncompleteDatasetWarning):
        auto = load("fashion-mnist", "test")  # no data_dir, no env: auto reaches system
    assert auto.source.startswith("system: ")
    with pytest.raises(ValueError, match="only provides fashion_mnist"):
        load("mnist", source="system")
    monkeypatch.setattr(_data, "SYSTEM_ROOT", tmp_path / "nothing")
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist"):
        load("fashion_mnist", source="system")


def test_env_var_honoured_and_data_dir_wins(monkeypatch, tmp_path):
    env_data = _write_mnist_like(tmp_path / "env" / "mnist", seed=1)
    arg_data = _write_mnist_like(tmp_path / "arg" / "mnist", seed=2)
    monkeypatch.setenv("NSJAX_DATA_DIR", str(tmp_path / "env"))
    with pytest.warns(IncompleteDatasetWarning):
        ds = load("mnist")
    assert "$NSJAX_DATA_DIR" in ds.source
    np.testing.assert_array_equal(ds.images[..., 0], to_unit_range(env_data["train"][0]))
    with pytest.warns(IncompleteDatasetWarning):
        ds = load("mnist", data_dir=tmp_path / "arg", source="files")
    np.testing.assert_array_equal(ds.images[..., 0], to_unit_range(arg_data["train"][0]))


# --------------------------------------------------------------------------- embedded sample


def test_embedded_sample(request):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # explicitly asked for: no warning
        train = load("mnist", source="embedded")
        test = load("mnist", "test", source="embedded")
    assert train.images.shape == (10_000, 28, 28, 1) and test.images.shape == (2_000, 28, 28, 1)
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int32
    assert set(np.unique(train.labels)) == set(range(10)) and not train.complete
    assert train.source == "embedded MNIST sample (10,000 train / 2,000 test) [md5 verified]"
    assert train.provenance == test.provenance == "verified"
    if not (DATA / "mnist").is_dir():
        pytest.skip(f"{SKIP_PREFIX} {DATA / 'mnist'} is missing: not compared")
    full = request.getfixturevalue("mnist_full")
    np.testing.assert_array_equal(train.images[0], full["train"].images[0])
    np.testing.assert_array_equal(train.images, full["train"].images[:10_000])
    np.testing.assert_array_equal(test.labels, full["test"].labels[:2_000])


def test_embedded_sample_size_and_provenance(monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ in package data
    files = sorted((EMBEDDED / "mnist-sample").glob("*.gz"))
    assert len(files) == 4 and sum(f.stat().st_size for f in EMBEDDED.rglob("*")) < 3e6
    src = _need("mnist")
    mod = load_script(EMBEDDED / "make_mnist_sample.py")
    for f in files:  # the sample is the header-adjusted prefix of the original files
        original = (src / f.name).read_bytes()
        assert hashlib.md5(original).hexdigest() == mod.SOURCE_MD5[f.name]
        n = mod.COUNTS[f.name.split("-")[0]]
        assert gzip.decompress(f.read_bytes()) == mod._head(gzip.decompress(original), n)


def test_auto_falls_back_to_embedded_with_a_warning():
    # only when no directory is named (a named one never falls back: test_data_provenance)
    with pytest.warns(IncompleteDatasetWarning, match="embedded MNIST sample") as rec:
        ds = load("mnist", "test")
    assert len(rec) == 1 and "- " not in str(rec[0].message)
    assert len(ds) == 2_000 and ds.source.startswith("embedded")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load("mnist", limit=100)) == 100  # asked for less than there is: quiet


# --------------------------------------------------------------------------- tfds


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


@pytest.mark.parametrize("name,shape,classes", [("mnist", (28, 28, 1), 10),
                                                ("cifar10", (32, 32, 3), 10),
                                                ("emnist_balanced", (28, 28, 1), 47)])
def test_tfds_source_under_mock_data(tfds, name, shape, classes):
    with tfds.testing.mock_data(num_examples=12):
        with pytest.warns(IncompleteDatasetWarning, match="only 12 of the canonical"):
            ds = load(name, "train", source="tfds")
        limited = load(name, "test", source="tfds", limit=5)
    assert ds.images.shape == (12, *shape) and ds.images.dtype == np.float32
    assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0 and ds.images.std() > 0.1
    assert ds.labels.dtype == np.int32 and 0 <= ds.labels.min() and ds.labels.max() < classes
    assert ds.num_classes == classes and not ds.complete and ds.source.startswith("tfds: ")
    assert len(limited) == 5


def test_tfds_emnist_is_transposed_upright(tfds):
    upright = _upright_pattern(4)
    records = [{"image": im.T[..., None], "label": i} for i, im in enumerate(upright)]

    def fake_data_source(self, split, decoders=None, deserialize_method=None, **kwargs):
        assert self.name == "emnist" and split == "train"
        return records  # a plain Sequence: the loader must not need __getitems__

    with tfds.testing.mock_data(as_data_source_fn=fake_data_source):
        with pytest.warns(IncompleteDatasetWarning):
            ds = load("emnist-balanced", source="tfds")
    np.testing.assert_array_equal(ds.images[..., 0], to_unit_range(upright))


def _fake_prepared(root: Path, tfds_name: str, version: str, fmt: str | None):
    folder = root / tfds_name / version
    folder.mkdir(parents=True)
    info = {"name": tfds_name} if fmt is None else {"name": tfds_name, "fileFormat": fmt}
    (folder / "dataset_info.json").write_text(__import__("json").dumps(info))


def test_auto_uses_prepared_tfds_only(tfds, monkeypatch, tmp_path):
    tfds_dir = tmp_path / "tfds"
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
    _fake_prepared(tfds_dir, "fashion_mnist", "3.0.1", "array_record")
    _fake_prepared(tfds_dir, "emnist/balanced", "3.1.0", None)  # tfrecord: needs TensorFlow
    with tfds.testing.mock_data(num_examples=6):
        with pytest.warns(IncompleteDatasetWarning):
            ds = load("fashion_mnist")  # no directory named: tfds's default dir is searched
        assert ds.source.startswith("tfds: fashion_mnist:3.0.1") and len(ds) == 6
        assert ds.provenance == "unverified" and ds.source.endswith(
            "[unverified: read through tfds, no file checksums to check]")
        with pytest.raises(DatasetNotFoundError, match="never falls back"):
            load("fashion_mnist", data_dir=tmp_path / "empty-files-dir")  # a named dir: only it
        data_dir = tmp_path / "data"
        _fake_prepared(data_dir, "fashion_mnist", "3.0.1", "array_record")
        with pytest.warns(IncompleteDatasetWarning):
            ds = load("fashion_mnist", data_dir=data_dir)  # prepared inside the named dir
        assert ds.source.startswith("tfds: fashion_mnist:3.0.1") and str(data_dir) in ds.source
        with pytest.raises(DatasetNotFoundError, match="prepared as tfrecord"):
            load("emnist_balanced")


# --------------------------------------------------------------------------- arguments, helpers


def test_limit_takes_the_first_examples(mnist_full):
    ds = load("mnist", "test", data_dir=DATA / "mnist", limit=7)
    assert len(ds) == 7 and ds.complete
    np.testing.assert_array_equal(ds.images, mnist_full["test"].images[:7])
    np.testing.assert_array_equal(ds.labels, mnist_full["test"].labels[:7])
    assert len(load("mnist", source="embedded", limit=10**9)) == 10_000


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'emnist'.*mnist, fashion_mnist"):
        load("emnist")
    with pytest.raises(ValueError, match="unknown split 'validation'; valid: train, test"):
        load("mnist", "validation")
    with pytest.raises(ValueError, match="unknown source 'web'; valid: auto, files, tfds"):
        load("mnist", source="web")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="limit"):
            load("mnist", source="embedded", limit=bad)
    with pytest.raises(ValueError, match="only provides mnist"):
        load("cifar10", source="embedded")


def test_to_unit_range_and_dataset_checks():
    out = to_unit_range(np.array([[0, 1, 127, 128, 255]], np.uint8))
    assert out.dtype == np.float32 and out[0, 0] == -1.0 and out[0, -1] == 1.0
    np.testing.assert_allclose(out, np.array([[0, 1, 127, 128, 255]]) / 127.5 - 1, atol=1e-7)
    with pytest.raises(TypeError, match="uint8"):
        to_unit_range(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="labels"):
        _data.Dataset(np.zeros((2, 1, 1, 1), np.float32), np.zeros(3, np.int32), ("a",), "x",
                      "train", "here", True)
    ds = load("mnist", source="embedded", limit=3)
    assert "n=3" in repr(ds) and ds.input_shape == (28, 28, 1)


def test_load_with_bounds_maps_pixels_affinely():
    default = load("mnist", "test", source="embedded", limit=300)
    unit = load("mnist", "test", source="embedded", limit=300, bounds=(0, 1))
    assert default.bounds == (-1.0, 1.0) and unit.bounds == (0.0, 1.0)
    assert "bounds=(0, 1)" in repr(unit) and unit.images.dtype == np.float32
    assert unit.images.min() == 0.0 and unit.images.max() == 1.0
    np.testing.assert_array_equal(unit.labels, default.labels)
    # v / 255 against (v / 127.5 - 1 + 1) / 2: both round v / 255 once or twice, <= 1 ulp
    np.testing.assert_allclose(unit.images, (default.images + 1) / 2, rtol=0, atol=6e-8)
    v = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(to_unit_range(v, (0, 1)), (v / 255).astype(np.float32))
    np.testing.assert_array_equal(to_unit_range(v, (-1, 1)), to_unit_range(v))  # bit-identical
    odd = to_unit_range(v, (0.1, 0.3))
    assert odd[0] == np.float32(0.1) and odd[-1] == np.float32(0.3) and odd.flags.c_contiguous
    for bad in [(1, 0), (0, np.nan), (0,)]:
        with pytest.raises(ValueError, match="bounds"):
            load("mnist", source="embedded", limit=1, bounds=bad)
