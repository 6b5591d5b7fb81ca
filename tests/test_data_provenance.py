"""Data provenance in nsjax._data: a named data directory never falls back to other data, and
files are identified by their md5s (another dataset's files are refused; canonical ones are
"verified", anything else loads as "unverified" and ``Dataset.source`` says so)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from _datapaths import DATA as _SHARED

# Read at import, before the isolated_data_env fixture clears $NSJAX_DATA_DIR.
from _datapaths import (
    isolated_data_env,  # noqa: F401  (autouse)
    need,
)

from nsjax import _data
from nsjax._data import (
    CANONICAL_MD5,
    CorruptDataError,
    DatasetNotFoundError,
    IncompleteDatasetWarning,
    load,
)

EMBEDDED = Path(_data.__file__).resolve().parent / "_embedded"
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
VERIFIED = " [md5 verified]"
UNVERIFIED = " [unverified: checksums not the canonical ones]"


def shared_data(sub: str) -> Path:
    """The real-data folder ``sub`` ($NSJAX_DATA_DIR, else the repository's ../shared/data);
    skips the test, saying where it looked, when it is not there."""
    return need(_SHARED / sub)




def _write_idx(path: Path, arr: np.ndarray, *, gz: bool = True) -> Path:
    arr = np.asarray(arr, dtype=np.uint8)
    raw = struct.pack(f">I{arr.ndim}I", 0x800 + arr.ndim, *arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def _write_small(folder: Path, n: int = 6, prefix: str = "t10k") -> None:
    rng = np.random.default_rng(0)
    _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz",
               rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- no silent fallback


@pytest.mark.parametrize("case", ["missing", "empty", "wrong"])
def test_named_data_dir_never_falls_back(tmp_path, case):
    data_dir = tmp_path / "data"
    if case != "missing":
        data_dir.mkdir()
    if case == "wrong":  # holds data, but not MNIST's
        _write_small(data_dir / "emnist-but-not-mnist", prefix="train")
        (data_dir / "notes.txt").write_text("not a dataset")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning-only "fallback" either
        with pytest.raises(DatasetNotFoundError) as e:
            load("mnist", data_dir=data_dir, limit=1000)
    msg = str(e.value)
    assert f"- files: data_dir {data_dir}" in msg and f"- tfds: no prepared tfds dataset " \
        f"'mnist' in {data_dir}" in msg
    assert "never falls back" in msg and "the embedded MNIST sample" in msg
    assert "source='embedded'" in msg


def test_env_data_dir_never_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv(_data.DATA_DIR_ENV, str(tmp_path / "typo"))
    with pytest.raises(DatasetNotFoundError, match=r"\$NSJAX_DATA_DIR .*typo was given"):
        load("mnist", "test", limit=10)
    with pytest.raises(DatasetNotFoundError, match="never falls back"):
        load("fashion_mnist", "test", limit=10)  # nor to the system files


def test_cli_train_with_a_mistyped_data_dir_fails(tmp_path, capsys):
    from nsjax import cli

    rc = cli.main(["train", "--data-dir", str(tmp_path / "typo"), "--limit", "1000",
                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2 and "never falls back" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_no_data_dir_still_falls_back_to_the_embedded_sample_with_a_warning():
    with pytest.warns(IncompleteDatasetWarning, match="using the embedded MNIST sample") as rec:
        ds = load("mnist", "test")
    assert len(rec) == 1 and len(ds) == 2_000 and ds.provenance == "verified"
    assert ds.source == "embedded MNIST sample (10,000 train / 2,000 test)" + VERIFIED
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # today's rule: asked for no more than the sample has
        assert load("mnist", limit=1000).provenance == "verified"


# --------------------------------------------------------------------------- checksums


def test_fashion_mnist_files_in_mnist_dir_are_refused(tmp_path):
    fashion = shared_data("fashion-mnist")
    shutil.copytree(fashion, tmp_path / "mnist")
    with pytest.raises(CorruptDataError) as e:
        load("mnist", data_dir=tmp_path, limit=1000)
    assert f"{tmp_path / 'mnist' / 'train-images-idx3-ubyte.gz'} is Fashion-MNIST's train " \
           f"images file" in str(e.value)
    assert "not MNIST's train images" in str(e.value)
    with pytest.raises(CorruptDataError, match="is Fashion-MNIST's test images file"):
        load("mnist", "test", data_dir=tmp_path / "mnist", source="files")


@pytest.mark.parametrize("form", ["decompressed", "recompressed"])
def test_fashion_mnist_content_is_recognised_however_compressed(tmp_path, form):
    content = gzip.decompress((shared_data("fashion-mnist") /
                               "t10k-labels-idx1-ubyte.gz").read_bytes())
    _write_small(tmp_path / "mnist")  # user-made images, Fashion-MNIST's real labels
    if form == "decompressed":
        (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
        (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(content)
    else:
        recompressed = gzip.compress(content, compresslevel=1)
        (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(recompressed)
    with pytest.raises(CorruptDataError, match="is Fashion-MNIST's test labels file .md5 ") as e:
        load("mnist", "test", data_dir=tmp_path)
    assert ("md5 of its decompressed content" in str(e.value)) == (form == "recompressed")


def test_test_files_named_as_train_files_are_refused(tmp_path):
    mnist = shared_data("mnist")
    for kind in ("images-idx3", "labels-idx1"):
        shutil.copyfile(mnist / f"t10k-{kind}-ubyte.gz", tmp_path / f"train-{kind}-ubyte.gz")
    with pytest.raises(CorruptDataError, match="is MNIST's test images file .md5 "
                       "9fb629c4189551a2d022fa330f9573f3., not MNIST's train images"):
        load("mnist", data_dir=tmp_path)


def test_real_files_load_as_verified(tmp_path):
    mnist, fashion = shared_data("mnist"), shared_data("fashion-mnist")
    for split in ("train", "test"):
        ds = load("mnist", split, data_dir=mnist.parent, limit=100)
        assert ds.provenance == "verified" and ds.source.endswith(VERIFIED)
        assert ds.source.startswith(f"files from data_dir: {mnist}")
    ds = load("fashion_mnist", "test", data_dir=fashion)  # Debian's repackaged copy
    assert ds.provenance == "verified" and ds.source.endswith(VERIFIED) and ds.complete
    for kind in ("images-idx3", "labels-idx1"):  # un-gzipped, as torchvision's MNIST/raw
        name = f"t10k-{kind}-ubyte"
        (tmp_path / name).write_bytes(gzip.decompress((mnist / f"{name}.gz").read_bytes()))
    ds = load("mnist", "test", data_dir=tmp_path)
    assert ds.provenance == "verified" and ds.source.endswith(VERIFIED) and len(ds) == 10_000


def test_user_written_files_load_as_unverified(tmp_path):
    _write_small(tmp_path / "mnist")
    with pytest.warns(IncompleteDatasetWarning):
        ds = load("mnist", "test", data_dir=tmp_path)
    assert ds.provenance == "unverified" and len(ds) == 6
    assert ds.source == f"files from data_dir: {tmp_path / 'mnist'}/t10k-images-idx3-ubyte.gz" \
                        + UNVERIFIED
    assert "provenance='unverified'" in repr(ds)
    for split in ("train", "test"):  # EMNIST: no per-file checksums known
        _write_small(tmp_path / "gzip", prefix=f"emnist-balanced-{split}")
    with pytest.warns(IncompleteDatasetWarning):
        em = load("emnist_balanced", "test", data_dir=tmp_path)
    assert em.provenance == "unverified" and em.source.endswith(
        " [unverified: no canonical per-file checksums known for EMNIST Balanced]")


def test_truncated_real_file_is_unverified(tmp_path):
    mnist = shared_data("mnist")
    for kind, rec in (("images-idx3", 784), ("labels-idx1", 1)):
        raw = gzip.decompress((mnist / f"t10k-{kind}-ubyte.gz").read_bytes())
        start = 16 if rec == 784 else 8
        head = raw[:4] + struct.pack(">I", 50) + raw[8:start] + raw[start:start + 50 * rec]
        (tmp_path / f"t10k-{kind}-ubyte.gz").write_bytes(gzip.compress(head, mtime=0))
    with pytest.warns(IncompleteDatasetWarning):
        ds = load("mnist", "test", data_dir=tmp_path)
    assert len(ds) == 50 and ds.provenance == "unverified" and ds.source.endswith(UNVERIFIED)


def test_cifar10_loads_as_unverified():
    cifar = shared_data("cifar10-partial")
    with pytest.warns(IncompleteDatasetWarning):
        ds = load("cifar10", "test", data_dir=cifar)
    assert ds.provenance == "unverified" and ds.source.endswith(
        " [unverified: no canonical per-file checksums known for CIFAR-10]")


def test_embedded_sample_is_verified(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load("mnist", "train", source="embedded")
    assert ds.provenance == "verified" and ds.source.endswith(VERIFIED)
    readme = (EMBEDDED / "README.md").read_text()
    for f in MNIST_FILES:  # the files are the ones nsjax/_embedded/README.md lists
        md5 = _md5(EMBEDDED / "mnist-sample" / f)
        assert f"| `{f}` |" in readme and f"`{md5}`" in readme
    # copied into a data dir: still recognised, and the source says it is the sample
    shutil.copytree(EMBEDDED / "mnist-sample", tmp_path / "mnist")
    with pytest.warns(IncompleteDatasetWarning):
        ds = load("mnist", "test", data_dir=tmp_path)
    assert ds.provenance == "verified" and ds.source.endswith(
        " [md5 verified: the embedded MNIST sample's files]")
    for kind in ("images-idx3", "labels-idx1"):  # its train files named as test files
        shutil.copyfile(tmp_path / "mnist" / f"train-{kind}-ubyte.gz",
                        tmp_path / "mnist" / f"t10k-{kind}-ubyte.gz")
    with pytest.raises(CorruptDataError,
                       match="is the embedded MNIST sample's train images file"):
        load("mnist", "test", data_dir=tmp_path)


def test_checksum_table():
    assert CANONICAL_MD5["mnist"] == {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}
    assert CANONICAL_MD5["fashion_mnist"] == {  # as published in Zalando's README
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}
    assert set(CANONICAL_MD5) == {"mnist", "fashion_mnist"}  # none known: EMNIST, CIFAR-10
    assert len(_data._KNOWN_MD5) == 24  # 4 files x (2 originals, 2 contents, Debian, sample)
    with pytest.raises(ValueError, match="provenance"):
        _data.Dataset(np.zeros((1, 1, 1, 1), np.float32), np.zeros(1, np.int32), ("a",), "x",
                      "train", "here", True, "trusted")


def test_checksum_table_matches_the_real_files():
    mnist, fashion = shared_data("mnist"), shared_data("fashion-mnist")
    for f in MNIST_FILES:
        assert _md5(mnist / f) == CANONICAL_MD5["mnist"][f]
    # Debian's Fashion-MNIST files are Zalando's with another 10-byte gzip header: putting the
    # original one back (stored file name, Zalando's mtime) gives the published md5s.
    mtimes = {"train": 0x59A7E9DE, "t10k": 0x59A7E9F3}
    for f in MNIST_FILES:
        raw = (fashion / f).read_bytes()
        assert raw[:4] == b"\x1f\x8b\x08\x00"  # no stored file name
        header = (b"\x1f\x8b\x08\x08" + mtimes[f.split("-")[0]].to_bytes(4, "little") +
                  b"\x00\x03" + f[:-3].encode() + b"\x00")
        assert hashlib.md5(header + raw[10:]).hexdigest() == CANONICAL_MD5["fashion_mnist"][f]
        assert _data._KNOWN_MD5[_md5(fashion / f)].variant == "debian"
