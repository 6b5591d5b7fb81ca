"""``nsjax train``: train the paper's net on a dataset, evaluate, save a checkpoint.

The command is a thin shell over :func:`train_and_evaluate`, which the scripts call too.
Wire it into ``nsjax/cli.py`` with::

    from nsjax._cli_train import add_parser as _add_train_parser
    _add_train_parser(sub)          # sub = parser.add_subparsers(...)

``args.func(args)`` returns the exit code (0).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from nsjax._checkpoint import _json_default

__all__ = ["add_parser", "train_and_evaluate", "config_from_args", "DEFAULT_ARCH"]

DEFAULT_ARCH = "784,32,16,10"


def train_and_evaluate(
    dataset: str = "mnist",
    arch=DEFAULT_ARCH,
    config=None,
    *,
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    source: str = "auto",
    limit: int | None = None,
    activation: str = "relu",
    progress: bool = True,
) -> dict:
    """Load ``dataset``, train an FCNN ``arch`` with ``config``, evaluate, save.

    Steps: ``nsjax._data.load(dataset, "train"/"test")``; :func:`nsjax._train.train`
    (history with per-epoch test accuracy); :func:`nsjax._train.evaluate` on the training
    images (original and ``alpha``-rescaled, as in the paper) and on the test images;
    :func:`nsjax._train.filter_correct` on the training images; ``nsjax.null_space_of``;
    then, with ``out_dir``, a checkpoint (:func:`nsjax._checkpoint.save`) and
    ``out_dir/metrics.json``.

    Args:
      dataset: a name ``nsjax._data.load`` knows (``"mnist"``, ``"fashion_mnist"``, ...).
      arch: ``"784,32,16,10"`` or a sequence of ints.
      config: a :class:`nsjax._train.TrainConfig` (default: ``recipe(dataset)``).
      data_dir, source, limit: passed to ``nsjax._data.load`` (``limit`` caps each split).
      out_dir: where to write the checkpoint and ``metrics.json`` (``None``: nothing written).
      activation: ``"relu"`` or ``"sigmoid"``.
      progress: tqdm bar.

    Returns:
      The metrics dict written to ``metrics.json``: ``dataset``, ``model`` (spec),
      ``config``, ``n_train``, ``n_test``, ``train`` and ``test`` (:func:`evaluate` dicts),
      ``n_correct_both`` / ``correct_both_per_class`` (the paper's filtered set: training
      images right at scale 1 and at scale alpha), ``filtered_mean_confidence`` and
      ``filtered_mean_confidence_rescaled`` (mean max-softmax over that set),
      ``null_space_dim``, ``rank``, ``train_time_s``, ``total_time_s``, ``history``,
      ``checkpoint`` (the directory or ``None``), ``versions``.
    """
    import jax
    import numpy as np

    import nsjax
    from nsjax import _checkpoint, _data
    from nsjax._train import evaluate, filter_correct, recipe, train

    t_start = time.perf_counter()
    config = config or recipe(dataset)
    arch = nsjax.parse_arch(arch)
    train_ds = _data.load(dataset, "train", data_dir=data_dir, source=source, limit=limit)
    test_ds = _data.load(dataset, "test", data_dir=data_dir, source=source, limit=limit)
    n_pixels = int(np.prod(train_ds.images.shape[1:]))
    if n_pixels != arch[0]:
        raise ValueError(f"arch {arch} takes {arch[0]} inputs but {dataset} images have "
                         f"{n_pixels} values {tuple(train_ds.images.shape[1:])}")
    n_classes = int(np.max(train_ds.labels)) + 1 if len(train_ds.labels) else 0
    if n_classes > arch[-1]:
        raise ValueError(f"{dataset} has labels up to {n_classes - 1} but arch {arch} has only "
                         f"{arch[-1]} outputs")
    model = nsjax.FCNN(arch, activation=activation)

    t0 = time.perf_counter()
    variables, history = train(model, train_ds.images, train_ds.labels, config,
                               eval_data=(test_ds.images, test_ds.labels), progress=progress)
    jax.block_until_ready(variables)
    train_time = time.perf_counter() - t0

    alpha = config.alpha if config.uses_rescaled else None
    ev_alpha = alpha if alpha else 0.2  # always report the paper's 0.2 copies
    ev_train = evaluate(model, variables, train_ds.images, train_ds.labels, alpha=ev_alpha)
    ev_test = evaluate(model, variables, test_ds.images, test_ds.labels, alpha=ev_alpha)
    mask = filter_correct(model, variables, train_ds.images, train_ds.labels, alpha=ev_alpha)
    per_class = np.bincount(np.asarray(train_ds.labels)[mask], minlength=arch[-1])
    # the paper's filtered set: confidences over images right at both scales
    kept = evaluate(model, variables, np.asarray(train_ds.images)[mask],
                    np.asarray(train_ds.labels)[mask], alpha=ev_alpha) if mask.any() else None
    ns = nsjax.null_space_of(model, variables, tuple(train_ds.images.shape[1:]))

    from nsjax._checkpoint import _versions

    metrics = {
        "dataset": dataset,
        "class_names": list(getattr(train_ds, "class_names", []) or []),
        "model": nsjax.spec(model),
        "config": config.to_dict(),
        "data_source": getattr(train_ds, "source", None),
        "data_complete": getattr(train_ds, "complete", None),
        "n_train": int(len(train_ds.labels)),
        "n_test": int(len(test_ds.labels)),
        "train": ev_train,
        "test": ev_test,
        "n_correct_both": int(mask.sum()),
        "correct_both_per_class": per_class.tolist(),
        "filtered_mean_confidence": None if kept is None else kept["mean_confidence_correct"],
        "filtered_mean_confidence_rescaled":
            None if kept is None else kept["mean_confidence_correct_rescaled"],
        "null_space_dim": int(ns.dim),
        "rank": int(ns.rank),
        "train_time_s": train_time,
        "history": history,
        "checkpoint": None if out_dir is None else str(out_dir),
        "versions": _versions(),
        "jax_backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
    }
    metrics["total_time_s"] = time.perf_counter() - t_start
    if out_dir is not None:
        out = Path(out_dir)
        summary = {k: metrics[k] for k in ("dataset", "train", "test", "n_correct_both",
                                           "null_space_dim", "train_time_s")}
        _checkpoint.save(out, model, variables, config=config, metrics=summary)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    return metrics


def config_from_args(args: argparse.Namespace):
    """:func:`nsjax._train.recipe` for ``args.dataset``, with the flags that were given."""
    from nsjax._train import recipe

    given = {
        "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
        "schedule": args.schedule, "warmup_epochs": args.warmup_epochs,
        "optimizer": args.optimizer, "weight_decay": args.weight_decay,
        "decay_mask": args.decay_mask, "seed": args.seed,
        "max_norm": None if args.max_norm is None else (args.max_norm or None),
        "alpha": None if args.alpha is None else (args.alpha or None),
    }
    changes = {k: v for k, v in given.items() if v is not None}
    # 0 given for max_norm / alpha means "off": keep it as an explicit None
    for k, flag in (("max_norm", args.max_norm), ("alpha", args.alpha)):
        if flag is not None and not flag:
            changes[k] = None
    return recipe(args.dataset, **changes)


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    m = train_and_evaluate(args.dataset, args.arch, config, data_dir=args.data_dir,
                           out_dir=args.out, source=args.source, limit=args.limit,
                           activation=args.activation, progress=not args.no_progress)
    if args.json:
        print(json.dumps({k: v for k, v in m.items() if k != "history"}, indent=2,
                         default=_json_default))
        return 0
    tr, te = m["train"], m["test"]
    print(f"{m['dataset']}: FCNN {tuple(m['model']['arch'])} trained {config.epochs} epochs in "
          f"{m['train_time_s']:.1f} s ({m['n_train']} train + alpha={config.alpha} copies)")
    print(f"  train acc {_pct(tr['accuracy'])} (conf {_pct(tr['mean_confidence_correct'])}), "
          f"rescaled x{tr['alpha']} {_pct(tr['accuracy_rescaled'])} "
          f"(conf {_pct(tr['mean_confidence_correct_rescaled'])})")
    print(f"  test  acc {_pct(te['accuracy'])} (conf {_pct(te['mean_confidence_correct'])}), "
          f"rescaled {_pct(te['accuracy_rescaled'])}")
    print(f"  correct at both scales: {m['n_correct_both']} / {m['n_train']} train images")
    print(f"  null space dim {m['null_space_dim']} (rank W1 {m['rank']})")
    print(f"  checkpoint + metrics.json in {args.out}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``nsjax train`` on an ``argparse`` subparsers object; returns the parser."""
    from nsjax._train import TrainConfig

    d = TrainConfig()
    rec = "default: the recipe for --dataset, nsjax._train.recipe()"
    p = subparsers.add_parser(
        "train", help="train the paper's FCNN on a dataset and save a checkpoint",
        description="Train an FCNN on a dataset's training images scaled to [-1, 1] plus copies "
        "rescaled by --alpha (paper, Sec. 4.1), evaluate on train (original and rescaled) and "
        "test, compute the null space of W1, and write a checkpoint and metrics.json to --out. "
        "Unset training flags take the recipe for the dataset (Adam, lr 3e-3, 1 warmup epoch, "
        "cosine, batch 128, 100 epochs, alpha 0.2; Fashion-MNIST adds --max-norm 1.75).")
    p.add_argument("--dataset", default="mnist", help="dataset name (default: %(default)s)")
    p.add_argument("--arch", default=DEFAULT_ARCH, help="layer sizes (default: %(default)s)")
    p.add_argument("--activation", default="relu", choices=["relu", "sigmoid"])
    p.add_argument("--epochs", type=int, default=None, help=f"({rec}: {d.epochs})")
    p.add_argument("--batch-size", type=int, default=None, help=f"({rec}: {d.batch_size})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate ({rec}: {d.learning_rate})")
    p.add_argument("--schedule", default=None, choices=["cosine", "linear", "constant"],
                   help=f"({rec}: {d.schedule})")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help=f"({rec}: {d.warmup_epochs})")
    p.add_argument("--optimizer", default=None, choices=["adam", "adamw", "sgd"],
                   help=f"({rec}: {d.optimizer})")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"({rec}: {d.weight_decay}); it zeroes the W1 rows of dead units, "
                   "which raises the null-space dimension")
    p.add_argument("--decay-mask", default=None, choices=["all", "kernels", "hidden_kernels"],
                   help=f"({rec}: {d.decay_mask})")
    p.add_argument("--max-norm", type=float, default=None,
                   help=f"max L2 norm of each first-layer unit's weights, 0: off ({rec})")
    p.add_argument("--alpha", type=float, default=None,
                   help="also train on images rescaled by alpha; 0 disables "
                   f"({rec}: {d.alpha})")
    p.add_argument("--seed", type=int, default=None, help=f"({rec}: {d.seed})")
    p.add_argument("--data-dir", default=None, help="dataset directory (default: see nsjax "
                   "data loading, e.g. NSJAX_DATA_DIR)")
    p.add_argument("--source", default="auto", help="data source for nsjax._data.load "
                   "(default: %(default)s)")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N images of each split (quick runs)")
    p.add_argument("--out", required=True, help="output directory (checkpoint + metrics.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_cmd_train)
    return p
