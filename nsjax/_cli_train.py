"""Flags of ``nsjax train``: map them to a recipe and call
:func:`nsjax.experiments.train_and_evaluate`; print one summary."""

from __future__ import annotations

import argparse
import sys

from nsjax._checkpoint import to_json
from nsjax.experiments._common import pct
from nsjax.experiments.train import DEFAULT_ARCH

__all__ = ["add_parser", "config_from_args"]


def config_from_args(args: argparse.Namespace):
    """:func:`nsjax.training.recipe` for ``args.dataset``, with the flags that were given."""
    from nsjax._train import recipe

    given = {
        "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
        "schedule": args.schedule, "warmup_epochs": args.warmup_epochs,
        "optimizer": args.optimizer, "weight_decay": args.weight_decay,
        "decay_mask": args.decay_mask, "seed": args.seed,
        "max_norm": None if args.max_norm is None else (args.max_norm or None),
        "alpha": None if args.alpha is None else (args.alpha or None),
        "copy_weight": args.copy_weight,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    # 0 given for max_norm / alpha means "off": keep it as an explicit None
    for k, flag in (("max_norm", args.max_norm), ("alpha", args.alpha)):
        if flag is not None and not flag:
            changes[k] = None
    return recipe(args.dataset, **changes)


def _cmd_train(args: argparse.Namespace) -> int:
    from nsjax.experiments.train import train_and_evaluate

    config = config_from_args(args)
    m = train_and_evaluate(args.dataset, args.arch, config, data_dir=args.data_dir,
                           out_dir=args.out, source=args.source, limit=args.limit,
                           activation=args.activation, progress=not args.no_progress,
                           overwrite=args.overwrite, resume=True if args.resume else None,
                           checkpoint_every=args.checkpoint_every, log=_log)
    if args.json:
        print(to_json({k: v for k, v in m.items() if k != "history"}))
        return 0
    tr, te, kept = m["train"], m["test"], m["filtered_train"]
    resumed = "" if m["resumed_from"] is None else f" (resumed after epoch {m['resumed_from']})"
    print(f"{m['dataset']}: FCNN {tuple(m['model']['arch'])} trained {config.epochs} epochs"
          f"{resumed} in "
          f"{m['train_time_s']:.1f} s; train acc {pct(tr['accuracy'])} / x{tr['alpha']} "
          f"{pct(tr['accuracy_rescaled'])}, test acc {pct(te['accuracy'])}; filtered set "
          f"{kept['n']} images; null space dim {m['null_space_dim']} (rank W1 {m['rank']}); "
          f"checkpoint in {args.out}/checkpoint, metrics.json")
    return 0


def _log(line: str) -> None:
    """Resume and checkpoint lines of ``nsjax train`` (stderr: stdout may be JSON)."""
    print(f"nsjax train: {line}", file=sys.stderr, flush=True)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``nsjax train`` on an ``argparse`` subparsers object; returns the parser."""
    p = subparsers.add_parser(
        "train", help="train the paper's FCNN on a dataset and save a checkpoint",
        description="Train an FCNN on a dataset's training images scaled to [-1, 1] plus copies "
        "rescaled by --alpha (paper, Sec. 4.1), evaluate on train (original and rescaled) and "
        "test, compute the null space of W1, and write a checkpoint and metrics.json to --out. "
        "Killed mid-run, the same command continues from its last checkpoint. "
        "Unset training flags take the recipe for the dataset (Adam, lr 3e-3, 1 warmup epoch, "
        "cosine, batch 128, alpha 0.2; 150 epochs for MNIST, 300 for Fashion-MNIST: "
        "nsjax.training.RECIPES).")
    p.add_argument("--dataset", default="mnist", help="dataset name (default: %(default)s)")
    p.add_argument("--arch", default=DEFAULT_ARCH, help="layer sizes (default: %(default)s)")
    p.add_argument("--activation", default="relu", choices=["relu", "sigmoid"])
    _add_recipe_flags(p)
    p.add_argument("--data-dir", default=None, help="dataset directory (default: see nsjax "
                   "data loading, e.g. NSJAX_DATA_DIR)")
    p.add_argument("--source", default="auto", help="data source for nsjax._data.load "
                   "(default: %(default)s)")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N images of each split (quick runs)")
    p.add_argument("--out", required=True, help="output directory (checkpoint + metrics.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="train from the start, replacing the checkpoint in OUT/checkpoint "
                   "(of this or another training)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint, an error if there is none (without "
                   "it a run still resumes a checkpoint of the same training, e.g. after "
                   "being killed)")
    p.add_argument("--checkpoint-every", type=int, default=5, metavar="N",
                   help="save params, optimizer state and epoch to OUT/checkpoint every N "
                   "epochs while training (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_cmd_train)
    return p


def _add_recipe_flags(p: argparse.ArgumentParser) -> None:
    """The training hyper-parameter flags; unset ones take the dataset's recipe."""
    from nsjax._train import TrainConfig

    d = TrainConfig()
    rec = "default: the recipe for --dataset, nsjax._train.recipe()"
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
    p.add_argument("--copy-weight", type=float, default=None,
                   help="loss weight of the rescaled copies relative to the originals "
                   f"({rec}: {d.copy_weight})")
    p.add_argument("--seed", type=int, default=None, help=f"({rec}: {d.seed})")
