"""The paper's numbers (Li & Short, Sec. 4), each with the quantity and the set it is on.

One table for every report that puts the paper beside nsjax.  Each entry names the exact
quantity and the images it was measured on, as the paper's text states them, and the key
of the nsjax report that measures the same quantity on the same kind of set:

* Sec. 4.1 (MNIST): "prediction accuracy of 99.79 % on the original training data. For
  the original training data it correctly predicted, the average confidence level is
  99.98 %. [...] on the rescaled training data [...] 99.78 % with an average confidence of
  99.77 % on correctly predicted data. [...] a 752-dimensional null space."  Then "we
  filter out only the correctly predicted images [...] 50000 images, with each class
  having 5,000 examples", right at both scales.
* Sec. 4.2 (Fashion-MNIST): "a new dataset comprising both the original and rescaled
  images (also scaled by a factor of 0.2) that are predicted correctly. This new dataset
  has an average confidence of 99.74 % for original images and 97.22 % for the rescaled
  images": confidences over the FILTERED training set (right at both scales), not over the
  images right at one scale.
* Fig. 5a / Fig. 7: the stego image and ``0.2 H`` are both "shirt" at 86.4 %, ``0.2 H``
  "T-shirt/top" at 13.4 %.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PaperValue", "PAPER", "paper_values", "comparison_rows", "verdict"]


class PaperValue(NamedTuple):
    """One number of the paper.

    Attributes:
      value: as printed (fractions for percentages).
      quantity: what is measured.
      measured_on: the set of images it is measured on.
      where: section or figure of the paper.
      report_key: dotted key of the nsjax experiment report holding the same quantity.
    """

    value: float | int
    quantity: str
    measured_on: str
    where: str
    report_key: str


_NULL = "dim Null(W1) of the (784, 32, 16, 10) ReLU net"
_CONF = "mean max-softmax confidence"

PAPER: dict[str, dict[str, PaperValue]] = {
    "mnist": {
        "null_space_dim": PaperValue(752, _NULL, "-", "Sec. 4.1", "null_space_dim"),
        "accuracy": PaperValue(0.9979, "accuracy", "original training images", "Sec. 4.1",
                               "train_eval.accuracy"),
        "confidence_correct": PaperValue(
            0.9998, _CONF, "original training images predicted correctly", "Sec. 4.1",
            "train_eval.mean_confidence_correct"),
        "accuracy_rescaled": PaperValue(0.9978, "accuracy", "0.2-rescaled training images",
                                        "Sec. 4.1", "train_eval.accuracy_rescaled"),
        "confidence_correct_rescaled": PaperValue(
            0.9977, _CONF, "0.2-rescaled training images predicted correctly", "Sec. 4.1",
            "train_eval.mean_confidence_correct_rescaled"),
        "filtered_set_size": PaperValue(
            50000, "images kept (5,000 per class)",
            "training images predicted correctly at scale 1 and 0.2", "Sec. 4.1",
            "paper_set.n"),
    },
    "fashion_mnist": {
        "null_space_dim": PaperValue(752, _NULL, "-", "Sec. 4.2", "null_space_dim"),
        "filtered_confidence": PaperValue(
            0.9974, _CONF + " of the original images",
            "training images predicted correctly at scale 1 and 0.2 (the filtered set)",
            "Sec. 4.2", "filtered_train.mean_confidence"),
        "filtered_confidence_rescaled": PaperValue(
            0.9722, _CONF + " of the 0.2-rescaled images",
            "training images predicted correctly at scale 1 and 0.2 (the filtered set)",
            "Sec. 4.2", "filtered_train.mean_confidence_rescaled"),
    },
    "emnist_balanced": {},
    "cifar10": {},
}


def paper_values(dataset: str) -> dict[str, PaperValue]:
    """The paper's numbers for ``dataset`` (empty when the paper gives none)."""
    return dict(PAPER.get(dataset, {}))


def _lookup(report: dict, dotted: str):
    value = report
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int) or float(v) > 1:
        return f"{int(v):,}"
    return f"{100 * float(v):.2f} %"


def verdict(paper_value, ours, *, tolerance_pp: float = 0.2) -> str:
    """``"match"`` for equal counts or percentages within ``tolerance_pp`` points, else the
    signed difference (``"+0.31 pp"``, ``"-1,200"``); ``"n/a"`` when ours is missing."""
    if ours is None:
        return "n/a"
    if isinstance(paper_value, int):
        diff = int(ours) - paper_value
        return "match" if diff == 0 else f"{diff:+,}"
    diff = 100 * (float(ours) - float(paper_value))
    return "match" if abs(diff) <= tolerance_pp else f"{diff:+.2f} pp"


def comparison_rows(dataset: str, report: dict) -> list[str]:
    """Markdown table: quantity, set, paper, ours and a verdict, for every paper number of
    ``dataset`` (:func:`verdict`: percentages within 0.2 points count as a match).

    ``report`` is an experiment report holding the ``report_key`` of each entry; a missing
    key shows as ``n/a``.
    """
    values = paper_values(dataset)
    if not values:
        return [f"The paper gives no numbers for {dataset}."]
    rows = ["| quantity | measured on | paper | ours | verdict | where |",
            "|---|---|---|---|---|---|"]
    for v in values.values():
        ours = _lookup(report, v.report_key)
        rows.append(f"| {v.quantity} | {v.measured_on} | {_fmt(v.value)} | {_fmt(ours)} | "
                    f"{verdict(v.value, ours)} | {v.where} |")
    return rows
