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
