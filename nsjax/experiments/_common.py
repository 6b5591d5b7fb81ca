"""Pieces every experiment shares: progress lines, formatting, reports, data, recipes.

One copy of each: the experiments (``nsjax.experiments.*``) and the CLI use these and
define none of their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nsjax import _checkpoint, _data, _train
from nsjax._models import spec

__all__ = ["Progress", "pct", "sci", "write_report", "not_run", "load_splits", "config_for",
           "train_or_restore", "training_key", "prepare_out", "DatasetNotFoundError"]

DatasetNotFoundError = _data.DatasetNotFoundError


class Progress:
    """Timestamped progress lines (``[  12.3s] message``) on stdout; silent when ``quiet``.

    Call it with a message; :attr:`log` is the callback to hand to library functions that
    take ``log=`` (``None`` when quiet, which also turns their progress bars off).
    """

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{self.seconds():6.1f}s] {msg}", flush=True)

    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def log(self) -> Callable[[str], None] | None:
        return None if self.quiet else self


def pct(x: float | None) -> str:
    """``0.1234 -> "12.34 %"``; ``None -> "n/a"``."""
    return "n/a" if x is None else f"{100 * x:.2f} %"


def sci(x: float | None) -> str:
    """``1.2e-5 -> "1.20e-05"``; ``None -> "not available"``."""
    return "not available" if x is None else f"{x:.2e}"


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_out(out_dir: str | os.PathLike, *, figures: bool = True) -> Path:
    """Create ``out_dir`` (and ``figures/`` unless ``figures=False``) and check it is
    writable, before any work.

    Raises:
      ValueError: ``out_dir`` is a file or cannot be written to.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output location {out} exists and is not a directory")
    try:
        (out / "figures" if figures else out).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as err:
        raise ValueError(f"cannot write to output directory {out}: {err}") from None
    return out


def write_report(out: str | os.PathLike, report: dict[str, Any], markdown: str) -> Path:
    """Write ``report.json`` and ``report.md`` into ``out``, each atomically (temp + rename).

    Returns the path of ``report.md``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_text(out / "report.json", _checkpoint.to_json(report))
    _atomic_text(out / "report.md", markdown)
    return out / "report.md"


def not_run(out: str | os.PathLike, experiment: str, err: Exception) -> dict:
    """The one "not run" policy: data that is not present is reported, not failed.

    Writes ``report.json`` (``{"experiment", "not_run"}``) and ``report.md`` saying why, and
    returns that report.  Callers exit with code 0: nothing failed, there was nothing to run.
    """
    report = {"experiment": experiment, "not_run": str(err)}
    write_report(out, report, f"# {experiment}: not run\n\n{err}\n")
    return report


def load_splits(dataset: str, data_dir=None, source: str = "auto", *,
                limit: int | None = None, test_limit: int | None = None,
                progress: Progress | None = None):
    """``(train, test)`` :class:`nsjax.data.Dataset` pair; ``limit`` caps the training split,
    ``test_limit`` the test split (both ``None``: everything).  With ``progress``, one line
    says where the data came from and how much of it is used."""
    tr = _data.load(dataset, "train", data_dir=data_dir, source=source, limit=limit)
    te = _data.load(dataset, "test", data_dir=data_dir, source=source, limit=test_limit)
    if progress is not None:
        progress(f"data: {tr.source}: {len(tr)} train / {len(te)} test")
    return tr, te


_KEEP = object()


def config_for(dataset: str, *, epochs: int | None = None, seed: int = 0,
               alpha: float | None = _KEEP, **changes) -> _train.TrainConfig:
    """``nsjax.training.recipe(dataset)`` with the overrides experiments take.

    ``epochs=None`` and an omitted ``alpha`` keep the recipe's; ``alpha=None`` turns the
    rescaled copies off; every other keyword replaces the recipe's value.
    """
    changes = {"seed": seed, **changes}
    if alpha is not _KEEP:
        changes["alpha"] = alpha
    if epochs is not None:
        changes["epochs"] = epochs
    return _train.recipe(dataset, **changes)


def training_key(model, config, train_ds) -> str:
    """12 hex digits naming one training: the model spec, the config and the data."""
    desc = {"model": spec(model), "config": config.to_dict(), "source": train_ds.source,
            "n_train": len(train_ds)}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]


def train_or_restore(out: str | os.PathLike, name: str, model, config, train_ds,
                     progress: Progress):
    """A checkpoint used as a cache of :func:`nsjax.training.train`.

    The checkpoint lives in ``out/checkpoints/<name>-<key>``, ``key`` =
    :func:`training_key` (model, config, data): a run with another configuration writes a
    new checkpoint beside the old one and never over it.  A checkpoint that cannot be
    trusted (damaged, edited, unreadable) is moved aside to ``<dir>.damaged-<n>``, said in
    a progress line, and the net is trained again.

    Args:
      out, name: the run's folder and the net's name in it.
      model, config: the model and its :class:`nsjax.training.TrainConfig`.
      train_ds: an :class:`nsjax.data.Dataset` (``images``, ``labels``, ``source``).
      progress: prints one line per step (quiet: silent, no progress bars).

    Returns:
      ``(variables, train_seconds, reused)``.
    """
    directory = Path(out) / "checkpoints" / f"{name}-{training_key(model, config, train_ds)}"
    if directory.exists() or _checkpoint._previous(directory).exists():
        try:
            _, variables, meta = _checkpoint.restore(directory, model)
            progress(f"reusing checkpoint {directory}")
            return variables, (meta.get("metrics") or {}).get("train_seconds"), True
        except (ValueError, FileNotFoundError) as err:
            aside = _set_aside(directory)
            progress(f"checkpoint {directory} cannot be trusted ({err}); moved to {aside}, "
                     "retraining")
    progress(f"training {directory.name}: {type(model).__name__}{getattr(model, 'arch', '')} "
             f"on {len(train_ds)} images + {config.alpha}-rescaled copies, {config.epochs} "
             "epochs")
    start = time.perf_counter()
    variables, history = _train.train(model, train_ds.images, train_ds.labels, config,
                                      progress=progress.log is not None)
    seconds = time.perf_counter() - start
    _checkpoint.save(directory, model, variables, config=config,
                     metrics={"train_seconds": seconds, "train_source": train_ds.source,
                              "n_train": len(train_ds), "history": history})
    return variables, seconds, False


def _set_aside(directory: Path) -> Path:
    k = 0
    while (aside := directory.with_name(f"{directory.name}.damaged-{k}")).exists():
        k += 1
    os.rename(directory if directory.exists() else _checkpoint._previous(directory), aside)
    return aside
