"""The paper's experiments and the ones beyond it, as importable library code.

Each experiment is one function that loads data, trains (or reuses cached checkpoints),
computes, measures and writes ``report.json``, ``report.md`` and ``figures/`` (PNG + PDF)
into an output folder, and returns the report.  The ``nsjax`` command line and the
``scripts/`` only parse flags and call these.

* :func:`run_nullspace` -- null space and invariance of a random FCNN;
* :func:`run_demo` / :func:`run_stego` -- null-space steganography on one dataset (Sec. 4);
* :func:`train_and_evaluate` -- train the paper's FCNN, evaluate, checkpoint;
* :func:`run_cnn_stego` -- VALID / patch / SAME CNNs;
* :func:`run_conv_nullspace` -- null space of a first convolution and Lemma B.1;
* :func:`run_certify`, :func:`run_detect`, :func:`run_remedy` -- beyond the paper.

:data:`PAPER` (:mod:`nsjax.experiments.paper`) is the one table of the paper's numbers.
A dataset that is not present raises :class:`nsjax.data.DatasetNotFoundError`;
:func:`not_run` writes the report that says so.
"""

import importlib

# name -> submodule; loaded on first use, so importing one experiment loads only its own
# dependencies
_LAZY = {
    "Progress": "_common", "not_run": "_common", "train_or_restore": "_common",
    "run_certify": "certify", "CNN_MODELS": "cnn_stego", "run_cnn_stego": "cnn_stego",
    "run_conv_nullspace": "conv", "run_detect": "detect", "PAPER": "paper",
    "PaperValue": "paper", "run_remedy": "remedy", "DEMO_ARCH": "stego", "run_demo": "stego",
    "run_stego": "stego", "run_nullspace": "nullspace", "paper_training_table": "train",
    "train_and_evaluate": "train", "run_train_paper": "train",
}

__all__ = [
    "CNN_MODELS",
    "DEMO_ARCH",
    "PAPER",
    "PaperValue",
    "Progress",
    "not_run",
    "paper_training_table",
    "run_certify",
    "run_cnn_stego",
    "run_conv_nullspace",
    "run_demo",
    "run_detect",
    "run_nullspace",
    "run_remedy",
    "run_stego",
    "run_train_paper",
    "train_and_evaluate",
    "train_or_restore",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"nsjax.experiments.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'nsjax.experiments' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
