"""Training the shipped pipeline from the corpus and ``config.cfg``, reproducibly.

spaCy's own ``spacy train`` feeds every component the same gold ``doc.cats``, and its exclusive
text classifier refuses an example whose cats hold two 1.0 values, which is what a complaint
with the safeguarding flag would be. So this loop updates each component with its own labels;
everything else (architecture, optimiser, seed) comes from the config.

The safeguarding threshold is calibrated for recall on a slice of the training split (never on
dev), so the dev figures stay an honest estimate.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spacy import util
from spacy.language import Language
from spacy.training import Example as SpacyExample

from mailbot.classifier import CONFIG_PATH, CORPUS_DIR, LABELS, MODEL_DIR, SAFEGUARDING
from mailbot.classifier.corpus import Example, load_corpus, split
from mailbot.classifier.metrics import Report, report
from mailbot.classifier.model import SETTINGS_FILE, Classifier
from mailbot.classifier.text import classifier_text_from_body

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    dev: Report
    train_size: int
    dev_size: int
    epochs: int
    safeguarding_threshold: float
    seconds: float


def text_of(example: Example) -> str:
    return classifier_text_from_body(example.subject, example.body)


def evaluate(classifier: Classifier, examples: Sequence[Example]) -> Report:
    results = list(classifier.classify_many(text_of(e) for e in examples))
    return report(
        LABELS,
        [e.label for e in examples],
        [r.label for r in results],
        [e.safeguarding for e in examples],
        [r.safeguarding for r in results],
    )


def _fit(
    config: Any, train_set: Sequence[Example], dev_set: Sequence[Example], out: Path,
    progress: Progress,
) -> int:
    """Train on ``train_set``, keep the epoch that does best on ``dev_set``; return it."""
    tcfg = config["training"]
    seed = int(tcfg["seed"])
    util.fix_random_seed(seed)
    rng = random.Random(seed)
    nlp: Language = util.load_model_from_config(config, auto_fill=True, validate=True)
    kind = [
        SpacyExample.from_dict(nlp.make_doc(text_of(e)),
                               {"cats": {lb: float(lb == e.label) for lb in LABELS}})
        for e in train_set
    ]
    flag = [
        SpacyExample.from_dict(nlp.make_doc(text_of(e)),
                               {"cats": {SAFEGUARDING: float(e.safeguarding)}})
        for e in train_set
    ]
    positives = [x for x, e in zip(flag, train_set, strict=True) if e.safeguarding]
    flag += positives * (int(tcfg.get("safeguarding_oversample", 1)) - 1)
    optimizer = nlp.initialize(lambda: kind)

    best_kind: tuple[float, int] | None = None
    best_flag: tuple[float, int] | None = None
    patience, max_epochs = int(tcfg["patience"]), int(tcfg["max_epochs"])
    dropout, batch_size = float(tcfg["dropout"]), int(tcfg["batch_size"])
    flag_dir = out.with_name(out.name + "-flag")
    for epoch in range(1, max_epochs + 1):
        rng.shuffle(kind)
        rng.shuffle(flag)
        losses: dict[str, float] = {}
        for batch in util.minibatch(kind, size=batch_size):
            nlp.update(batch, drop=dropout, sgd=optimizer, losses=losses, exclude=["safeguarding"])
        for batch in util.minibatch(flag, size=batch_size):
            nlp.update(batch, drop=dropout, sgd=optimizer, losses=losses, exclude=["textcat"])
        with nlp.use_params(optimizer.averages):
            results = list(Classifier(nlp, use_rules=False).classify_many(
                text_of(e) for e in dev_set))
            dev = report(LABELS, [e.label for e in dev_set], [r.label for r in results])
            # The two components are independent; each keeps its own best epoch. The kind is
            # chosen on complaint recall plus macro-F1, the flag on its average precision.
            kind_score = dev.macro_f1 + dev.per_class["complaint"].recall
            flag_score = average_precision(
                [e.safeguarding for e in dev_set], [r.safeguarding_score for r in results])
            if best_kind is None or kind_score > best_kind[0]:
                best_kind = (kind_score, epoch)
                _save(nlp, out)
            if best_flag is None or flag_score > best_flag[0]:
                best_flag = (flag_score, epoch)
                _save(nlp, flag_dir)
        progress(
            f"epoch {epoch:>2}  loss textcat {losses.get('textcat', 0):8.3f}  "
            f"safeguarding {losses.get('safeguarding', 0):8.3f}  macro-F1 {dev.macro_f1:.3f}  "
            f"complaint recall {dev.per_class['complaint'].recall:.3f}  "
            f"safeguarding AP {flag_score:.3f}"
        )
        if epoch - max(best_kind[1], best_flag[1]) >= patience:
            break
    assert best_kind is not None and best_flag is not None
    # Put the best safeguarding weights into the pipeline that has the best kind weights.
    final = util.load_model(out)
    final.remove_pipe("safeguarding")
    final.add_pipe("safeguarding", source=util.load_model(flag_dir))
    shutil.rmtree(out)
    shutil.rmtree(flag_dir)
    final.to_disk(out)
    progress(f"kept textcat from epoch {best_kind[1]}, safeguarding from epoch {best_flag[1]}")
    return best_kind[1]


def _save(nlp: Language, path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    nlp.to_disk(path)


def average_precision(gold: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the precision-recall curve: how well the scores rank true flags first."""
    ranked = sorted(zip(scores, gold, strict=True), key=lambda x: -x[0])
    positives = sum(gold)
    if not positives:
        return 0.0
    hits, total = 0, 0.0
    for i, (_, g) in enumerate(ranked, 1):
        if g:
            hits += 1
            total += hits / i
    return total / positives


def calibrate_safeguarding(
    classifier: Classifier, examples: Sequence[Example], target_recall: float
) -> float:
    """The highest threshold whose recall (cue phrases included) reaches ``target_recall``."""
    docs = [d for d, e in zip(classifier.nlp.pipe(text_of(e) for e in examples), examples,
                              strict=True) if e.safeguarding]
    if not docs:
        return classifier.safeguarding_threshold
    for t in [x / 100 for x in range(50, 1, -1)]:
        classifier.safeguarding_threshold = t
        caught = sum(1 for d in docs if classifier.result(d).safeguarding)
        if caught / len(docs) >= target_recall:
            return t
    return 0.02


def _calibration_slice(example: Example) -> bool:
    digest = hashlib.sha256((example.body + "\x01calibration").encode()).digest()
    return digest[0] % 5 == 0


def train(
    corpus_dir: Path = CORPUS_DIR,
    output: Path = MODEL_DIR,
    config_path: Path = CONFIG_PATH,
    seed: int | None = None,
    progress: Progress = print,
    overrides: dict[str, object] | None = None,
) -> TrainResult:
    started = time.perf_counter()
    overrides = dict(overrides or {})
    if seed is not None:
        overrides["system.seed"] = seed
    config = util.load_config(config_path, overrides=overrides, interpolate=True)
    target = float(config["training"].get("safeguarding_target_recall", 0.98))

    examples = load_corpus(corpus_dir)
    train_set, dev_set = split(examples)
    progress(f"corpus: {len(examples)} examples, {len(train_set)} train, {len(dev_set)} dev")

    with tempfile.TemporaryDirectory() as tmp:
        fit_part = [e for e in train_set if not _calibration_slice(e)]
        cal_part = [e for e in train_set if _calibration_slice(e)]
        progress(f"calibrating the safeguarding threshold on {len(cal_part)} training examples")
        _fit(config, fit_part, cal_part, Path(tmp) / "cal", lambda _m: None)
        threshold = calibrate_safeguarding(Classifier.load(Path(tmp) / "cal"), cal_part, target)
        progress(f"safeguarding threshold {threshold:.2f} (recall target {target})")

        staged = Path(tmp) / "model"
        epoch = _fit(config, train_set, dev_set, staged, progress)
        (staged / SETTINGS_FILE).write_text(json.dumps(
            {"safeguarding_threshold": threshold, "best_epoch": epoch,
             "corpus_examples": len(examples)}, indent=2) + "\n")
        if output.exists():
            shutil.rmtree(output)
        shutil.copytree(staged, output)
    final = evaluate(Classifier.load(output), dev_set)
    progress(f"kept epoch {epoch}; saved to {output}")
    return TrainResult(final, len(train_set), len(dev_set), epoch, threshold,
                       time.perf_counter() - started)
