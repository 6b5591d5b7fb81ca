"""Argument types shared by the ``nsjax`` subcommands (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
import math

__all__ = ["shape", "shape3", "fractions", "names", "bounds"]


def shape(text: str, ndim: int | None = None) -> tuple[int, ...]:
    """``"28,28,1" -> (28, 28, 1)``: positive sizes, ``ndim`` of them when given."""
    try:
        dims = tuple(int(t) for t in text.split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not dims or min(dims) < 1 or (ndim is not None and len(dims) != ndim):
        what = "positive sizes" if ndim is None else f"{ndim} positive sizes (H,W,C)"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return dims


def shape3(text: str) -> tuple[int, int, int]:
    """An ``H,W,C`` image shape."""
    return shape(text, 3)


def fractions(text: str) -> tuple[float, ...]:
    """``"0.1,0.2" -> (0.1, 0.2)``: comma-separated numbers in ``(0, 1]``."""
    try:
        vals = tuple(float(t) for t in text.split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    if not vals or not all(0 < v <= 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected values in (0, 1], got {text!r}")
    return vals


def names(text: str) -> tuple[str, ...]:
    """``"a, b" -> ("a", "b")``."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def bounds(text: str) -> tuple[float, float]:
    """``"0,1" -> (0.0, 1.0)``: an image domain ``LO,HI`` with finite ``LO < HI``."""
    try:
        vals = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers), got {text!r}")
    if len(vals) != 2 or not all(math.isfinite(v) for v in vals) or vals[0] >= vals[1]:
        raise argparse.ArgumentTypeError(f"expected LO,HI with finite LO < HI, got {text!r}")
    return vals
