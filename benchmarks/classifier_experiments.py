"""Architecture and hyper-parameter comparison behind the shipped classifier config.

Trains each variant on the train split, reports dev figures and nlp.pipe speed.
Run: .venv/bin/python benchmarks/classifier_experiments.py [variant ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from mailbot.classifier import CONFIG_PATH
from mailbot.classifier.corpus import load_corpus, split
from mailbot.classifier.model import Classifier
from mailbot.classifier.train import text_of, train

HERE = Path(__file__).resolve().parent
VARIANTS: dict[str, tuple[Path, dict[str, object]]] = {
    "shipped (bow, bigrams)": (CONFIG_PATH, {}),
    "bow, unigrams": (CONFIG_PATH, {"components.textcat.model.ngram_size": 1}),
    "bow, trigrams": (CONFIG_PATH, {"components.textcat.model.ngram_size": 3}),
    "bow, dropout 0.2": (CONFIG_PATH, {"training.dropout": 0.2}),
    "bow, learn rate 0.001": (CONFIG_PATH, {"training.optimizer.learn_rate": 0.001}),
    "safeguarding with bigrams": (CONFIG_PATH,
                                  {"components.safeguarding.model.ngram_size": 2}),
    "ensemble (tok2vec + bow)": (HERE / "configs" / "ensemble.cfg", {}),
    "ensemble, learn rate 0.001": (HERE / "configs" / "ensemble.cfg",
                                   {"training.optimizer.learn_rate": 0.001}),
}


def main() -> None:
    names = sys.argv[1:] or list(VARIANTS)
    _, dev = split(load_corpus())
    texts = [text_of(e) for e in dev] * 5
    for name in names:
        cfg, overrides = VARIANTS[name]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model"
            result = train(config_path=cfg, output=out, overrides=overrides,
                           progress=lambda _m: None)
            clf = Classifier.load(out)
            t0 = time.perf_counter()
            list(clf.classify_many(texts))
            rate = len(texts) / (time.perf_counter() - t0)
        d = result.dev
        print(json.dumps({
            "variant": name, "train_seconds": round(result.seconds, 1),
            "macro_f1": d.macro_f1,
            "recall": {k: v.recall for k, v in d.per_class.items()},
            "safeguarding_recall": d.safeguarding.recall if d.safeguarding else None,
            "safeguarding_precision": d.safeguarding.precision if d.safeguarding else None,
            "safeguarding_threshold": result.safeguarding_threshold,
            "docs_per_second": round(rate),
        }), flush=True)


if __name__ == "__main__":
    main()
