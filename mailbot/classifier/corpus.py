"""The labelled corpus: loading, validation and the fixed train/dev split."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailbot.classifier import CORPUS_DIR, LABELS

#: One example in this many goes to the dev split, chosen by a hash of its text so the split is
#: stable when examples are added and training never sees a dev example.
DEV_EVERY = 5


@dataclass(frozen=True)
class Example:
    id: str
    subject: str
    body: str
    label: str
    safeguarding: bool
    sender: str | None = None


class CorpusError(ValueError):
    pass


def parse_line(line: str, where: str, need_label: bool) -> Example:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}: expected a JSON object")
    subject, body = obj.get("subject", ""), obj.get("body")
    if not isinstance(subject, str) or not isinstance(body, str):
        raise CorpusError(f"{where}: 'subject' and 'body' must be strings ('body' is required)")
    label = obj.get("label")
    if need_label and label not in LABELS:
        raise CorpusError(f"{where}: 'label' must be one of {', '.join(LABELS)}, not {label!r}")
    sender = obj.get("from")
    return Example(
        id=str(obj.get("id", where)),
        subject=subject,
        body=body,
        label=label if isinstance(label, str) else "",
        safeguarding=bool(obj.get("safeguarding", False)),
        sender=sender if isinstance(sender, str) else None,
    )


def read_jsonl(path: Path, need_label: bool = True) -> Iterator[Example]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                yield parse_line(line, f"{path.name}:{n}", need_label)


def load_corpus(directory: Path = CORPUS_DIR) -> list[Example]:
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise CorpusError(f"no *.jsonl files in {directory}")
    return [ex for f in files for ex in read_jsonl(f)]


def is_dev(example: Example) -> bool:
    digest = hashlib.sha256((example.subject + "\x00" + example.body).encode()).digest()
    return digest[0] % DEV_EVERY == 0


def split(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    train = [e for e in examples if not is_dev(e)]
    dev = [e for e in examples if is_dev(e)]
    return train, dev
