"""Sequence classification, single sentences and sentence pairs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Value
from transformers import AutoModelForSequenceClassification

from autopeft.errors import DataError
from autopeft.models import mark_new_modules
from autopeft.tasks.base import Evaluation, Metric, ModelOptions, Task, TaskData, register_task
from autopeft.tasks.data import DataSource, column_values, load_tables, split_splits
from autopeft.tasks.loading import load_pretrained


def _label_names(values: list[str]) -> list[str]:
    """Class names in a stable order: numerically when they are integers ("2" before "10")."""
    unique = set(values)
    if all(v.lstrip("-").isdigit() for v in unique):
        return sorted(unique, key=int)
    return sorted(unique)


@register_task("classification")
class SequenceClassification(Task):
    """Label a text (or a pair of texts) with one of a fixed set of classes."""

    peft_task_type = "SEQ_CLS"
    metrics = (Metric("accuracy", "maximize"),)
    primary_metric = "accuracy"
    default_objectives = ("accuracy", "trainable_percent")
    required_columns = ("text", "label")
    optional_columns = ("text_pair",)
    auto_class = "AutoModelForSequenceClassification"

    def load_data(self, source: DataSource, seed: int) -> TaskData:
        """Load, clean and split the user's tables (columns ``text``, ``text_pair``, ``label``)."""
        splits, notes, columns, files = load_tables(source, self.name, self.required_columns,
                                                     self.optional_columns)
        # Labels are names from here on, whatever type the file gave them.
        splits = {role: table.cast_column("label", Value("string")) for role, table in splits.items()}
        data = self.finish_data(splits["train"], splits.get("dev"), splits.get("test"), source, seed,
                                description=f"{files} ({columns['text']} -> {columns['label']})")
        data.notes[:0] = notes
        return data

    def finish_data(self, train: Dataset, dev: Dataset | None, test: Dataset | None,
                    source: DataSource, seed: int, description: str = "") -> TaskData:
        """Split, deduplicate and encode string labels as class ids named after the train split."""
        keys = ["text", "text_pair"] if "text_pair" in train.column_names else ["text"]
        train, dev, test, notes = split_splits(train, dev, test, source, keys, "label", seed)
        names = _label_names(column_values(train, "label"))
        if len(names) < 2:
            raise DataError(f"the train split has {len(names)} label value(s); a classifier needs 2+")
        index = {name: i for i, name in enumerate(names)}
        encoded = []
        for split_name, split in (("train", train), ("dev", dev), ("test", test)):
            unknown = set(column_values(split, "label")) - set(index)
            if unknown:
                raise DataError(f"the {split_name} split has labels {sorted(unknown)[:5]} that the "
                                f"train split lacks")
            encoded.append(split.cast_column("label", ClassLabel(names=names)))
        return TaskData(*encoded, label_names=names, description=description, notes=notes)

    def load_model(self, model_path: str, data: TaskData, options: ModelOptions = ModelOptions()
                   ) -> torch.nn.Module:
        names = data.label_names
        model, info = load_pretrained(
            AutoModelForSequenceClassification, model_path, options, num_labels=len(names),
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
        return mark_new_modules(model, info["missing_keys"])

    def floors(self, dev: Dataset) -> dict[str, tuple[float, str]]:
        counts = np.bincount(np.asarray(dev["label"], dtype=np.int64))
        return {"accuracy": (float(counts.max() / counts.sum()), "the majority class on dev")} if counts.sum() else {}

    def tokenize(self, split: Dataset, tokenizer: Any, max_length: int) -> Dataset:
        pair = "text_pair" in split.column_names

        def encode(batch: dict) -> dict:
            return tokenizer(batch["text"], batch["text_pair"] if pair else None,
                             truncation=True, max_length=max_length)

        out = split.map(encode, batched=True, remove_columns=[c for c in split.column_names if c != "label"])
        return out.rename_column("label", "labels")

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**batch).loss

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]],
                 tokenizer: Any = None) -> Evaluation:
        predictions, labels, losses, sizes = [], [], [], []
        for batch in batches:
            # Labels stay out of the forward pass: a reloaded AdaLoRA model (PEFT 0.21) fails
            # when asked for a loss in inference mode, so the loss is computed here.
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            predictions.append(logits.argmax(-1).cpu().numpy())
            labels.append(batch["labels"].cpu().numpy())
            losses.append(float(torch.nn.functional.cross_entropy(logits.float(), batch["labels"])))
            sizes.append(len(batch["labels"]))
        pred, gold = np.concatenate(predictions), np.concatenate(labels)
        return Evaluation(pred, gold, {"accuracy": float((pred == gold).mean())},
                          float(np.average(losses, weights=sizes)))
