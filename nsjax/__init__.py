"""nsjax: null spaces of neural networks in JAX, and null-space image steganography.

Reference: X. Li and K. M. Short, "Null Space Properties of Neural Networks with
Applications to Image Steganography".
"""

from nsjax._first_layer import FirstLayer, first_linear_layer, null_space_of
from nsjax._invariance import (
    DEFAULT_SCALES,
    InvarianceResult,
    assert_invariant,
    check_invariance,
)
from nsjax._models import CNN, FCNN, from_spec, init_params, input_shape_of, parse_arch, spec
from nsjax._nullspace import NonFiniteError, NullSpace, default_rtol, null_space

__version__ = "0.1.0"

__all__ = [
    "CNN",
    "DEFAULT_SCALES",
    "FCNN",
    "FirstLayer",
    "InvarianceResult",
    "NonFiniteError",
    "NullSpace",
    "assert_invariant",
    "check_invariance",
    "default_rtol",
    "first_linear_layer",
    "from_spec",
    "init_params",
    "input_shape_of",
    "null_space",
    "null_space_of",
    "parse_arch",
    "spec",
]
