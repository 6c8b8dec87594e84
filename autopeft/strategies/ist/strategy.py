"""IST as a training strategy: learned layer scores decide which layers' adapters train.

As the authors' ``ISTCallback`` does it: one score ``s_l`` per adapter layer, 0 at first.
Every ``interval`` steps (not step 0), on one training batch, ``K`` distinct subsets of half
the layers are drawn with probability proportional to ``sigmoid(s)``; each subset's adapter
outputs are scaled by ``suppress`` (PEFT's ``scale_layer`` / ``unscale_layer``; for the
bottleneck adapters their ``scale``) and the loss is measured without gradients. With
rewards ``r_k = exp(-loss_k) - mean_k exp(-loss_k)`` and ``p = sigmoid(s)`` before the update,
every layer ``i`` of subset ``k`` gets ``s_i += reward_lr * r_k * p_i (1 - p_i)``: a high score
means suppressing the layer costs little. At every step a share of the layers, drawn with
probability proportional to ``sigmoid(-s)``, gets gradients; the others are frozen, so
their weights and optimizer state do not move.

Deviations, on purpose: the reference floors both counts (``int(L/4)``, ``int(L/2)``), which
trains no layer at ``L < 4`` and never ends its subset draw at ``L = 2``; here at least one
layer trains and is suppressed, ``K`` is capped by the number of distinct subsets, and a
subset draw gives up after a bounded number of repeats. For trials of a few hundred steps
(the authors train 3 epochs of thousands): half the layers train at each step by default,
rounded up (the authors' quarter, floored, trained 1 of MiniLM's 6 layers per step: 21
updates per layer in 125 steps), and the scores update at least ``min_updates`` times a
trial (every 10 steps, the authors' interval, scored once in a 20-step trial, so the layers
were drawn uniformly).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from autopeft.strategies.base import StrategyContext, TrainingStrategy, register_strategy
from autopeft.strategies.ist.config import ISTConfig
from autopeft.strategies.layers import AdapterLayers
from autopeft.training.loop import TrainingLoop, to_device

_MAX_DRAWS = 100


@register_strategy("ist")
class IST(TrainingStrategy):
    config_class = ISTConfig
    supports = {"lora": None, "peft": frozenset({"lora", "rslora"}), "sapa": None}
    keeps_parameter_count = True

    def __init__(self, config: ISTConfig, ctx: StrategyContext) -> None:
        super().__init__(config, ctx)
        self.config: ISTConfig = config
        self.generator = torch.Generator().manual_seed(ctx.seed)
        self.layers: AdapterLayers | None = None
        self.scores = torch.zeros(0)
        self.updates = torch.zeros(0, dtype=torch.long)
        self.score_updates = 0
        self._batches: Any = None

    def after_wrap(self, stage: str, model: torch.nn.Module) -> torch.nn.Module:
        self.layers = AdapterLayers(model, self.ctx.layout)
        if not len(self.layers):
            raise ValueError("IST found no adapter layer to select from")
        self.scores = torch.zeros(len(self.layers))
        self.updates = torch.zeros(len(self.layers), dtype=torch.long)
        return model

    @property
    def n_update(self) -> int:
        return max(1, math.ceil(self.config.update_share * len(self.layers) - 1e-9))

    @property
    def interval(self) -> int:
        """Steps between score updates: the authors' interval, shorter where the trial would
        otherwise score fewer than ``min_updates`` times."""
        return max(1, min(self.config.interval, self.ctx.planned_steps // (self.config.min_updates + 1)))

    @property
    def n_suppress(self) -> int:
        return max(1, len(self.layers) // 2)

    def before_step(self, loop: TrainingLoop, batch: dict[str, torch.Tensor]) -> None:
        if loop.step > 0 and loop.step % self.interval == 0:
            self._update_scores(loop)
        chosen = torch.multinomial(torch.sigmoid(-self.scores), self.n_update, replacement=False,
                                   generator=self.generator)
        self.updates[chosen] += 1
        self.layers.set_trainable({self.layers.indices[i] for i in chosen.tolist()})

    def _score_batch(self, loop: TrainingLoop) -> dict[str, torch.Tensor]:
        # The reference draws score batches from its own shuffled pass over the training data.
        if self._batches is None:
            self._batches = iter(())
        batch = next(self._batches, None)
        if batch is None:
            self._batches = iter(self.ctx.loader(self.ctx.train_tokens, self.ctx.batch_size, True))
            batch = next(self._batches)
        return to_device(batch, loop.device)

    def _subsets(self) -> list[torch.Tensor]:
        distinct = math.comb(len(self.layers), self.n_suppress)
        wanted = min(self.config.subsets, distinct)
        subsets: list[torch.Tensor] = []
        probs = torch.sigmoid(self.scores)
        for _ in range(_MAX_DRAWS):
            if len(subsets) == wanted:
                break
            draw = torch.multinomial(probs, self.n_suppress, replacement=False, generator=self.generator).sort().values
            if not any(torch.equal(draw, s) for s in subsets):
                subsets.append(draw)
        return subsets

    @torch.no_grad()
    def _update_scores(self, loop: TrainingLoop) -> None:
        subsets = self._subsets()
        if len(subsets) < 2:  # one subset: its centred reward is 0, nothing to learn
            return
        batch = self._score_batch(loop)
        self.score_updates += 1
        losses = []
        loop.model.eval()
        try:
            for subset in subsets:
                layers = [self.layers.indices[i] for i in subset.tolist()]
                for layer in layers:
                    self.layers.scale(layer, self.config.suppress)
                try:
                    losses.append(float(loop.task.loss(loop.model, batch)))
                finally:
                    for layer in layers:
                        self.layers.unscale(layer, self.config.suppress)
        finally:
            loop.model.train()
        rewards = torch.exp(-torch.tensor(losses))
        rewards -= rewards.mean()
        p = torch.sigmoid(self.scores)
        step = self.config.reward_lr * p * (1 - p)
        for subset, reward in zip(subsets, rewards, strict=True):
            self.scores[subset] += reward * step[subset]

    def on_train_end(self, loop: TrainingLoop) -> None:
        # The saved adapter is an ordinary one: every layer trainable, as built.
        self.layers.set_trainable(set(self.layers.indices))

    def report(self) -> dict[str, Any]:
        return {"ist_score": {str(l): float(s) for l, s in zip(self.layers.indices, self.scores)},
                "ist_updates": {str(l): int(n) for l, n in zip(self.layers.indices, self.updates)},
                "ist_score_updates": self.score_updates}
