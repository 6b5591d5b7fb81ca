"""The top-level package: what ``import nsjax`` loads, and its lazily loaded namespaces."""

import os
import subprocess
import sys

import pytest

import nsjax


def test_import_nsjax_leaves_the_heavy_namespaces_unloaded():
    """``import nsjax`` loads the core only: the namespaces, and matplotlib with
    ``nsjax.plots``, load on first use."""
    code = (
        "import sys\n"
        "import nsjax\n"
        "heavy = ('matplotlib', 'orbax', 'nsjax._data', 'nsjax._plots', 'nsjax._checkpoint',"
        " 'nsjax._train')\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "assert 'plots' not in vars(nsjax)\n"
        "fig = nsjax.plots.plot_roc\n"
        "assert 'matplotlib' in sys.modules and 'plots' in vars(nsjax)\n"
        "assert 'orbax' not in sys.modules\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", sorted(nsjax._LAZY_NAMESPACES))
def test_lazy_namespaces_are_the_submodules(name):
    import importlib

    module = importlib.import_module(f"nsjax.{name}")
    assert getattr(nsjax, name) is module
    assert name in dir(nsjax) and name in nsjax.__all__


def test_every_public_name_resolves():
    assert all(hasattr(nsjax, n) for n in nsjax.__all__)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'plot'"):
        nsjax.plot  # noqa: B018
    assert not hasattr(nsjax, "experiments_")
