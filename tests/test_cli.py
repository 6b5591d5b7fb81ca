"""The CLI is a thin shell: check it wires the library and reports errors cleanly."""

import json
import subprocess
import sys

import pytest

from nsjax.cli import main


def test_nullspace_json(capsys):
    assert main(["nullspace", "--arch", "784,32,16,10", "--json", "--probes", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["null_space_dim"] == 752 and report["rank"] == 32
    assert report["invariance_passed"] is True


def test_nullspace_bad_arch(capsys):
    assert main(["nullspace", "--arch", "784"]) == 2
    assert "arch" in capsys.readouterr().err


def test_console_help_runs():
    out = subprocess.run([sys.executable, "-m", "nsjax", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "nullspace" in out


def test_bounds_flag_is_validated(capsys):
    for bad in ("1,0", "0,inf", "0", "a,b"):
        with pytest.raises(SystemExit) as exit_:
            main(["certify", "--bounds", bad, "--out", "unused"])
        assert exit_.value.code == 2 and "--bounds" in capsys.readouterr().err
