"""What every request needs, made once per application: sessions, clock, composer, classifier.

The classifier takes a fraction of a second to load; it is loaded once per process, on the first
phone call (every call is read for safeguarding risk), so that the API starts quickly and staff
requests never wait for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, cast

from flask import current_app

from mailbot.bootstrap import App, utcnow
from mailbot.services.phone_cases import PhoneContext

if TYPE_CHECKING:
    from mailbot.classifier.model import Classification, Classifier


@dataclass
class WebState:
    core: App
    secret: str
    phone: PhoneContext
    clock: Callable[[], datetime] = utcnow
    _classifier: Classifier | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def classifier(self) -> Classifier:
        if self._classifier is None:
            with self._lock:
                if self._classifier is None:
                    from mailbot.classifier.model import Classifier

                    threshold = self.core.settings.policy.triage_confidence_threshold
                    self._classifier = Classifier.load(threshold=threshold)
        return self._classifier

    def classify(self, summary: str, details: str) -> Classification:
        return self.classifier().classify(_text(summary, details))

    def cue_phrases(self, summary: str, details: str) -> tuple[str, ...]:
        return self.classifier().cue_phrases(_text(summary, details))


def _text(summary: str, details: str) -> str:
    """A call as the classifier reads an email: the summary as subject, the details as body."""
    from mailbot.classifier.text import classifier_text

    return classifier_text(summary, details)


def state() -> WebState:
    return cast(WebState, current_app.extensions["mailbot"])
