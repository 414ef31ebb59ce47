"""Precision, recall, F1 and the confusion matrix, as the eval command and benchmarks report them.

Written here rather than taken from scikit-learn: it is a dozen lines, and scikit-learn would
be the largest dependency of the package for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Report:
    labels: tuple[str, ...]
    per_class: dict[str, ClassScores]
    macro_f1: float
    accuracy: float
    confusion: dict[str, dict[str, int]]  # gold -> predicted -> count
    safeguarding: ClassScores | None

    def as_dict(self) -> dict[str, object]:
        return {
            "per_class": {k: vars(v) for k, v in self.per_class.items()},
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "confusion": self.confusion,
            "safeguarding": vars(self.safeguarding) if self.safeguarding else None,
        }


def _scores(tp: int, fp: int, fn: int) -> ClassScores:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return ClassScores(round(p, 4), round(r, 4), round(f, 4), tp + fn)


def report(
    labels: Sequence[str],
    gold: Sequence[str],
    predicted: Sequence[str],
    gold_flags: Sequence[bool] | None = None,
    predicted_flags: Sequence[bool] | None = None,
) -> Report:
    confusion = {g: {p: 0 for p in labels} for g in labels}
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    per_class = {}
    for label in labels:
        tp = confusion[label][label]
        fp = sum(confusion[g][label] for g in labels if g != label)
        fn = sum(confusion[label][p] for p in labels if p != label)
        per_class[label] = _scores(tp, fp, fn)
    present = [label for label in labels if per_class[label].support]
    macro = sum(per_class[lb].f1 for lb in present) / len(present) if present else 0.0
    correct = sum(confusion[lb][lb] for lb in labels)
    sg = None
    if gold_flags is not None and predicted_flags is not None:
        pairs = list(zip(gold_flags, predicted_flags, strict=True))
        sg = _scores(
            sum(g and p for g, p in pairs),
            sum(p and not g for g, p in pairs),
            sum(g and not p for g, p in pairs),
        )
    return Report(
        labels=tuple(labels),
        per_class=per_class,
        macro_f1=round(macro, 4),
        accuracy=round(correct / len(gold), 4) if gold else 0.0,
        confusion=confusion,
        safeguarding=sg,
    )


def format_report(r: Report) -> str:
    lines = [f"{'label':<16}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}"]
    for label, s in r.per_class.items():
        lines.append(f"{label:<16}{s.precision:>10.3f}{s.recall:>8.3f}{s.f1:>8.3f}{s.support:>9}")
    lines.append(f"{'macro-F1':<16}{r.macro_f1:>26.3f}")
    lines.append(f"{'accuracy':<16}{r.accuracy:>26.3f}")
    if r.safeguarding:
        s = r.safeguarding
        lines.append(
            f"{'safeguarding':<16}{s.precision:>10.3f}{s.recall:>8.3f}{s.f1:>8.3f}{s.support:>9}"
        )
    lines.append("")
    lines.append("confusion (rows: gold, columns: predicted)")
    short = [lb[:10] for lb in r.labels]
    lines.append(" " * 16 + "".join(f"{s:>12}" for s in short))
    for g in r.labels:
        lines.append(f"{g:<16}" + "".join(f"{r.confusion[g][p]:>12}" for p in r.labels))
    return "\n".join(lines)
