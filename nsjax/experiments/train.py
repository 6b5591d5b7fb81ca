"""Train an FCNN on a dataset, evaluate it as the paper does, save a checkpoint.

:func:`train_and_evaluate` is what ``nsjax train`` and ``scripts/train_paper.py`` run;
:func:`paper_training_table` puts its metrics beside the paper's numbers
(:mod:`nsjax.experiments.paper`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax
import numpy as np

from nsjax import _checkpoint, _train
from nsjax._first_layer import null_space_of
from nsjax._models import FCNN, parse_arch, spec
from nsjax.experiments import paper
from nsjax.experiments._common import (
    DatasetNotFoundError,
    _atomic_text,
    config_for,
    load_splits,
    pct,
    prepare_out,
)
from nsjax.experiments._pipeline import filtered_set, paper_subset

__all__ = ["train_and_evaluate", "run_train_paper", "paper_training_table", "DEFAULT_ARCH"]

DEFAULT_ARCH = "784,32,16,10"


def _check_fit(arch: tuple[int, ...], tr) -> None:
    n_pixels = int(np.prod(tr.images.shape[1:]))
    if n_pixels != arch[0]:
        raise ValueError(f"arch {arch} takes {arch[0]} inputs but {tr.name} images have "
                         f"{n_pixels} values {tuple(tr.images.shape[1:])}")
    n_classes = int(np.max(tr.labels)) + 1 if len(tr.labels) else 0
    if n_classes > arch[-1]:
        raise ValueError(f"{tr.name} has labels up to {n_classes - 1} but arch {arch} has "
                         f"only {arch[-1]} outputs")


def train_and_evaluate(
    dataset: str = "mnist",
    arch=DEFAULT_ARCH,
    config: _train.TrainConfig | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    source: str = "auto",
    limit: int | None = None,
    activation: str = "relu",
    progress: bool = True,
    overwrite: bool = False,
    resume: bool | None = None,
    checkpoint_every: int = 5,
    log=None,
) -> dict:
    """Load ``dataset``, train an FCNN ``arch`` with ``config``, evaluate, save.

    Args:
      dataset: a name :func:`nsjax.data.load` knows (``"mnist"``, ``"fashion_mnist"``, ...).
      arch: ``"784,32,16,10"`` or a sequence of ints.
      config: a :class:`nsjax.training.TrainConfig` (default: ``recipe(dataset)``).
      data_dir, source, limit: passed to :func:`nsjax.data.load` (``limit`` caps each split).
      out_dir: where to write the checkpoint (``out_dir/checkpoint``, one atomic commit) and
        ``metrics.json`` (``None``: nothing written); checked before training: it must be
        writable, and a checkpoint of another training there is refused (naming the
        differing fields) unless ``overwrite``.  During training the checkpoint holds the
        params, optimizer state and epoch every ``checkpoint_every`` epochs.
      activation: ``"relu"`` or ``"sigmoid"``.
      progress: tqdm bar.
      overwrite: start afresh, replacing whatever checkpoint ``out_dir`` holds.
      resume: ``None`` (default): continue from ``out_dir/checkpoint`` when it holds this
        training (same model, config and data), e.g. after a run was killed; ``True``: the
        same, but a missing checkpoint is an error; ``False``: train from the start.
      checkpoint_every: epochs between checkpoints while training.
      log: called with a line when the run resumes and after each checkpoint.

    Returns:
      The metrics dict (also ``out_dir/metrics.json``): ``dataset``, ``model`` (spec),
      ``config``, ``n_train``, ``n_test``, ``train`` and ``test``
      (:func:`nsjax.training.evaluate` dicts at scale 1 and ``alpha``, 0.2 when the recipe
      has none), ``filtered_train`` (the paper's filtered set: training images right at both
      scales, with its size, per-class counts and mean confidences), ``null_space_dim``,
      ``rank``, ``train_time_s``, ``total_time_s``, ``history``, ``checkpoint``,
      ``versions``, ``resumed_from`` (the epoch training resumed after, or ``None``).
    """
    t_start = time.perf_counter()
    out = None if out_dir is None else prepare_out(out_dir, figures=False)
    config = config or _train.recipe(dataset)
    arch = parse_arch(arch)
    model = FCNN(arch, activation=activation)
    ck = None if out is None else out / "checkpoint"
    if ck is not None and not overwrite:
        _refuse_other_checkpoint(ck, model, config)
    if resume and (ck is None or not (ck.exists() or _checkpoint._previous(ck).exists())):
        raise ValueError(f"resume: there is no checkpoint to resume from at {ck}")
    tr, te = load_splits(dataset, data_dir, source, limit=limit, test_limit=limit)
    _check_fit(arch, tr)
    t0 = time.perf_counter()
    result = _train.train(model, tr.images, tr.labels, config,
                          eval_data=(te.images, te.labels), progress=progress,
                          checkpoint_dir=ck, checkpoint_every=checkpoint_every,
                          resume=not overwrite if resume is None else resume, log=log)
    variables, history = result
    jax.block_until_ready(variables)
    train_time = time.perf_counter() - t0
    metrics = _metrics(model, variables, config, tr, te)
    metrics.update(dataset=dataset, train_time_s=train_time, history=history,
                   checkpoint=None if out is None else str(out),
                   resumed_from=result.resumed_from,
                   total_time_s=time.perf_counter() - t_start)
    if ck is not None:
        summary = {k: metrics[k] for k in ("dataset", "train", "test", "null_space_dim",
                                           "train_time_s")}
        summary.update(history=history, data=_train.data_fingerprint(
            *_train.validate_data(tr.images, tr.labels)))
        _checkpoint.save(ck, model, variables, opt_state=result.opt_state, step=result.step,
                         config=config, metrics=summary)
        _atomic_text(out / "metrics.json", _checkpoint.to_json(metrics))
    return metrics


def _refuse_other_checkpoint(directory: Path, model, config) -> None:
    """``ValueError`` if ``directory`` holds a checkpoint of another model or config (or
    one that cannot be read): a new training must not replace it unasked."""
    if not (directory.exists() or _checkpoint._previous(directory).exists()):
        return
    try:
        meta = _checkpoint.restore(directory).meta
        diff = _checkpoint._spec_diff(meta["model"], spec(model))
        diff += _train.config_diff(meta.get("config"), config)
        why = "another model or training config (differing fields: " + "; ".join(diff) + ")"
    except (ValueError, FileNotFoundError) as err:
        diff, why = [True], f"a checkpoint that cannot be read ({err})"
    if diff:
        raise ValueError(f"{directory} holds {why}; choose another output folder or pass "
                         "overwrite=True (--overwrite) to replace it")


def _metrics(model, variables, config, tr, te) -> dict:
    """Everything measured on a trained net (no timing)."""
    alpha = (config.alpha if config.uses_rescaled else None) or 0.2  # always the 0.2 copies
    kept = filtered_set(model, variables, tr.images, tr.labels, alpha1=alpha)
    ns = null_space_of(model, variables, tr.input_shape)
    return {
        "class_names": list(tr.class_names),
        "model": spec(model),
        "config": config.to_dict(),
        "data_source": tr.source,
        "data_complete": tr.complete,
        "n_train": len(tr),
        "n_test": len(te),
        "train": _train.evaluate(model, variables, tr.images, tr.labels, alpha=alpha),
        "test": _train.evaluate(model, variables, te.images, te.labels, alpha=alpha),
        "filtered_train": {k: v for k, v in kept.items() if k != "mask"},
        "paper_set": {k: v for k, v in paper_subset(kept["mask"], tr.labels).items()
                      if k != "mask"},
        "null_space_dim": int(ns.dim),
        "rank": int(ns.rank),
        "versions": _checkpoint._versions(),
        "jax_backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
    }


def _as_report(m: dict) -> dict:
    """Metrics in the key layout of :mod:`nsjax.experiments.paper` (``train_eval`` ...)."""
    return {"null_space_dim": m["null_space_dim"], "train_eval": m["train"],
            "filtered_train": m["filtered_train"], "paper_set": m.get("paper_set")}


def paper_training_table(results: dict[str, dict]) -> str:
    """Markdown: per dataset, the paper's numbers beside ours, or why it was not run.

    ``results`` maps a dataset to a :func:`train_and_evaluate` metrics dict or to
    ``{"not_run": reason}``.
    """
    lines = ["# The paper's net (784, 32, 16, 10) ReLU, trained with 0.2-rescaled copies", ""]
    for name, m in results.items():
        lines += [f"## {name}", ""]
        if "not_run" in m:
            lines += [f"Not run: {m['not_run']}", ""]
            continue
        lines += [f"Data: {m['data_source']}; recipe `{m['config']}`.", "",
                  *paper.comparison_rows(name, _as_report(m)), "",
                  f"Test accuracy (original / x0.2): {pct(m['test']['accuracy'])} / "
                  f"{pct(m['test']['accuracy_rescaled'])}; training {m['train_time_s']:.1f} s; "
                  f"checkpoint `{m['checkpoint']}`.", ""]
    return "\n".join(lines)


def write_training_results(out: Path, results: dict[str, dict]) -> Path:
    """``out/results.json`` and ``out/results.md`` of :func:`paper_training_table`."""
    out.mkdir(parents=True, exist_ok=True)
    slim = {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in results.items()}
    _atomic_text(out / "results.json", _checkpoint.to_json({"results": slim}))
    _atomic_text(out / "results.md", paper_training_table(results))
    return out / "results.md"


def run_train_paper(out_dir, *, data_dir=None, datasets=("mnist", "fashion_mnist"),
                    epochs: int | None = None, seed: int = 0, source: str = "auto",
                    limit: int | None = None, progress: bool = True) -> dict[str, dict]:
    """:func:`train_and_evaluate` with each dataset's recipe; checkpoints in
    ``out_dir/<dataset>``, the table in ``out_dir/results.{json,md}``.

    Returns ``{dataset: metrics or {"not_run": reason}}``.
    """
    out = prepare_out(out_dir, figures=False)
    results = {}
    for name in [d.strip() for d in datasets if d.strip()]:
        try:
            results[name] = train_and_evaluate(
                name, DEFAULT_ARCH, config_for(name, epochs=epochs, seed=seed), data_dir=data_dir,
                out_dir=out / name, source=source, limit=limit, progress=progress)
        except DatasetNotFoundError as err:
            results[name] = {"not_run": str(err)}
        print(f"{name}: " + ("not run" if "not_run" in results[name] else
                             f"null dim {results[name]['null_space_dim']}, train accuracy "
                             f"{pct(results[name]['train']['accuracy'])}"), flush=True)
    write_training_results(out, results)
    return results
