"""nsjax: null spaces of neural networks in JAX, and null-space image steganography.

Reference: X. Li and K. M. Short, "Null Space Properties of Neural Networks with
Applications to Image Steganography".

The top level holds the core: null spaces (``null_space``, ``null_space_of``,
``conv_null_space``), the invariance check, steganography and its metrics, certification
and detection. Larger concerns live in namespaces: ``nsjax.data`` (dataset readers),
``nsjax.training`` (optax training), ``nsjax.checkpoint``, ``nsjax.plots``,
``nsjax.sharding``, ``nsjax.remedy`` and ``nsjax.nnx`` (NNX versions of the paper's
models).  Any model goes through one protocol, :func:`nsjax.as_model`.  The paper's
experiments and the ones beyond it are library code in the subpackage
``nsjax.experiments`` (``import nsjax.experiments``).

The namespaces load on first use (``nsjax.plots`` imports matplotlib only when it is first
touched), so ``import nsjax`` costs jax, flax and the core alone.
"""

import importlib as _importlib

from nsjax._certify import Certificate, certify, stacked_jacobian
from nsjax._conv import (
    CroppedPatchNullSpace,
    conv_apply,
    conv_matrix,
    conv_null_space,
    conv_null_space_of_layer,
    conv_output_shape,
    conv_singular_values,
    exact_conv_rank,
)
from nsjax._cpu_kernel import info as cpu_kernel_info
from nsjax._detect import Detector, evaluate_detector, fit_detector, null_features, roc_auc
from nsjax._experiment import evaluate_stego, make_pairs
from nsjax._first_layer import FirstLayer, find_first_map, first_linear_layer, null_space_of
from nsjax._invariance import (
    DEFAULT_SCALES,
    InvarianceResult,
    assert_invariant,
    check_invariance,
)
from nsjax._metrics import psnr, ssim
from nsjax._model import LinearMap, Model, as_model
from nsjax._models import CNN, FCNN, from_spec, init_params, input_shape_of, parse_arch, spec
from nsjax._nullspace import (
    LargeSVDWarning,
    NonFiniteError,
    NullSpace,
    TransposedKernelWarning,
    default_rtol,
    matrix_rank,
    null_space,
    singular_values,
    uses_cpu_kernel,
)
from nsjax._stego import (
    DEFAULT_BOUNDS,
    PAPER_ALPHA2_CAP,
    DomainError,
    StegoResult,
    TrivialNullSpaceError,
    check_domain,
    max_alpha2,
    rescale,
    reveal,
    stego,
)

__version__ = "0.1.0"

# Loaded on first attribute access (PEP 562).  The core needs none of them; ``plots`` pulls
# in matplotlib, most of their import time.
_LAZY_NAMESPACES = frozenset(
    {"checkpoint", "data", "nnx", "plots", "remedy", "sharding", "training"})

__all__ = [
    "DEFAULT_BOUNDS",
    "PAPER_ALPHA2_CAP",
    "CNN",
    "Certificate",
    "CroppedPatchNullSpace",
    "DEFAULT_SCALES",
    "Detector",
    "DomainError",
    "FCNN",
    "FirstLayer",
    "InvarianceResult",
    "LinearMap",
    "LargeSVDWarning",
    "Model",
    "NonFiniteError",
    "NullSpace",
    "StegoResult",
    "TransposedKernelWarning",
    "TrivialNullSpaceError",
    "as_model",
    "assert_invariant",
    "certify",
    "check_domain",
    "check_invariance",
    "checkpoint",
    "conv_apply",
    "conv_matrix",
    "conv_null_space",
    "conv_null_space_of_layer",
    "conv_output_shape",
    "conv_singular_values",
    "cpu_kernel_info",
    "data",
    "default_rtol",
    "evaluate_detector",
    "evaluate_stego",
    "find_first_map",
    "exact_conv_rank",
    "first_linear_layer",
    "fit_detector",
    "from_spec",
    "init_params",
    "input_shape_of",
    "make_pairs",
    "matrix_rank",
    "max_alpha2",
    "nnx",
    "null_features",
    "null_space",
    "null_space_of",
    "parse_arch",
    "plots",
    "psnr",
    "remedy",
    "rescale",
    "reveal",
    "roc_auc",
    "sharding",
    "singular_values",
    "spec",
    "ssim",
    "stacked_jacobian",
    "stego",
    "training",
    "uses_cpu_kernel",
]


def __getattr__(name: str):
    if name in _LAZY_NAMESPACES:
        module = _importlib.import_module(f"nsjax.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'nsjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_NAMESPACES)
