"""Where the tests find the real datasets, and how they say when it is missing.

``$NSJAX_DATA_DIR`` if set (read at import), else the repository's ``../shared/data``.
Tests that need a real dataset call :func:`need`; its skip reason starts with
:data:`SKIP_PREFIX`, which ``conftest.py`` turns into a failure when
``NSJAX_REQUIRE_DATA=1`` (as ``.ci/run`` sets it): in CI a missing dataset is an error,
not a silent skip.
"""

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("NSJAX_DATA_DIR")
            or Path(__file__).resolve().parents[2] / "shared" / "data").expanduser()
MNIST = DATA / "mnist"
SKIP_PREFIX = "needs data:"


def need(path: Path) -> Path:
    """``path`` if it exists, else skip the test with a reason ``conftest.py`` recognises."""
    if not path.exists():
        pytest.skip(f"{SKIP_PREFIX} {path} is missing (set NSJAX_DATA_DIR)")
    return path


@pytest.fixture(autouse=True)
def isolated_data_env(monkeypatch, tmp_path):
    """No user configuration leaks into data-loading tests: no ``$NSJAX_DATA_DIR``, an empty
    tfds data dir, no system datasets.  Autouse in the modules that import it."""
    from nsjax import _data

    monkeypatch.delenv(_data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds-empty"))
    monkeypatch.setattr(_data, "SYSTEM_ROOT", tmp_path / "no-system")
