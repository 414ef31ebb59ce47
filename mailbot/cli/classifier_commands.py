"""``train``, ``classify`` and ``eval``: the classifier from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailbot.classifier import CORPUS_DIR, LABELS, MODEL_DIR
from mailbot.classifier.classification import ModelMissing
from mailbot.classifier.corpus import CorpusError, parse_line
from mailbot.classifier.metrics import format_report, report
from mailbot.cli.common import CommandError, add_json_flag, print_json, settings

if TYPE_CHECKING:  # spaCy loads when a command needs the model, not with the parser
    from mailbot.classifier.model import Classifier


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="rebuild the shipped classifier from the corpus (fixed seed)",
        description="Train the spaCy pipeline from mailbot/classifier/corpus and config.cfg.",
    )
    p.add_argument("--corpus", type=Path, default=CORPUS_DIR)
    p.add_argument("--output", type=Path, default=MODEL_DIR)
    p.add_argument("--seed", type=int, help="override the seed in config.cfg")
    add_json_flag(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser(
        "classify",
        help="classify .eml files or a JSONL file of messages",
        description=(
            "Classify messages. With --jsonl, each input line is "
            '{"id", "subject", "body"} (optional "from") and each output line is '
            '{"id", "label", "confidence", "safeguarding"}, in input order. Bad lines are '
            "reported on stderr with their line number and skipped; the exit code is then 1."
        ),
    )
    p.add_argument("files", nargs="*", type=Path, help=".eml files")
    p.add_argument("--jsonl", type=Path, help="a JSONL file of messages ('-' for stdin)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_classify)

    p = sub.add_parser(
        "eval",
        help="precision, recall, F1 and confusion matrix on a labelled JSONL file",
        description='Evaluate on JSONL lines {"id", "subject", "body", "label"} '
        '(optional "safeguarding": true/false).',
    )
    p.add_argument("file", type=Path)
    add_json_flag(p)
    p.set_defaults(handler=cmd_eval)


def _classifier() -> Classifier:
    from mailbot.classifier.model import Classifier

    try:
        return Classifier.load(threshold=settings().policy.triage_confidence_threshold)
    except ModelMissing as exc:
        raise CommandError(str(exc)) from exc


def cmd_train(args: argparse.Namespace) -> int:
    from mailbot.classifier.train import train

    try:
        result = train(args.corpus, args.output, seed=args.seed, progress=_stderr)
    except CorpusError as exc:
        raise CommandError(f"corpus: {exc}") from exc
    if args.json:
        print_json({"train_size": result.train_size, "dev_size": result.dev_size,
                    "epochs": result.epochs, "seconds": round(result.seconds, 1),
                    "dev": result.dev.as_dict()})
    else:
        print(format_report(result.dev))
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_classify(args: argparse.Namespace) -> int:
    if bool(args.files) == bool(args.jsonl):
        raise CommandError("give either .eml files or --jsonl FILE", exit_code=2)
    classifier = _classifier()
    if args.jsonl:
        return _classify_jsonl(classifier, args.jsonl)
    return _classify_files(classifier, args.files, args.json)


def _read_lines(path: Path) -> list[str]:
    try:
        if str(path) == "-":
            return sys.stdin.read().splitlines()
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CommandError(f"{path}: cannot read ({exc.strerror})") from exc


def _classify_jsonl(classifier: Classifier, path: Path) -> int:
    from mailbot.classifier.text import classifier_text_from_body

    good: list[tuple[str, str]] = []
    bad = 0
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        try:
            ex = parse_line(line, f"line {n}", need_label=False)
        except CorpusError as exc:
            print(f"mailbot: {path}: {exc}; skipped", file=sys.stderr)
            bad += 1
            continue
        ident = json.loads(line).get("id", n)
        good.append((ident, classifier_text_from_body(ex.subject, ex.body)))
    results = classifier.classify_many(text for _, text in good)
    for (ident, _), r in zip(good, results, strict=True):
        sys.stdout.write(json.dumps({"id": ident, "label": r.label, "confidence": r.confidence,
                                     "safeguarding": r.safeguarding}) + "\n")
    return 1 if bad else 0


def _classify_files(classifier: Classifier, files: list[Path], as_json: bool) -> int:
    from mailbot.classifier.text import classifier_text
    from mailbot.intake.parsing import UnparseableMessage, parse_message

    failures = 0
    rows = []
    for path in files:
        try:
            msg = parse_message(path.read_bytes())
        except OSError as exc:
            print(f"mailbot: {path}: cannot read ({exc.strerror})", file=sys.stderr)
            failures += 1
            continue
        except UnparseableMessage as exc:
            print(f"mailbot: {path}: not an email message ({exc})", file=sys.stderr)
            failures += 1
            continue
        forwarded = msg.forwarded.text if msg.forwarded else None
        r = classifier.classify(classifier_text(msg.subject, msg.new_text, forwarded))
        rows.append({"file": str(path), "label": r.label, "confidence": r.confidence,
                     "safeguarding": r.safeguarding, "needs_triage": r.needs_triage})
    if as_json:
        print_json(rows)
    else:
        for row in rows:
            flags = " ".join(k for k in ("safeguarding", "needs_triage") if row[k])
            print(f"{row['file']}: {row['label']} ({row['confidence']:.2f}) {flags}".rstrip())
    return 1 if failures else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mailbot.classifier.text import classifier_text_from_body

    classifier = _classifier()
    gold, texts, flags = [], [], []
    for n, line in enumerate(_read_lines(args.file), 1):
        if not line.strip():
            continue
        try:
            ex = parse_line(line, f"line {n}", need_label=True)
        except CorpusError as exc:
            raise CommandError(f"{args.file}: {exc}") from exc
        gold.append(ex.label)
        texts.append(classifier_text_from_body(ex.subject, ex.body))
        flags.append(ex.safeguarding)
    if not gold:
        raise CommandError(f"{args.file}: no examples")
    results = list(classifier.classify_many(texts))
    r = report(LABELS, gold, [x.label for x in results], flags, [x.safeguarding for x in results])
    if args.json:
        print_json(r.as_dict())
    else:
        print(format_report(r))
    return 0
