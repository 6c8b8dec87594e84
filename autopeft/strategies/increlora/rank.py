"""One PEFT LoRA module whose rank grows: ``delta W = alpha / r B (A * E)``.

PEFT cannot grow a rank in place, so the module is built at its largest possible rank and
the rank components are switched on through ``E`` (one value per rank, multiplied into
``lora_A``'s output by a forward hook): ``E`` is a trained parameter for the active ranks,
a tiny frozen 1e-5 for the reserve ranks (advance learning: their ``A`` and ``B`` already
train, Adam's steps being blind to the gradient's scale) and 0 beyond. PEFT's ``scaling`` is
``alpha / r`` with ``r`` the *current* rank, as IncreLoRA scales.

Two departures from the authors' code, both for trials of a few dozen steps:
- LoRA's starting point: A as PEFT draws it (Kaiming), B = 0, E = 1. The authors' A, B ~
  N(0, 0.02) and E = 0 make the update a product of three small factors: after 20 steps its
  output was 1/20 of LoRA's on SmolLM2 and the trial learned nothing.
- A growth keeps the module's output: the existing E are multiplied by ``r' / r`` as the
  scale drops from ``alpha / r`` to ``alpha / r'``, and a promoted component starts at E = 1
  with its B column zeroed (its A, trained in advance, kept). The authors' growth shrinks
  what was learned (rank 1 -> 5 multiplies it by 0.2) and promotes at E = 1e-5, which
  then needs far more steps than a short trial has to matter.
"""

from __future__ import annotations

import math

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

ADAPTER = "default"
RESERVE_E = 1e-5


class GrowingRank:
    """Rank state and importance score of one LoRA module (``name`` as in the model)."""

    def __init__(self, name: str, layer: LoraLayer, init_rank: int, reserve: int, alpha: float) -> None:
        self.name, self.layer, self.alpha = name, layer, alpha
        self.max_rank = layer.r[ADAPTER]
        self.reserve_size = reserve
        self.reserve_value = RESERVE_E if reserve else 0.0
        a = self.A
        with torch.no_grad():
            self.B.zero_()  # LoRA's start (PEFT's own init already has it; a reused layer may not)
        self.chunks: list[nn.Parameter] = [nn.Parameter(torch.ones(init_rank, device=a.device, dtype=a.dtype))]
        self.rank = init_rank
        self.importance = 0.0
        self.uncertainty = 0.0
        self._input: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None
        self._e_hook = layer.lora_A[ADAPTER].register_forward_hook(lambda _m, _a, out: out * self.e())
        self._watch: list[torch.utils.hooks.RemovableHandle] = []
        self._set_scaling()

    @property
    def A(self) -> nn.Parameter:  # noqa: N802  (the paper's names)
        return self.layer.lora_A[ADAPTER].weight

    @property
    def B(self) -> nn.Parameter:  # noqa: N802
        return self.layer.lora_B[ADAPTER].weight

    @property
    def cost(self) -> int:
        """Parameters one rank adds to the saved adapter (a row of A, a column of B)."""
        return self.layer.lora_A[ADAPTER].in_features + self.layer.lora_B[ADAPTER].out_features

    @property
    def allocated(self) -> int:
        """Active plus reserve ranks: the rows of A that the model uses."""
        return min(self.max_rank, self.rank + self.reserve_size)

    def e(self) -> torch.Tensor:
        """``E`` over all ``max_rank`` components: trained, reserve, zero."""
        reserve = self.allocated - self.rank
        tail = self.max_rank - self.allocated
        ref = self.chunks[0]
        return torch.cat([*self.chunks, ref.new_full((reserve,), self.reserve_value), ref.new_zeros(tail)])

    def _set_scaling(self) -> None:
        self.layer.scaling[ADAPTER] = self.alpha / self.rank

    def grow(self, ranks: int) -> nn.Parameter:
        """Activate the next ``ranks`` components (reserve first) without changing the
        module's output: the existing E values rise as the scale falls, and the new ones
        start at 1 over zeroed B columns. Their E values become a new parameter, returned for
        the optimizer."""
        if self.rank + ranks > self.max_rank:
            raise ValueError(f"{self.name}: rank {self.rank} + {ranks} exceeds the allocated {self.max_rank}")
        ref = self.chunks[0]
        with torch.no_grad():
            for chunk in self.chunks:
                chunk.mul_((self.rank + ranks) / self.rank)
            self.B[:, self.rank:self.rank + ranks] = 0.0
        chunk = nn.Parameter(torch.ones(ranks, device=ref.device, dtype=ref.dtype))
        self.chunks.append(chunk)
        self.rank += ranks
        self._set_scaling()
        return chunk

    def close_reserve(self) -> None:
        """The budget is spent: reserve components stop contributing."""
        self.reserve_value = 0.0

    # -- importance: sum |delta W * dL/d delta W| / sqrt(numel) -----------------------------
    def watch(self) -> None:
        """Record the LoRA input and the gradient at ``lora_B``'s output from now on."""
        def keep_input(_m: nn.Module, args: tuple) -> None:
            self._input = args[0].detach()

        def keep_grad(_m: nn.Module, _a: tuple, out: torch.Tensor) -> None:
            if out.requires_grad:
                out.register_hook(lambda g: setattr(self, "_grad", g.detach()))

        self._watch.append(self.layer.lora_A[ADAPTER].register_forward_pre_hook(keep_input))
        self._watch.append(self.layer.lora_B[ADAPTER].register_forward_hook(keep_grad))

    def unwatch(self) -> None:
        for handle in self._watch:
            handle.remove()
        self._watch.clear()
        self._input = self._grad = None

    def score(self) -> float | None:
        """This step's raw importance. With ``y = s B (A * E) x`` and ``g`` the gradient at
        ``lora_B``'s output (``s`` times the gradient at ``y``), ``dL/d delta W = g^T x / s``
        and ``delta W = s B diag(E) A``: the scale cancels."""
        if self._input is None or self._grad is None:
            return None
        x = self._input.reshape(-1, self._input.shape[-1])
        g = self._grad.reshape(-1, self._grad.shape[-1])
        with torch.no_grad():
            delta = self.B @ (self.A * self.e().unsqueeze(1))
            grad = g.T @ x
            value = float((delta * grad).abs().sum() / math.sqrt(delta.numel()))
        self._input = self._grad = None
        return value

    def smooth(self, raw: float, beta: float) -> float:
        """EMAs of the importance and of its deviation; returns the priority (their product)."""
        self.importance = beta * self.importance + (1 - beta) * raw
        self.uncertainty = beta * self.uncertainty + (1 - beta) * abs(raw - self.importance)
        return self.importance * self.uncertainty

    def orthogonality(self) -> torch.Tensor:
        """``||A A^T - I||_F + ||B^T B - I||_F`` over the allocated components."""
        a, b = self.A[: self.allocated], self.B[:, : self.allocated]
        eye = torch.eye(self.allocated, device=a.device, dtype=a.dtype)
        return torch.linalg.norm(a @ a.T - eye) + torch.linalg.norm(b.T @ b - eye)

    def fold(self) -> None:
        """Make the module a plain LoRA of its current rank with the scale and E folded into
        ``lora_B`` (scaling 1), computing exactly what it computes now."""
        self.unwatch()
        self._e_hook.remove()
        r = self.rank
        with torch.no_grad():
            e = self.e()[:r]
            a = self.A[:r].clone()
            b = (self.B[:, :r] * e * (self.alpha / r)).clone()
        old_a, old_b = self.layer.lora_A[ADAPTER], self.layer.lora_B[ADAPTER]
        new_a = nn.Linear(old_a.in_features, r, bias=False, device=a.device, dtype=a.dtype)
        new_b = nn.Linear(r, old_b.out_features, bias=False, device=b.device, dtype=b.dtype)
        new_a.weight = nn.Parameter(a)
        new_b.weight = nn.Parameter(b)
        self.layer.lora_A[ADAPTER], self.layer.lora_B[ADAPTER] = new_a, new_b
        self.layer.r[ADAPTER] = r
        self.layer.lora_alpha[ADAPTER] = r
        self.layer.scaling[ADAPTER] = 1.0
