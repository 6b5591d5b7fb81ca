"""Load a script (``scripts/*.py``, or any ``.py`` file) as a module, for the tests that
call its functions directly instead of running it in a subprocess."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(path: Path) -> ModuleType:
    """The module ``path`` defines, registered in ``sys.modules`` under its file stem (so
    that dataclasses and Linen modules defined in it can look themselves up there)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
