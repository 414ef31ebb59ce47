"""The spaCy pipeline that sorts messages into complaint, compliment, quality concern or other.

The trained pipeline ships in ``model/`` so that installing mailbot needs no training and no
network; ``mailbot train`` rebuilds it from ``corpus/`` and ``config.cfg`` with a fixed seed.
"""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_DIR = PACKAGE_DIR / "model"
CORPUS_DIR = PACKAGE_DIR / "corpus"
CONFIG_PATH = PACKAGE_DIR / "config.cfg"
LABELS = ("complaint", "compliment", "quality_concern", "other")
SAFEGUARDING = "SAFEGUARDING"
