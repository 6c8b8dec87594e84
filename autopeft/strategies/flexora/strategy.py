"""Flexora as a training strategy: gates learned on held-out data choose the layers, then a
fresh adapter trains on those layers only.

As the authors' code does it (``flora.py``): one logit ``a_l`` per adapter layer, 0 at
first, with its own Adam. The adapter output of layer ``l`` is multiplied by the gate
``L * softmax(a)_l`` (1 at first), detached while the adapter trains. After each optimizer
step of the adapter, the loss of held-out examples is back-propagated into the logits only,
and the logits take one Adam step (first-order bilevel optimisation). The held-out examples
are split off the *training* data; dev is the search's objective and is never seen here.
Selected: the layers whose logit ended above 0. Stage two builds the adapter again on those
layers only (``layers`` -> ``layers_to_transform``, or the bottleneck keep bits), without
gates, from the same initial weights as any trial, and trains it for the trial's full steps.

Deviations, on purpose: the gate is applied once, on ``lora_B``'s output (the reference's
pre-hooks on ``lora_dropout``, ``lora_A`` and ``lora_B`` scale the output by the gate
cubed); one held-out batch of ``heldout_batch`` examples per gate step instead of eight
single examples summed (the same gradient up to a factor, which Adam normalises away);
the adapter's Adam state is kept between steps (the reference's BAdam wrapper resets it
every step, an artefact of that optimizer, not of the method). With no logit above 0 the
largest one is kept, so the second stage always has a layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset

from autopeft.strategies.base import StrategyContext, TrainingStrategy, register_strategy
from autopeft.strategies.flexora.config import FlexoraConfig
from autopeft.strategies.layers import AdapterLayers
from autopeft.training.loop import TrainingLoop, to_device

SEARCH, TRAIN = "search", "train"


@register_strategy("flexora")
class Flexora(TrainingStrategy):
    config_class = FlexoraConfig
    supports = {"lora": None, "peft": frozenset({"lora", "rslora"}), "sapa": None}
    stages = (SEARCH, TRAIN)

    def __init__(self, config: FlexoraConfig, ctx: StrategyContext) -> None:
        super().__init__(config, ctx)
        self.config: FlexoraConfig = config
        order = np.random.default_rng(ctx.seed).permutation(len(ctx.train_tokens))
        n = min(config.heldout, len(order) // 5)
        if n < 1:
            raise ValueError(f"Flexora needs training examples to hold out; the trial has {len(order)}")
        self.heldout = ctx.train_tokens.select(np.sort(order[:n]))
        self.inner = ctx.train_tokens.select(np.sort(order[n:]))
        self.layers: AdapterLayers | None = None
        self.logits = torch.zeros(0)
        self.selected: list[int] = []
        self._gates = torch.zeros(0)
        self._optimizer: torch.optim.Optimizer | None = None
        self._heldout_batches: Any = iter(())

    # -- stages ---------------------------------------------------------------------------
    def stage_steps(self, stage: str, planned: int) -> int:
        return max(1, round(self.config.search_share * planned)) if stage == SEARCH else planned

    def stage_data(self, stage: str, tokens: Dataset) -> Dataset:
        return self.inner if stage == SEARCH else tokens

    def stage_values(self, stage: str, values: dict[str, Any]) -> dict[str, Any]:
        if stage == SEARCH:
            return values
        chosen = set(self.selected)
        return {**values, "layers": [i in chosen for i in range(self.ctx.layout.num_layers)]}

    def after_wrap(self, stage: str, model: torch.nn.Module) -> torch.nn.Module:
        if stage != SEARCH:
            return model
        self.layers = AdapterLayers(model, self.ctx.layout)
        if not len(self.layers):
            raise ValueError("Flexora found no adapter layer to gate")
        self.logits = torch.zeros(len(self.layers), device=self.ctx.device, requires_grad=True)
        self._optimizer = torch.optim.Adam([self.logits], lr=self.config.gate_lr)
        self._gates = self._gate_values().detach()
        position = {layer: i for i, layer in enumerate(self.layers.indices)}
        self.layers.gate(lambda layer: self._gates[position[layer]])
        return model

    # -- the search stage's hooks ---------------------------------------------------------
    def _gate_values(self) -> torch.Tensor:
        return len(self.layers) * torch.softmax(self.logits, dim=0)

    def _heldout_batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        batch = next(self._heldout_batches, None)
        if batch is None:
            self._heldout_batches = iter(self.ctx.loader(self.heldout, self.config.heldout_batch, True))
            batch = next(self._heldout_batches)
        return to_device(batch, device)

    def after_optimizer_step(self, loop: TrainingLoop) -> None:
        if self.stage != SEARCH:
            return
        batch = self._heldout_batch(loop.device)
        loop.model.eval()
        try:
            self._gates = self._gate_values()
            loss = loop.task.loss(loop.model, batch)
            (grad,) = torch.autograd.grad(loss, [self.logits])
        finally:
            loop.model.train()
        self.logits.grad = grad
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        self._gates = self._gate_values().detach()

    def on_train_end(self, loop: TrainingLoop) -> None:
        if self.stage != SEARCH:
            return
        logits = self.logits.detach().cpu()
        if self.config.select == "top_half":
            keep = logits.argsort(descending=True)[: max(1, (len(logits) + 1) // 2)]
        else:
            keep = torch.nonzero(logits > 0).flatten()
            if keep.numel() == 0:
                keep = logits.argmax().reshape(1)
        self.selected = sorted(self.layers.indices[i] for i in keep.tolist())
        self.layers.remove_gates()

    def report(self) -> dict[str, Any]:
        logits = self.logits.detach().cpu()
        gates = (len(logits) * torch.softmax(logits, dim=0)).tolist()
        return {"flexora_logit": {str(l): float(v) for l, v in zip(self.layers.indices, logits.tolist())},
                "flexora_gate": {str(l): float(v) for l, v in zip(self.layers.indices, gates)},
                "flexora_selected": {str(l): int(l in self.selected) for l in self.layers.indices},
                "flexora_layers_kept": len(self.selected),
                "flexora_layers_searched": len(self.layers)}
