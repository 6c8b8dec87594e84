"""Supervised fine-tuning of a causal (decoder-only) language model on prompt/response pairs.

The loss is on the response tokens only. Evaluation always gives the dev loss and perplexity
(per response token); where every response is a short answer (a label word, a number), it
also generates greedily from each prompt and scores exact match, so that a classification
task can be posed to a causal LM as text. Custom objectives receive the generations.
"""

from __future__ import annotations

from collections import Counter

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Value
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from autopeft.errors import DataError, ObjectiveError
from autopeft.models import mark_new_modules
from autopeft.tasks.base import Evaluation, Metric, ModelOptions, Task, TaskData, register_task
from autopeft.tasks.data import DataSource, column_values, load_tables, split_splits
from autopeft.tasks.loading import load_pretrained

#: label id of tokens the loss ignores (the prompt, padding), as transformers' models expect
IGNORE = -100
#: responses of at most this many words count as short answers, scored by exact match
SHORT_ANSWER_WORDS = 4
#: at most this many distinct answers are used as strata when splitting (labels, not free text)
MAX_STRATA = 50


def normalize_answer(text: str) -> str:
    """Case, surrounding whitespace and trailing punctuation do not count in exact match."""
    return re.sub(r"[\s.!?,;:]+$", "", text.strip().lower())


@register_task("causal_lm")
class CausalLM(Task):
    """Train a decoder-only LM to answer each prompt with its response."""

    peft_task_type = "CAUSAL_LM"
    metrics = (Metric("perplexity", "minimize"), Metric("exact_match", "maximize"))
    default_objectives = ("perplexity", "trainable_percent")
    required_columns = ("prompt", "response")
    auto_class = "AutoModelForCausalLM"
    #: a dev batch's logits are batch x length x vocabulary (49k for SmolLM2): kept small so
    #: that evaluation does not set a trial's peak memory
    eval_batch_size = 16

    def __init__(self) -> None:
        #: whether every response is a short answer (then exact match is scored); set by the data
        self.short_answers = False
        self.chat_template = False

    @property
    def primary_metric(self) -> str:  # type: ignore[override]
        return "exact_match" if self.short_answers else "perplexity"

    def load_data(self, source: DataSource, seed: int) -> TaskData:
        """The user's prompt/response tables, split and deduplicated on the prompt."""
        splits, notes, columns, files = load_tables(source, self.name, self.required_columns)
        splits = {r: t.cast_column("prompt", Value("string")).cast_column("response", Value("string"))
                  for r, t in splits.items()}
        data = self.finish_data(splits["train"], splits.get("dev"), splits.get("test"), source, seed,
                                f"{files} ({columns['prompt']} -> {columns['response']})")
        data.notes[:0] = notes
        return data

    def finish_data(self, train: Dataset, dev: Dataset | None, test: Dataset | None, source: DataSource,
                    seed: int, description: str = "") -> TaskData:
        """Split (stratified by answer where answers are labels) and deduplicate on the prompt."""
        self.chat_template = source.chat_template
        answers = column_values(train, "response")
        self.short_answers = all(_longest_answer(t) <= SHORT_ANSWER_WORDS for t in (train, dev, test)
                                 if t is not None)
        labels = self.short_answers and len(set(answers)) <= MAX_STRATA
        train = train.add_column("_stratum", [a if labels else "" for a in answers])
        train, dev, test, notes = split_splits(train, dev, test, source, ["prompt"], "_stratum", seed)
        splits = [s.remove_columns("_stratum") if "_stratum" in s.column_names else s for s in (train, dev, test)]
        how = "short answers: exact match scored" if self.short_answers else "free-text responses"
        return TaskData(*splits, description=f"{description}; {how}", notes=notes)

    def check_objectives(self, metrics_read: Sequence[tuple[str, str]], data: TaskData | None = None) -> None:
        super().check_objectives(metrics_read, data)
        if data is not None and not self.short_answers:
            for objective, metric in metrics_read:
                if metric == "exact_match":
                    raise ObjectiveError(f"objective '{objective}' needs short answers (at most "
                                         f"{SHORT_ANSWER_WORDS} words each); this data's responses are "
                                         f"longer: use perplexity", key="objective")

    def _answers(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], logits: torch.Tensor,
                 tokenizer: Any) -> tuple[list[list[int]], list[list[int]]]:
        """Each example's greedy answer and its reference (token ids, end of sequence left out).

        An example whose reference greedy decoding reproduces needs no generation: its answer
        is the reference (that halves evaluation once a model has learned the answers); the
        others are generated."""
        eos = tokenizer.eos_token_id
        labels = batch["labels"]
        references = [[t for t in row[row != IGNORE].tolist() if t != eos] for row in labels]
        greedy = _greedy_by_teacher_forcing(logits, labels)
        answers: list[list[int]] = [list(r) if hit else [] for r, hit in zip(references, greedy.tolist(), strict=True)]
        rest = (~greedy).nonzero().flatten()
        if len(rest):
            subset = {k: v[rest] for k, v in batch.items()}
            longest = max(len(references[i]) for i in rest.tolist()) + 1
            for i, answer in zip(rest.tolist(), greedy_answers(model, subset, longest, eos, tokenizer.pad_token_id),
                                 strict=True):
                answers[i] = answer
        return answers, references

    def load_tokenizer(self, model_path: str) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if tokenizer.pad_token is None:  # LLaMA-style tokenizers have none; padding is masked anyway
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        return tokenizer

    def load_model(self, model_path: str, data: TaskData, options: ModelOptions = ModelOptions()
                   ) -> torch.nn.Module:
        model, _ = load_pretrained(AutoModelForCausalLM, model_path, options)
        # The LM head is pretrained (tied to the embeddings in small models): nothing is new.
        return mark_new_modules(model, [])

    def _prompt_ids(self, prompt: str, tokenizer: Any) -> list[int]:
        if self.chat_template:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        return tokenizer(prompt)["input_ids"]

    def floors(self, dev: Dataset) -> dict[str, tuple[float, str]]:
        if not self.short_answers or not len(dev):
            return {}
        answers = Counter(str(a).strip() for a in dev["response"])
        return {"exact_match": (answers.most_common(1)[0][1] / len(dev), "always the most common answer on dev")}

    def tokenize(self, split: Dataset, tokenizer: Any, max_length: int) -> Dataset:
        """``input_ids`` = prompt + response + end of sequence, ``labels`` = the same with the
        prompt masked. An example over ``max_length`` keeps at least half of it for its prompt;
        a prompt too long loses its middle (its start holds the chat template's header and
        instructions, its end the question next to the answer); a response too long loses its
        end, and then gets no end of sequence (it is not where the answer ends)."""
        if self.chat_template and not getattr(tokenizer, "chat_template", None):
            raise DataError("--chat-template is set but the model's tokenizer has no chat template")
        if max_length < 4:
            raise DataError(f"a causal_lm task needs --max-length of at least 4, got {max_length}")
        eos = tokenizer.eos_token_id

        def encode(batch: dict) -> dict:
            out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
            for prompt, response in zip(batch["prompt"], batch["response"], strict=True):
                question = self._prompt_ids(prompt, tokenizer)
                answer = tokenizer(response, add_special_tokens=False)["input_ids"] + [eos]
                room = max(max_length - min(len(question), max_length // 2), 1)
                answer = answer if len(answer) <= room else answer[:room]
                question = shorten_middle(question, max_length - len(answer))
                out["input_ids"].append(question + answer)
                out["attention_mask"].append([1] * (len(question) + len(answer)))
                out["labels"].append([IGNORE] * len(question) + answer)
            return out

        return split.map(encode, batched=True, remove_columns=split.column_names)

    def collator(self, tokenizer: Any) -> PadCausal:
        return PadCausal(tokenizer.pad_token_id)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**batch).loss

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]],
                 tokenizer: Any = None) -> Evaluation:
        loss_sum, tokens = 0.0, 0
        generations: list[str] = []
        references: list[str] = []
        for batch in batches:
            labels = batch["labels"]
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            # Prompt tuning returns logits for its virtual tokens too, ahead of the input's.
            logits = logits[:, -labels.shape[1]:]
            # Token-weighted: a split's loss is per response token, whatever its batches' sizes.
            loss_sum += float(torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE,
                reduction="sum"))
            tokens += int((labels[:, 1:] != IGNORE).sum())
            if self.short_answers:
                if tokenizer is None:
                    raise ValueError("exact match needs the tokenizer to decode generations")
                generated, answers = self._answers(model, batch, logits, tokenizer)
                references += [tokenizer.decode(a) for a in answers]
                generations += [tokenizer.decode(g) for g in generated]
        loss = loss_sum / max(tokens, 1)
        metrics = {"perplexity": math.exp(min(loss, 50.0))}
        if self.short_answers:
            metrics["exact_match"] = float(np.mean([normalize_answer(g) == normalize_answer(r)
                                                    for g, r in zip(generations, references, strict=True)]))
        # predictions/labels as exact match compares them; the raw text in generations/references
        return Evaluation(np.array([normalize_answer(g) for g in generations], dtype=object),
                          np.array([normalize_answer(r) for r in references], dtype=object), metrics,
                          loss, generations, references)


def shorten_middle(ids: list[int], length: int) -> list[int]:
    """``ids`` cut to ``length`` by dropping tokens from the middle (a quarter kept from the start)."""
    if len(ids) <= length:
        return ids
    head = length // 4
    return ids[:head] + ids[len(ids) - (length - head):]


class PadCausal:
    """Right-pads a batch: ids with the pad token, labels with :data:`IGNORE`.

    transformers' DataCollatorForSeq2Seq does this too, but pads labels through lists of
    numpy arrays, which torch warns is very slow, on every batch."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        def pad(key: str, value: int) -> torch.Tensor:
            return torch.nn.utils.rnn.pad_sequence([torch.as_tensor(e[key]) for e in examples],
                                                   batch_first=True, padding_value=value)

        return {"input_ids": pad("input_ids", self.pad_id), "attention_mask": pad("attention_mask", 0),
                "labels": pad("labels", IGNORE)}


def _longest_answer(table: Dataset) -> int:
    return max(len(a.split()) for a in column_values(table, "response"))


def _greedy_by_teacher_forcing(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Which examples greedy decoding would answer with exactly their reference (end of
    sequence included): those whose every reference token is the argmax given the tokens
    before it, read off the loss's own forward pass."""
    hits = (logits[:, :-1].argmax(-1) == labels[:, 1:]) | (labels[:, 1:] == IGNORE)
    return hits.all(-1)


def greedy_answers(model: torch.nn.Module, batch: dict[str, torch.Tensor], max_new_tokens: int,
                   eos_id: int, pad_id: int) -> list[list[int]]:
    """Greedy continuations of each example's prompt (its tokens before the response), up to
    the end of sequence (left out)."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    prompts = []
    for row, row_mask, row_labels in zip(ids, mask, labels, strict=True):
        answer = (row_labels != IGNORE).nonzero()
        end = int(answer[0]) if len(answer) else int(row_mask.sum())
        prompts.append(row[:end])
    width = max(len(p) for p in prompts)
    # Left padding: every prompt ends at the same position, where generation continues.
    x = torch.full((len(prompts), width), pad_id, dtype=ids.dtype, device=ids.device)
    m = torch.zeros_like(x)
    for i, p in enumerate(prompts):
        x[i, width - len(p):], m[i, width - len(p):] = p, 1
    # A configuration of its own: the checkpoint's may ask for sampling.
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_id,
                              pad_token_id=pad_id)
    out = model.generate(input_ids=x, attention_mask=m, generation_config=config)[:, width:]
    answers = []
    for row in out.tolist():
        answers.append(row[: row.index(eos_id)] if eos_id in row else row)
    return answers
