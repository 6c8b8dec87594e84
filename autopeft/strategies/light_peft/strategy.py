"""Light-PEFT as a training strategy: estimate what is redundant, prune the base model and
the adapter physically, and continue training the smaller model.

As the authors' code does it (``estimate.py``, ``train.py``):

- **Estimation** (``estimate_share`` of the steps): the configured LoRA trains with a mask per
  attention head of each layer and per FFN neuron, initialised to 1, with an L1 penalty
  ``l1 x sum |m|`` and their own learning rate. The head mask multiplies each head's share of
  the attention output (the input of ``attn_o``): the same as multiplying that head's
  attention probabilities, as the reference does. The neuron mask multiplies the FFN
  activation (the input of ``ffn_down``). Over the second half of the estimation, each LoRA
  module's importance ``||s B A x|| / ||W x + b||`` (per non-padding token) and each rank's
  ``|mean(A * dL/dA)| + |mean(B * dL/dB)|`` are averaged.
- **Pruning**: ``head_prune`` of the heads of each layer, ``neuron_prune`` of the FFN neurons
  over all layers, by importance ``|m x dL/dm|`` summed over the estimation steps (lowest
  first), are cut out of the base model
  (:mod:`~autopeft.strategies.light_peft.plan`); ``module_prune`` of the LoRA modules, then
  ``rank_prune`` of the remaining ranks over all modules, by importance, are dropped. A gated
  FFN (LLaMA) loses the neuron's ``ffn_gate`` and ``ffn_up`` rows and ``ffn_down`` column.
- **Grouped-query attention** (LLaMA, ``num_key_value_heads < num_attention_heads``): the
  masks stay per query head, but what is pruned is whole key/value groups (a key/value head
  with all the query heads that share it), ``head_prune`` of the groups of each layer, scored
  by the mean importance of their query heads. Multi-head attention is the case of groups of one,
  so it prunes exactly as before.
- **Training** continues from the estimated LoRA weights, sliced to the kept heads, neurons
  and ranks (and the trained head), with a fresh optimizer and no masks, on the pruned
  model for the trial's full steps. The scale of each module stays ``alpha / r`` of the
  estimation (as in the reference, which does not recompute it).

Deviations, on purpose: heads and neurons are ranked by their accumulated importance, not
by their final mask values: in an estimation of a few dozen steps the masks move by about
their learning rate times the step count (+-0.003 at 1e-3 over 5 steps), so the final values
rank by a count of gradient signs, and a model pruned that way started its training stage at
a loss above the uniform guess's. Exactly ``round(share x n)`` units are removed (lowest first, ties in
index order) where the reference keeps ``score > quantile``, which with ties (masks that did
not move) would remove everything or nothing; at least one head and one neuron stay in each
layer, one adapter module and one rank in each kept module.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from autopeft.training.measure import count_parameters
from autopeft.models import ModelLayout
from autopeft.strategies.base import StrategyContext, TrainingStrategy, register_strategy
from autopeft.strategies.light_peft.config import LightPeftConfig
from autopeft.strategies.light_peft.plan import PruningPlan, apply_plan, lowest
from autopeft.training.loop import TrainingLoop

if TYPE_CHECKING:
    from autopeft.adapters.base import AdapterBuilder, BuildContext

ESTIMATE, TRAIN = "estimate", "train"
ADAPTER = "default"
Key = tuple[int, str]  # (layer, role)


def lora_modules(model: nn.Module, layout: ModelLayout) -> dict[Key, LoraLayer]:
    """The model's LoRA layers by (layer index, role)."""
    by_name = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer) and ADAPTER in m.lora_A}
    found: dict[Key, LoraLayer] = {}
    for layer in range(layout.num_layers):
        for role in layout.roles:
            target = layout.module_name(layer, role)
            for name, module in by_name.items():
                if name == target or name.endswith("." + target):
                    found[(layer, role)] = module
    return found


class _Importance:
    """Module and rank importance of the LoRA modules, averaged over the recorded steps."""

    def __init__(self, modules: dict[Key, LoraLayer]) -> None:
        self.modules = modules
        self.module_sum = dict.fromkeys(modules, 0.0)
        self.rank_sum = {k: torch.zeros(m.r[ADAPTER]) for k, m in modules.items()}
        self.steps = 0
        self.recording = False
        self.token_mask: torch.Tensor | None = None
        self._base_out: dict[Key, torch.Tensor] = {}
        self._step_ratio: dict[Key, float] = {}
        self.handles = []
        for key, module in modules.items():
            self.handles.append(module.base_layer.register_forward_hook(
                lambda _m, _a, out, key=key: self._base_out.__setitem__(key, out.detach())))
            self.handles.append(module.lora_B[ADAPTER].register_forward_hook(
                lambda _m, _a, out, key=key: self._ratio(key, out)))

    def _ratio(self, key: Key, lora_out: torch.Tensor) -> None:
        base = self._base_out.pop(key, None)
        if not self.recording or base is None:
            return
        with torch.no_grad():
            scaled = lora_out.detach() * self.modules[key].scaling[ADAPTER]
            ratio = scaled.norm(dim=-1) / base.norm(dim=-1).clamp_min(1e-12)
            mask = self.token_mask
            if mask is not None and mask.shape == ratio.shape:
                value = float(ratio[mask.bool()].mean())
            else:
                value = float(ratio.mean())
        self._step_ratio[key] = value

    def record_ranks(self) -> None:
        """After backward: this step's rank scores, and the module ratios of its forward."""
        for key, module in self.modules.items():
            a, b = module.lora_A[ADAPTER].weight, module.lora_B[ADAPTER].weight
            if a.grad is None or b.grad is None:
                continue
            with torch.no_grad():
                score = (a * a.grad).mean(dim=1).abs() + (b * b.grad).mean(dim=0).abs()
            self.rank_sum[key] += score.detach().cpu().nan_to_num(0.0, 0.0, 0.0)
            self.module_sum[key] += self._step_ratio.get(key, 0.0)
        self._step_ratio.clear()
        self.steps += 1

    def averages(self) -> tuple[dict[Key, float], dict[Key, torch.Tensor]]:
        n = max(self.steps, 1)
        return ({k: v / n for k, v in self.module_sum.items()}, {k: v / n for k, v in self.rank_sum.items()})

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@register_strategy("light_peft")
class LightPeft(TrainingStrategy):
    config_class = LightPeftConfig
    supports = {"lora": None, "peft": frozenset({"lora"})}
    stages = (ESTIMATE, TRAIN)

    def __init__(self, config: LightPeftConfig, ctx: StrategyContext) -> None:
        super().__init__(config, ctx)
        self.config: LightPeftConfig = config
        self.plan: PruningPlan | None = None
        #: query heads per key/value head of the unpruned model (1: multi-head attention)
        self.kv_groups = 1
        self.head_mask = self.neuron_mask = torch.zeros(0)
        self.head_importance = self.neuron_importance = torch.zeros(0)
        self.kept_ranks: dict[Key, torch.Tensor] = {}
        self.scaling: dict[Key, float] = {}
        #: the estimation's trained head (by parameter name) and LoRA factors (A, B by module)
        self.estimated: dict[str, torch.Tensor] = {}
        self.estimated_lora: dict[Key, tuple[torch.Tensor, torch.Tensor]] = {}
        self.figures: dict[str, Any] = {}
        self._importance: _Importance | None = None
        self._handles: list[Any] = []

    # -- stages ---------------------------------------------------------------------------
    def stage_steps(self, stage: str, planned: int) -> int:
        return max(1, round(self.config.estimate_share * planned)) if stage == ESTIMATE else planned

    def before_wrap(self, stage: str, base: nn.Module) -> nn.Module:
        if stage == TRAIN:
            apply_plan(base, self.ctx.layout, self.plan)
        when = "before" if stage == ESTIMATE else "after"
        self.figures[f"light_peft_base_params_{when}"] = count_parameters(base)[1]
        # The transformer layers alone: what pruning can shrink (embeddings and head stay).
        layers = base.get_submodule(self.ctx.layout.layers_path)
        self.figures[f"light_peft_layer_params_{when}"] = count_parameters(layers)[1]
        return base

    def wrap(self, stage: str, base: nn.Module, values: dict[str, Any], ctx: BuildContext,
             builder: AdapterBuilder) -> nn.Module:
        if stage == ESTIMATE:
            return builder.apply(base, values, ctx)
        layout = self.ctx.layout
        names = {key: layout.module_name(*key) for key in self.kept_ranks}
        ranks = {re.escape(names[k]): int(v.numel()) for k, v in self.kept_ranks.items()}
        alphas = {re.escape(names[k]): self.scaling[k] * int(v.numel()) for k, v in self.kept_ranks.items()}
        top = max(ranks.values())
        config = LoraConfig(task_type=ctx.task_type, r=top, lora_alpha=top * max(self.scaling.values()),
                            target_modules=sorted(names.values()), rank_pattern=ranks, alpha_pattern=alphas,
                            lora_dropout=float(values.get("dropout") or 0.0))
        model = get_peft_model(base, config)
        self._load_estimate(model)
        return model

    def _load_estimate(self, model: nn.Module) -> None:
        """The estimated LoRA weights, sliced to the plan and the kept ranks, and the head."""
        modules = lora_modules(model, self.ctx.layout)
        with torch.no_grad():
            for key, ranks in self.kept_ranks.items():
                layer, role = key
                a, b = self.estimated_lora[key]
                a, b = a[ranks], b[:, ranks]
                cols, rows = self.plan.kept_inputs(layer, role), self.plan.kept_outputs(layer, role)
                a = a[:, cols] if cols is not None else a
                b = b[rows] if rows is not None else b
                modules[key].lora_A[ADAPTER].weight.copy_(a)
                modules[key].lora_B[ADAPTER].weight.copy_(b)
            for name, param in model.named_parameters():
                if param.requires_grad and "lora_" not in name and name in self.estimated:
                    param.copy_(self.estimated[name])

    def after_wrap(self, stage: str, model: nn.Module) -> nn.Module:
        if stage != ESTIMATE:
            return model
        layout = self.ctx.layout
        config = model.config if hasattr(model, "config") else model.base_model.config
        heads = int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        if kv_heads <= 0 or heads % kv_heads:
            raise ValueError(f"Light-PEFT needs num_attention_heads divisible by num_key_value_heads, "
                             f"got {heads} and {kv_heads}")
        self.kv_groups = heads // kv_heads
        missing = [r for r in ("attn_o", "ffn_down", "ffn_up") if r not in layout.roles]
        if missing:
            raise ValueError(f"Light-PEFT needs the model's {missing} projections")
        head_dim = layout.linear_shapes[layout.roles["attn_o"]][0] // heads
        neurons = layout.linear_shapes[layout.roles["ffn_down"]][0]
        device = self.ctx.device
        self.head_mask = nn.Parameter(torch.ones(layout.num_layers, heads, device=device))
        self.neuron_mask = nn.Parameter(torch.ones(layout.num_layers, neurons, device=device))
        # |m x dL/dm| summed over the estimation: what removing each unit would cost, to first order
        self.head_importance = torch.zeros(layout.num_layers, heads)
        self.neuron_importance = torch.zeros(layout.num_layers, neurons)
        self.plan = PruningPlan(head_dim, {}, {}, self.kv_groups)
        layers = model.get_submodule(_task_path(model, layout.layers_path))
        for index, layer in enumerate(layers):
            attn_o = layer.get_submodule(layout.roles["attn_o"])
            ffn_down = layer.get_submodule(layout.roles["ffn_down"])
            self._handles.append(attn_o.register_forward_pre_hook(
                lambda _m, args, i=index: (_mask_heads(args[0], self.head_mask[i], head_dim), *args[1:])))
            self._handles.append(ffn_down.register_forward_pre_hook(
                lambda _m, args, i=index: (args[0] * self.neuron_mask[i], *args[1:])))
        modules = lora_modules(model, layout)
        if not modules:
            raise ValueError("Light-PEFT found no LoRA module")
        self.scaling = {k: float(m.scaling[ADAPTER]) for k, m in modules.items()}
        self._importance = _Importance(modules)
        return model

    # -- the estimation stage's hooks ---------------------------------------------------
    def optimizer_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        if self.stage != ESTIMATE:
            return []
        return [{"params": [self.head_mask, self.neuron_mask], "lr": self.config.mask_lr}]

    def before_step(self, loop: TrainingLoop, batch: dict[str, torch.Tensor]) -> None:
        if self.stage == ESTIMATE:
            self._importance.recording = loop.step >= loop.total_steps // 2
            self._importance.token_mask = batch.get("attention_mask")

    def extra_loss(self, loop: TrainingLoop, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if self.stage != ESTIMATE or not self.config.l1:
            return None
        return self.config.l1 * (self.head_mask.abs().sum() + self.neuron_mask.abs().sum())

    def before_optimizer_step(self, loop: TrainingLoop) -> None:
        if self.stage != ESTIMATE:
            return
        for mask, importance in ((self.head_mask, self.head_importance), (self.neuron_mask, self.neuron_importance)):
            if mask.grad is not None:  # the task loss's gradient: the L1 penalty's taken out
                task_grad = mask.grad.detach() - self.config.l1 * torch.sign(mask.detach())
                importance += (mask.detach() * task_grad).abs().cpu()
        if self._importance.recording:
            self._importance.record_ranks()

    def on_train_end(self, loop: TrainingLoop) -> None:
        if self.stage != ESTIMATE:
            return
        for handle in self._handles:
            handle.remove()
        self._importance.remove()
        self.plan = self._prune_base()
        self._prune_adapter()
        modules = self._importance.modules
        self.estimated = {name: p.detach().clone() for name, p in loop.model.named_parameters()
                          if p.requires_grad and "lora_" not in name}
        self.estimated_lora = {key: (m.lora_A[ADAPTER].weight.detach().clone(),
                                     m.lora_B[ADAPTER].weight.detach().clone()) for key, m in modules.items()}
        self.figures["light_peft_trainable_before"] = sum(
            p.numel() for p in loop.model.parameters() if p.requires_grad)

    # -- pruning decisions ----------------------------------------------------------------
    def _prune_base(self) -> PruningPlan:
        heads, neurons = self.head_importance, self.neuron_importance
        kept_heads = _keep_groups(heads, self.kv_groups, self.config.head_prune)
        removed = lowest(neurons, self.config.neuron_prune)
        per_layer = neurons.shape[1]
        kept_neurons = {i: _keep(row, removed[(removed // per_layer) == i] % per_layer)
                        for i, row in enumerate(neurons)}
        self.figures.update({
            "light_peft_heads_removed": sum(heads.shape[1] - len(v) for v in kept_heads.values()),
            "light_peft_neurons_removed": sum(per_layer - len(v) for v in kept_neurons.values()),
            "light_peft_heads_kept": {str(i): len(v) for i, v in kept_heads.items()},
            "light_peft_neurons_kept": {str(i): len(v) for i, v in kept_neurons.items()}})
        if self.kv_groups > 1:
            self.figures["light_peft_kv_heads_removed"] = sum(
                heads.shape[1] - len(v) for v in kept_heads.values()) // self.kv_groups
        return PruningPlan(self.plan.head_dim, kept_heads, kept_neurons, self.kv_groups)

    def _prune_adapter(self) -> None:
        module_score, rank_score = self._importance.averages()
        keys = list(module_score)
        scores = torch.tensor([module_score[k] for k in keys])
        dropped = set(lowest(scores, self.config.module_prune).tolist())
        if len(dropped) == len(keys):
            dropped.discard(int(scores.argmax()))
        kept = [k for i, k in enumerate(keys) if i not in dropped]
        flat = torch.cat([rank_score[k] for k in kept])
        removed = set(lowest(flat, self.config.rank_prune).tolist())
        offset = 0
        for key in kept:
            r = rank_score[key].numel()
            local = torch.tensor([i - offset for i in range(offset, offset + r) if i in removed], dtype=torch.long)
            self.kept_ranks[key] = torch.tensor(_keep(rank_score[key], local))
            offset += r
        self.figures.update({
            "light_peft_modules_kept": len(kept), "light_peft_modules_before": len(keys),
            "light_peft_ranks_kept": sum(int(v.numel()) for v in self.kept_ranks.values()),
            "light_peft_ranks_before": int(sum(v.numel() for v in rank_score.values())),
            "light_peft_module_importance": {f"{l}.{r}": float(module_score[(l, r)]) for l, r in keys}})

    # -- the result ------------------------------------------------------------------------
    def finalize(self, model: nn.Module) -> nn.Module:
        self.figures["light_peft_trainable_after"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return model

    def report(self) -> dict[str, Any]:
        return dict(self.figures)

    def save(self, model: nn.Module, path: Path) -> None:
        self.plan.save(path)

    @classmethod
    def prepare_base(cls, base: nn.Module, path: Path) -> nn.Module:
        from autopeft.models import model_layout

        plan = PruningPlan.load(path)
        return apply_plan(base, model_layout(base), plan) if plan is not None else base


def _task_path(model: nn.Module, layers_path: str) -> str:
    """``layers_path`` as seen from ``model`` (a PEFT wrapper adds a prefix)."""
    for name, _ in model.named_modules():
        if name == layers_path or name.endswith("." + layers_path):
            return name
    raise ValueError(f"no module '{layers_path}' in the model")


def _mask_heads(x: torch.Tensor, mask: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Multiply each head's slice of the last dimension of ``x`` by its mask value."""
    return (x.unflatten(-1, (-1, head_dim)) * mask.unsqueeze(-1)).flatten(-2)


def _keep_groups(masks: torch.Tensor, groups: int, share: float) -> dict[int, tuple[int, ...]]:
    """Kept query heads per layer when ``share`` of each layer's key/value groups go.

    ``masks`` (layers x query heads) are the heads' importances; query head ``h`` belongs to group
    ``h // groups``. Whole groups are pruned, not single query heads, because LLaMA's
    attention pairs query and key/value heads by position (``repeat_kv``): removing query
    heads unevenly would misalign them, and removing the same number from every group would
    leave the key/value projections, and the cache, unpruned and is impossible for groups of
    one (multi-head attention, where this is plain per-head pruning: a group's mean is its
    one mask value). Groups are of equal size, so their mean masks rank as their sums do.
    """
    scores = masks.unflatten(1, (-1, groups)).mean(dim=2)  # layers x key/value heads
    kept = {}
    for layer, row in enumerate(scores):
        kept_groups = _keep(row, lowest(row, share))
        kept[layer] = tuple(g * groups + j for g in kept_groups for j in range(groups))
    return kept


def _keep(scores: torch.Tensor, removed: torch.Tensor) -> tuple[int, ...]:
    """The indices of ``scores`` not in ``removed`` (sorted); the best one when none would stay."""
    gone = set(removed.tolist())
    return tuple(i for i in range(scores.numel()) if i not in gone) or (int(scores.argmax()),)
