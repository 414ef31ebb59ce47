"""Phrases that signal someone may be at risk now, matched alongside the statistical flag.

The safeguarding flag must almost never be missed. The trained flag catches most cases; these
phrases catch the blunt ones it has not seen worded that way. Every phrase is specific to harm
happening (not "safeguarding training" or "abuse policy"), so adding recall costs little
precision; `benchmarks/README.md` reports both with and without the rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc

CUE_PHRASES: tuple[str, ...] = (
    # physical harm
    "hit her", "hit him", "hits her", "hits him", "hitting her", "hitting him", "slapped her",
    "slapped him", "slapping her", "slapping him", "punched her", "punched him", "pushed her",
    "pushed him", "shoved her", "shoved him", "kicked her", "kicked him", "grabbed her",
    "grabbed him", "rough handling", "handled roughly", "manhandled", "unexplained bruising",
    "unexplained bruises", "bruises on her", "bruises on his", "bruising on her",
    "bruising on his", "finger marks", "finger-mark", "burn marks",
    # restraint and confinement
    "locked in her room", "locked in his room", "locked her in", "locked him in",
    "tied to", "strapped into", "not allowed out", "won't let her out", "won't let him out",
    # neglect
    "left without food", "no food in", "not been fed", "hasn't eaten", "has not eaten",
    "left without water", "dehydrated", "left in soiled", "sitting in urine",
    "lying in urine", "soaked in urine", "covered in faeces", "left on the floor",
    "lying on the floor", "found on the floor", "not had her medication",
    "not had his medication", "missed her medication", "missed his medication",
    "no medication for", "pressure sore", "pressure sores", "grade 3", "grade 4",
    "nobody came", "no one came", "no-one came", "left alone all",
    # financial and psychological abuse
    "taking her money", "taking his money", "took her money", "took his money",
    "stealing from her", "stealing from him", "money missing", "money has gone missing",
    "bank card", "pin number", "cash missing", "scared of", "frightened of", "terrified of",
    "afraid of her carer", "afraid of his carer", "threatened her", "threatened him",
    "shouting at her", "shouting at him", "screamed at her", "screamed at him",
    "swore at her", "swore at him", "sexual", "inappropriately touched", "touched her",
)


#: Safeguarding as a topic rather than a person at risk: training, requests for information,
#: policy and newsletters. Without a cue phrase, such a message needs a much higher score.
TOPIC_PHRASES: tuple[str, ...] = (
    "training course", "safeguarding course", "safeguarding training", "level 1 training",
    "level 2 training", "level 3 training", "e-learning", "workshop", "webinar", "conference",
    "book a place", "book two places", "places on the", "freedom of information",
    "foi request", "under the freedom", "newsletter", "policy document", "annual report",
    "board minutes", "agenda", "terms of reference", "unsubscribe",
)


def build_matcher(nlp: Language, phrases: Iterable[str] = CUE_PHRASES) -> PhraseMatcher:
    matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
    matcher.add("SAFEGUARDING_CUE", [nlp.make_doc(p) for p in phrases])
    matcher.add("SAFEGUARDING_TOPIC", [nlp.make_doc(p) for p in TOPIC_PHRASES])
    return matcher


class CueScreen:
    """A quick test that a text cannot contain any of the cue phrases.

    Most texts name none. Where only the cue phrases are wanted (a phone call whose kind staff
    chose), spaCy's tokenizer and phrase matcher were the largest cost of the request after the
    database (0.2-0.4 ms of CPU); the screen answers "no cue phrase here" in about 20 us, and
    when it cannot rule a phrase out the matcher decides as before, so the cues found never
    change. (No library offers this pre-filter; spaCy's matcher needs the tokenized text.)

    Why "no" is always right: the matcher compares tokens' lowercase forms (``attr="LOWER"``),
    and a token is an exact span of the text, consecutive tokens separated by nothing or by
    whitespace. So a phrase tokenized as ``t1 ... tn`` can match only where the lowercased text
    holds ``t1``, optional whitespace, ``t2`` ... ``tn``: that is the pattern tried, and only
    when the phrase's longest token occurs in the text at all (a substring test, far quicker
    than a regular expression). The phrases are tokenized by the pipeline's own tokenizer, as
    the matcher's patterns are; ``tests/test_classifier.py`` checks the screen against the
    matcher on the training corpus.
    """

    def __init__(self, nlp: Language, phrases: Iterable[str] = CUE_PHRASES) -> None:
        self._checks: list[tuple[str, re.Pattern[str]]] = []
        for phrase in phrases:
            tokens = [t.lower_ for t in nlp.make_doc(phrase)]
            if tokens:
                pattern = re.compile(r"\s*".join(re.escape(t) for t in tokens))
                self._checks.append((max(tokens, key=len), pattern))

    def may_match(self, text: str) -> bool:
        """False when no phrase can match ``text``; True when the matcher must look."""
        text = text.lower()
        return any(key in text and pattern.search(text) for key, pattern in self._checks)


def cues(matcher: PhraseMatcher, doc: Doc) -> tuple[list[str], bool]:
    """The cue phrases found, and whether the text is about safeguarding as a topic."""
    found, topic = [], False
    for match_id, start, end in matcher(doc):
        if nlp_label(doc, match_id) == "SAFEGUARDING_TOPIC":
            topic = True
        else:
            found.append(doc[start:end].text)
    return found, topic


def nlp_label(doc: Doc, match_id: int) -> str:
    return str(doc.vocab.strings[match_id])
