"""The shipped classifier: corpus hygiene, behaviour on unseen mail, and the CLI around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.attrs import NORM, ORTH

from mailbot.classifier import LABELS, MODEL_DIR
from mailbot.classifier.corpus import is_dev, load_corpus
from mailbot.classifier.model import WHITESPACE_RULES, Classifier, without_whitespace_rules
from mailbot.classifier.rules import CUE_PHRASES, CueScreen, cues
from mailbot.classifier.text import classifier_text, classifier_text_from_body


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load()


def test_corpus_is_large_labelled_and_split_without_leaks() -> None:
    corpus = load_corpus()
    assert len(corpus) >= 1000
    assert {e.label for e in corpus} == set(LABELS)
    bodies = [e.body for e in corpus]
    assert len(set(bodies)) == len(bodies), "duplicate bodies would leak between splits"
    dev = [e for e in corpus if is_dev(e)]
    assert 0.15 < len(dev) / len(corpus) < 0.25
    for label in LABELS:
        assert sum(e.label == label for e in dev) >= 30, label
    assert sum(e.safeguarding for e in dev) >= 20


def test_classifier_text_drops_quoted_history_and_keeps_forwarded_praise() -> None:
    reply = classifier_text_from_body(
        "Re: your reference CSQ-2026-00012",
        "Still no call back.\n\nOn Mon, 3 Mar 2026 at 10:14, Team <t@council.example> wrote:\n"
        "> Thank you, we have received your compliment.\n",
    )
    assert "still no call back" in reply and "compliment" not in reply
    forward = classifier_text_from_body(
        "Fwd: thanks",
        "For the file.\n\n---------- Forwarded message ---------\nFrom: Ann <a@example.org>\n"
        "Date: Mon, 3 Mar 2026 at 10:14\nSubject: thanks\n\nYou were wonderful with Dad.\n",
    )
    assert "wonderful with dad" in forward


@pytest.mark.parametrize(
    ("subject", "body", "label"),
    [
        ("Re: assessment",
         "It is now five weeks since the OT said she would phone to arrange the rails. "
         "Nobody has been in touch and my husband is still struggling with the stairs. "
         "I would like to know why and when this will happen.", "complaint"),
        ("invoice",
         "We have been billed twice for September's day centre sessions and when I rang "
         "finance they said it was not their problem. Please refund the second payment.",
         "complaint"),
        ("Thank you",
         "Just a note to say the social worker who helped us move Dad into his new flat was "
         "amazing. She made a horrible time so much easier.", "compliment"),
        ("Maple Court",
         "When I visited my mother at Maple Court on Sunday she had not been given a drink all "
         "afternoon, her call bell was out of reach and her medication was still on the tray "
         "from the morning round.", "quality_concern"),
        ("Carers assessment",
         "Could you let me know how I get a carer's assessment? I look after my brother and "
         "would like to know what help is available. Many thanks.", "other"),
    ],
)
def test_unseen_messages_are_sorted_as_a_complaints_officer_would(
    classifier: Classifier, subject: str, body: str, label: str
) -> None:
    result = classifier.classify(classifier_text(subject, body))
    assert result.label == label, result


def test_safeguarding_cue_raises_the_flag(classifier: Classifier) -> None:
    r = classifier.classify(classifier_text(
        "worried", "The carer slapped her yesterday and she is scared of him coming back."))
    assert r.safeguarding
    calm = classifier.classify(classifier_text(
        "training", "Can I book two places on the safeguarding adults course in March?"))
    assert not calm.safeguarding


@pytest.mark.parametrize("text", [
    "The carer hits him and he has bruises on his arms.",
    "My mother was left without food or water all weekend and nobody came.",
    "The bins were not collected again this week.",
    "",
])
def test_cue_phrases_alone_match_the_full_reading(classifier: Classifier, text: str) -> None:
    """The webhook asks only for cue phrases when staff chose the kind: they must be the ones
    the full reading finds."""
    assert classifier.cue_phrases(text) == classifier.classify(text).cues


def test_the_cue_screen_never_hides_a_phrase_the_matcher_finds(classifier: Classifier) -> None:
    """The screen may only say "no cue here" where the phrase matcher finds none: checked on
    every phrase (in capitals, with odd spacing, across a line break) and on every text of the
    training corpus."""
    assert classifier.matcher is not None
    screen = CueScreen(classifier.nlp)
    texts = [classifier_text(e.subject, e.body) for e in load_corpus()]
    texts += [f"Caller said: {p.upper()}, twice." for p in CUE_PHRASES]
    texts += [f"Caller said: {p.replace(' ', '  ')}." for p in CUE_PHRASES]
    texts += [f"the carer {p.replace(' ', chr(10), 1)}\nyesterday" for p in CUE_PHRASES]
    found = 0
    for text in texts:
        matched, _ = cues(classifier.matcher, classifier.nlp.make_doc(text))
        found += bool(matched)
        assert screen.may_match(text) or not matched, text
        assert classifier.cue_phrases(text) == tuple(matched), text
    assert found > len(CUE_PHRASES), "the texts must name cue phrases for this to mean much"
    assert not screen.may_match(classifier_text("No call back", "Nobody has called me back."))


@pytest.fixture(scope="module")
def shipped_tokenizer() -> spacy.tokenizer.Tokenizer:
    """The shipped pipeline's tokenizer exactly as it was trained, whitespace rules and all."""
    nlp = spacy.load(MODEL_DIR)
    assert all(ws in nlp.tokenizer.rules for ws in WHITESPACE_RULES)
    return nlp.tokenizer


def _tokens(doc: spacy.tokens.Doc) -> list[tuple[str, str, int, str, str]]:
    return [(t.text, t.whitespace_, t.idx, t.norm_, t.lower_) for t in doc]


def test_loaded_classifier_tokenizes_as_the_trained_pipeline(
    classifier: Classifier, shipped_tokenizer: spacy.tokenizer.Tokenizer
) -> None:
    """``Classifier.load`` drops the tokenizer's whitespace special cases for speed; every
    token must stay what the model was trained on, so its scores cannot move."""
    assert not any(ws in classifier.nlp.tokenizer.rules for ws in WHITESPACE_RULES)
    texts = [t for e in load_corpus()
             for t in (e.body, f"{e.subject}\n\n{e.body}", classifier_text(e.subject, e.body))]
    texts += ["a\tb", "a  b", "a \n b", "\n\n\nx\n", " \t\n ", "it's\nhere", ":)\n:("]
    for text in texts:
        assert _tokens(classifier.nlp.make_doc(text)) == _tokens(shipped_tokenizer(text)), text
    full = Classifier(spacy.load(MODEL_DIR), threshold=classifier.threshold,
                      safeguarding_threshold=classifier.safeguarding_threshold)
    sample = [classifier_text(e.subject, e.body) for e in load_corpus()[::7]]
    assert list(full.classify_many(sample)) == list(classifier.classify_many(sample))


_PIECES = ["a", "b", "it", "'s", "n't", ".", ",", "(", ")", ":)", "e.g.", "-", " ", "  ", "\t",
           "\n", "\r", "\x0b", "\x0c", "\xa0", "\u2028", "\u3000", "\n\n", " \n", "\t\n "]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40).map("".join))
def test_whitespace_rules_change_no_token_of_any_text(
    classifier: Classifier, shipped_tokenizer: spacy.tokenizer.Tokenizer, text: str
) -> None:
    assert _tokens(classifier.nlp.make_doc(text)) == _tokens(shipped_tokenizer(text))


def test_a_whitespace_rule_that_changes_a_token_is_kept() -> None:
    nlp = spacy.blank("en")
    nlp.tokenizer.add_special_case("\n", [{ORTH: "\n", NORM: "<nl>"}])
    without_whitespace_rules(nlp)
    assert nlp.tokenizer.rules["\n"] == [{ORTH: "\n", NORM: "<nl>"}]
    assert "\t" not in nlp.tokenizer.rules
    assert [t.norm_ for t in nlp.make_doc("a\nb")] == ["a", "<nl>", "b"]


def test_low_confidence_needs_triage(classifier: Classifier) -> None:
    strict = Classifier(classifier.nlp, threshold=0.999999)
    r = strict.classify(classifier_text("hello", "ok"))
    assert r.needs_triage and r.label in LABELS


def test_classify_jsonl_reports_bad_lines_and_keeps_order(cli, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text(
        '{"id": "a", "subject": "thank you", "body": "You were all wonderful with Mum."}\n'
        "this is not json\n"
        '{"id": "b", "subject": "no reply", "body": "Third email, still nobody has replied '
        'about the invoice error. Please sort this out."}\n'
        '{"id": "c", "subject": 5}\n'
        '{"id": 7, "subject": "", "body": "How do I apply for a blue badge?", "from": "x@y.z"}\n'
    )
    r = cli("classify", "--jsonl", str(data))
    lines = [json.loads(x) for x in r.out.splitlines()]
    assert [x["id"] for x in lines] == ["a", "b", 7]
    assert set(lines[0]) == {"id", "label", "confidence", "safeguarding"}
    assert [x["label"] for x in lines] == ["compliment", "complaint", "other"]
    assert "line 2" in r.err and "line 4" in r.err
    assert r.code == 1


def test_eval_reports_per_class_scores_and_confusion(cli, tmp_path: Path) -> None:
    data = tmp_path / "gold.jsonl"
    rows = [
        {"subject": "thanks", "body": "The reablement team were fantastic.", "label": "compliment"},
        {"subject": "", "body": "Nobody has called me back in three weeks, please sort it.",
         "label": "complaint"},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    r = cli("eval", str(data), "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert set(out["per_class"]) == set(LABELS)
    assert out["confusion"]["compliment"]["compliment"] == 1
    assert "macro_f1" in out
    text = cli("eval", str(data))
    assert "confusion" in text.out and "macro-F1" in text.out


def test_model_ships_inside_the_package() -> None:
    assert (MODEL_DIR / "config.cfg").is_file()
    assert (MODEL_DIR / "textcat" / "model").is_file()


def test_training_reproduces_the_shipped_model(tmp_path: Path, classifier: Classifier) -> None:
    """`mailbot train` with the committed corpus, config and seed gives the shipped model."""
    from mailbot.classifier.corpus import split
    from mailbot.classifier.train import text_of, train

    result = train(output=tmp_path / "model", progress=lambda _m: None)
    retrained = Classifier.load(tmp_path / "model")
    _, dev = split(load_corpus())
    texts = [text_of(e) for e in dev]
    for a, b in zip(classifier.classify_many(texts), retrained.classify_many(texts), strict=True):
        assert (a.label, a.safeguarding) == (b.label, b.safeguarding)
        assert abs(a.confidence - b.confidence) < 1e-6
        assert abs(a.safeguarding_score - b.safeguarding_score) < 1e-6
    assert result.safeguarding_threshold == classifier.safeguarding_threshold
