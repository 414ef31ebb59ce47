"""Classifier speed and memory: model load time, nlp.pipe throughput, resident memory.

Run: .venv/bin/python benchmarks/classifier_bench.py [--docs 1000] [--words 150]
Each figure is printed; benchmarks/README.md records them with the machine they came from.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import time

from mailbot.classifier.corpus import load_corpus
from mailbot.classifier.model import Classifier
from mailbot.classifier.train import text_of


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emails(n: int, words: int) -> list[str]:
    """n texts of about `words` words each, made from corpus text (joined to reach the length)."""
    rng = random.Random(7)
    pool = [text_of(e) for e in load_corpus()]
    out = []
    for _ in range(n):
        parts: list[str] = []
        while sum(len(p.split()) for p in parts) < words:
            parts.append(rng.choice(pool))
        out.append(" ".join(" ".join(parts).split()[:words]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--words", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    base = rss_mb()
    t0 = time.perf_counter()
    clf = Classifier.load()
    load_s = time.perf_counter() - t0
    texts = emails(args.docs, args.words)
    list(clf.classify_many(texts[:50]))  # warm up
    rates = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        n = sum(1 for _ in clf.classify_many(texts))
        rates.append(n / (time.perf_counter() - t0))
    print(json.dumps({
        "load_seconds": round(load_s, 3),
        "docs": args.docs,
        "words_per_doc": args.words,
        "docs_per_second_median": round(statistics.median(rates)),
        "docs_per_second_min": round(min(rates)),
        "rss_mb_before_load": round(base, 1),
        "rss_mb_with_model": round(rss_mb(), 1),
    }, indent=2))


if __name__ == "__main__":
    main()
