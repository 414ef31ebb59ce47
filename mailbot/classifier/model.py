"""Loading the shipped pipeline and classifying text with it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import spacy
from spacy.attrs import ORTH
from spacy.language import Language
from spacy.tokenizer import Tokenizer
from spacy.tokens import Doc

from mailbot.classifier import LABELS, MODEL_DIR, SAFEGUARDING
from mailbot.classifier.classification import Classification, ModelMissing, require_model
from mailbot.classifier.rules import CueScreen, build_matcher, cues

__all__ = ["Classification", "Classifier", "ModelMissing"]

#: mailbot's own settings stored beside the spaCy pipeline (the calibrated threshold).
SETTINGS_FILE = "mailbot.json"
#: The score needed when the text is about safeguarding as a topic (training, FOI, policy).
TOPIC_THRESHOLD = 0.8


#: spaCy's English special cases that map a whitespace character to itself (see below).
WHITESPACE_RULES = ("\t", "\n", " ")


def without_whitespace_rules(nlp: Language) -> Language:
    """``nlp`` with the tokenizer's special cases for a lone tab, newline or space removed.

    Each maps the character to a one-token ``ORTH`` of itself, which is what the tokenizer makes
    of such a whitespace run without the rule (no prefix, suffix, infix or URL pattern matches
    it). Kept, they cost about two-thirds of tokenizing a message: once a special case has
    matched in a text, the tokenizer caches none of that text's later spans, so after the first
    line break every word goes through the prefix and suffix searches again; and the rule for a
    space also puts every run of spaces through the special-case matcher. Without them the
    tokens (text, whitespace, offset, norm, lowercase) are identical for every input (a property
    ``tests/test_classifier.py`` checks on the training corpus and on generated text), so the
    model's scores cannot change. A rule is dropped only when it is exactly that one ``ORTH``
    (the no-break space's rule also sets a norm, and stays). Measured on the ingest benchmark's
    1,000 message texts: 0.68 s to tokenize with the rules, 0.24 s without (benchmarks/README.md).
    """
    tokenizer = nlp.tokenizer
    if isinstance(tokenizer, Tokenizer):
        rules = tokenizer.rules or {}
        noop = {ws for ws in WHITESPACE_RULES if rules.get(ws) == [{ORTH: ws}]}
        if noop:
            tokenizer.rules = {orth: tokens for orth, tokens in rules.items() if orth not in noop}
    return nlp


class Classifier:
    """The kind of a message, its confidence, and the safeguarding flag.

    Below ``threshold`` confidence the label is still given, and ``needs_triage`` is set so a
    person looks at it. The safeguarding flag is raised by the trained score or by a cue phrase.
    """

    def __init__(
        self,
        nlp: Language,
        threshold: float = 0.6,
        safeguarding_threshold: float = 0.35,
        use_rules: bool = True,
    ) -> None:
        self.nlp = nlp
        self.threshold = threshold
        self.safeguarding_threshold = safeguarding_threshold
        self.matcher = build_matcher(nlp) if use_rules else None
        self.screen = CueScreen(nlp) if use_rules else None

    @classmethod
    def load(cls, path: Path = MODEL_DIR, threshold: float = 0.6) -> Classifier:
        require_model(path)
        settings_path = path / SETTINGS_FILE
        stored = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
        return cls(
            without_whitespace_rules(spacy.load(path)),
            threshold=threshold,
            safeguarding_threshold=float(stored.get("safeguarding_threshold", 0.35)),
        )

    def result(self, doc: Doc) -> Classification:
        scores = {label: float(doc.cats.get(label, 0.0)) for label in LABELS}
        label = max(scores, key=lambda k: scores[k])
        confidence = scores[label]
        sg_score = float(doc.cats.get(SAFEGUARDING, 0.0))
        found: tuple[str, ...] = ()
        topic = False
        if self.matcher is not None:
            phrases, topic = cues(self.matcher, doc)
            found = tuple(phrases)
        threshold = TOPIC_THRESHOLD if topic else self.safeguarding_threshold
        return Classification(
            label=label,
            confidence=round(confidence, 4),
            safeguarding=sg_score >= threshold or bool(found),
            needs_triage=confidence < self.threshold,
            safeguarding_score=round(sg_score, 4),
            cues=found,
        )

    def classify(self, text: str) -> Classification:
        return self.result(self.nlp(text))

    def cue_phrases(self, text: str) -> tuple[str, ...]:
        """Only the safeguarding cue phrases in ``text``: the tokenizer and the phrase matcher,
        without the text classifiers (a third of the cost), for when the kind is known; and
        not even those when the ``CueScreen`` rules every phrase out, as it does for most."""
        if self.matcher is None or self.screen is None or not self.screen.may_match(text):
            return ()
        phrases, _ = cues(self.matcher, self.nlp.make_doc(text))
        return tuple(phrases)

    def classify_many(
        self, texts: Iterable[str], batch_size: int = 256
    ) -> Iterator[Classification]:
        for doc in self.nlp.pipe(texts, batch_size=batch_size):
            yield self.result(doc)
