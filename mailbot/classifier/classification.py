"""What the classifier says about a text, without the classifier.

Kept apart from ``model`` (which imports spaCy) so that code that only passes readings
around, such as the worker whose parse-ahead child does the classifying, does not load spaCy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailbot.classifier import MODEL_DIR


class ModelMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Classification:
    label: str
    confidence: float
    safeguarding: bool
    needs_triage: bool
    safeguarding_score: float
    cues: tuple[str, ...] = ()


def require_model(path: Path = MODEL_DIR) -> None:
    """Fail now (``ModelMissing``) rather than at the first message if no model is there."""
    if not (path / "config.cfg").is_file():
        raise ModelMissing(f"no trained classifier at {path}; run `mailbot train` to build it")
