"""IncreLoRA as a training strategy: ranks start small and grow where they matter.

As the authors' ``increlora.py`` does it: every LoRA module starts at ``init_rank``; each
step (until the budget is spent) its importance ``sum |delta W * dL/d delta W| / sqrt(numel)``
is smoothed by EMAs of the score and of its deviation (``beta`` 0.85), and their product is
the module's priority; after a warm-up, every ``interval`` steps the ``top_h`` modules of
highest priority gain ``rank_step`` ranks each, until the budget is spent (the last
addition is cut to the budget, which the reference can overshoot on ties).
The scale is ``alpha / r`` with the current ``r``. New ``E`` values join the optimizer as a
new parameter group with its own warm-up (the reference's restart warm-up); reserve ranks
train ahead through a tiny frozen ``E`` (advance learning). The loss gets
``orth_reg x mean over modules of (||A A^T - I||_F + ||B^T B - I||_F) / 2``.

The budget is counted in parameters, not ranks: those of a LoRA of rank ``target_rank`` on the
same modules, so that IncreLoRA ends at LoRA's parameter count, as the paper compares them. The
reference counts ranks (``target_rank x modules``), and a rank of an FFN module costs more than
one of an attention module: on all-MiniLM-L6-v2, whose FFN modules won most additions, the
adapter ended at 1.29x LoRA's parameters. A module whose next ranks the rest of the budget cannot
pay for is passed over for the next in priority.

Choices where the reference leaves them to the user: warm-up and interval (the reference sets
both by hand to 100-1000 steps) are fitted to the trial so that the budget is reached at
``grow_until`` of the steps, leaving the last ranks time to train (each module gains more
ranks at once when the rounds would not fit otherwise; ``top_h`` stays as set); ``alpha`` is the space's ``alpha_multiplier`` times
the target rank, so the final average scale matches a fixed-rank LoRA of that rank.

The saved adapter is a plain PEFT LoRA: ``E`` and the scale folded into ``lora_B``, one rank
per module in ``rank_pattern`` (``alpha_pattern`` equal, so the scale is 1), loadable by
stock ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from peft.tuners.lora import LoraLayer

from autopeft.adapters.placement import Placement
from autopeft.strategies.base import StrategyContext, TrainingStrategy, register_strategy
from autopeft.strategies.increlora.config import IncreLoraConfig
from autopeft.strategies.increlora.rank import ADAPTER, GrowingRank
from autopeft.training.loop import TrainingLoop

if TYPE_CHECKING:
    from autopeft.adapters.base import AdapterBuilder, BuildContext


@dataclass(frozen=True)
class Schedule:
    """When ranks are added: at ``steps`` (0-based optimizer steps), to ``per_round`` modules,
    ``rank_step`` ranks each."""

    steps: tuple[int, ...]
    per_round: int
    max_rank: int
    rank_step: int = 1

    @classmethod
    def fit(cls, config: IncreLoraConfig, modules: int, total_steps: int) -> Schedule:
        """Additions evenly spaced over the first ``grow_until`` of the steps, the first one
        interval in (the warm-up), the budget reached by the last. ``top_h`` modules gain rank
        each round, as the user set it; where the rounds would not fit in the steps, each
        gains more ranks at once (before, more modules did: ``top_h`` then had no effect)."""
        to_add = (config.target_rank - config.init_rank) * modules
        if to_add == 0:
            return cls((), 0, config.init_rank)
        per_round = min(config.top_h, modules)
        step = config.step_size
        room = max(1, math.floor(config.grow_until * total_steps) - 1)
        rounds = math.ceil(to_add / (per_round * step))
        if rounds > room:
            step = math.ceil(to_add / (per_round * room))
            rounds = math.ceil(to_add / (per_round * step))
        interval = max(1, math.floor(config.grow_until * total_steps / rounds))
        # A module gains at most one step per round; the reserve sits above its rank.
        max_rank = config.init_rank + min(rounds * step, to_add)
        reserve = step if config.advance else 0
        return cls(tuple(interval * k - 1 for k in range(1, rounds + 1)), per_round, max_rank + reserve, step)


@register_strategy("increlora")
class IncreLora(TrainingStrategy):
    config_class = IncreLoraConfig
    supports = {"lora": None, "peft": frozenset({"lora"})}
    restorable = False

    def __init__(self, config: IncreLoraConfig, ctx: StrategyContext) -> None:
        super().__init__(config, ctx)
        self.config: IncreLoraConfig = config
        self.modules: list[GrowingRank] = []
        self.schedule = Schedule((), 0, config.init_rank)
        self.budget = 0
        self.history: list[dict[str, Any]] = []

    @property
    def total_rank(self) -> int:
        return sum(m.rank for m in self.modules)

    @property
    def spent(self) -> int:
        """Parameters of the adapter's active ranks."""
        return sum(m.rank * m.cost for m in self.modules)

    @property
    def exhausted(self) -> bool:
        """No module can gain a rank within the budget."""
        left = self.budget - self.spent
        return all(m.rank >= m.max_rank or m.cost > left for m in self.modules)

    def wrap(self, stage: str, base: torch.nn.Module, values: dict[str, Any], ctx: BuildContext,
             builder: AdapterBuilder) -> torch.nn.Module:
        place = Placement.of(values, self.ctx.layout)
        modules = len(place.layers) * len(place.roles)
        self.schedule = Schedule.fit(self.config, modules, self.ctx.planned_steps)
        self._alpha = float(values.get("alpha_multiplier") or 1.0) * self.config.target_rank
        return builder.apply(base, {**values, "rank": self.schedule.max_rank}, ctx)

    def after_wrap(self, stage: str, model: torch.nn.Module) -> torch.nn.Module:
        pattern = re.compile(rf"{re.escape(self.ctx.layout.layers_path)}\.\d+\..*")
        reserve = self.schedule.rank_step if self.config.advance else 0
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
                found = pattern.search(name)
                short = found.group(0) if found else name
                self.modules.append(GrowingRank(short, module, self.config.init_rank, reserve, self._alpha))
        if not self.modules:
            raise ValueError("IncreLoRA found no LoRA module")
        self.budget = self.config.target_rank * sum(m.cost for m in self.modules)
        if not self.exhausted:
            for module in self.modules:
                module.watch()
        return model

    def optimizer_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        return [{"params": [m.chunks[0] for m in self.modules], "weight_decay": 0.0}]

    def extra_loss(self, loop: TrainingLoop, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not self.config.orth_reg:
            return None
        total = sum(m.orthogonality() for m in self.modules)
        return self.config.orth_reg * total / (2 * len(self.modules))

    def before_optimizer_step(self, loop: TrainingLoop) -> None:
        if self.exhausted:
            return
        for module in self.modules:
            raw = module.score()
            if raw is not None:
                module.smooth(raw, self.config.beta)

    def after_optimizer_step(self, loop: TrainingLoop) -> None:
        if loop.step not in self.schedule.steps or self.exhausted:
            return
        priority = [m.importance * m.uncertainty for m in self.modules]
        added: dict[str, int] = {}
        # The schedule counts rounds at the average cost of a rank; where cheaper modules won,
        # the last round hands out what is left, round by round in the same order.
        last = loop.step == self.schedule.steps[-1]
        while grants := allocate(priority, [m.cost for m in self.modules],
                                 [m.max_rank - m.rank for m in self.modules], self.schedule.per_round,
                                 self.schedule.rank_step, self.budget - self.spent):
            for i, ranks in grants.items():
                loop.add_parameters([self.modules[i].grow(ranks)], weight_decay=0.0)
                added[self.modules[i].name] = added.get(self.modules[i].name, 0) + ranks
            if not last:
                break
        self.history.append({"step": loop.step + 1, "added": added, "total_rank": self.total_rank,
                             "params": self.spent})
        if self.exhausted:
            for module in self.modules:
                module.close_reserve()
                module.unwatch()

    def finalize(self, model: torch.nn.Module) -> torch.nn.Module:
        for module in self.modules:
            module.close_reserve()
            module.fold()
        config = model.peft_config[ADAPTER]
        ranks = {re.escape(m.name): m.rank for m in self.modules}
        config.r = max(ranks.values())
        config.lora_alpha = config.r
        config.rank_pattern = dict(ranks)
        config.alpha_pattern = dict(ranks)
        return model

    def report(self) -> dict[str, Any]:
        return {"increlora_rank": {m.name: m.rank for m in self.modules},
                "increlora_total_rank": self.total_rank, "increlora_params": self.spent,
                "increlora_budget": self.budget,
                "increlora_schedule": self.history}


def allocate(priority: list[float], cost: list[int], room: list[int], per_round: int, step: int,
             budget: int) -> dict[int, int]:
    """One round of growth: the ``per_round`` modules of highest priority that can still grow
    and whose rank the ``budget`` (parameters) can pay for get up to ``step`` ranks each, as
    many as it pays for: {module index: ranks}."""
    grants: dict[int, int] = {}
    for i in sorted(range(len(priority)), key=lambda i: -priority[i]):
        if len(grants) == per_round:
            break
        ranks = min(step, room[i], budget // cost[i])
        if ranks > 0:
            grants[i] = ranks
            budget -= ranks * cost[i]
    return grants
