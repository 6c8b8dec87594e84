"""Every choice that depends on the hardware, made in one place with the reason for it: the
device a trial trains on, whether 4-bit base weights can load, where peak memory is read,
and what precision a model loads in.

Each decision is a pure function of a :class:`DeviceReport`, so both branches are tested on a
CPU machine with a report that says otherwise (``tests/test_devices.py``); only
:meth:`DeviceReport.probe` looks at the machine.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

#: the variable Ray sets in a worker to the GPUs it assigned (``num_gpus`` of the task)
VISIBLE = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class DeviceReport:
    """What this process can use: CUDA devices (as the process sees them, after
    ``CUDA_VISIBLE_DEVICES``), their bf16 support, bitsandbytes, and the GPU ids Ray assigned
    (empty outside a Ray worker or for a trial that asked for none)."""

    cuda_devices: int = 0
    bf16_supported: bool = False
    bitsandbytes: bool = False
    ray_gpu_ids: tuple[str, ...] = ()
    visible_devices: str | None = None
    names: tuple[str, ...] = field(default=())

    @classmethod
    def probe(cls) -> DeviceReport:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return cls(cuda_devices=count, bf16_supported=bool(count and torch.cuda.is_bf16_supported()),
                   bitsandbytes=importlib.util.find_spec("bitsandbytes") is not None,
                   ray_gpu_ids=_ray_gpu_ids(), visible_devices=os.environ.get(VISIBLE),
                   names=tuple(torch.cuda.get_device_name(i) for i in range(count)))


def _ray_gpu_ids() -> tuple[str, ...]:
    try:
        import ray

        if not ray.is_initialized():
            return ()
        return tuple(str(i) for i in ray.get_gpu_ids())
    except Exception:  # not in a Ray worker, or no Ray: no assignment to honour
        return ()


@dataclass(frozen=True)
class Placement:
    """Where a trial trains: ``device`` (``cuda:N`` or ``cpu``), the GPU ids Ray assigned it,
    and why."""

    device: str
    gpu_ids: tuple[str, ...]
    reason: str


def choose_device(report: DeviceReport) -> Placement:
    """The assigned GPU where there is CUDA, else the CPU, said so.

    Ray narrows ``CUDA_VISIBLE_DEVICES`` to a worker's assigned GPUs, so its first visible
    device is the assigned one; where Ray was told not to (its NOSET setting, all GPUs then
    visible), the assigned id is used as the index: never ``cuda:0`` by habit."""
    if not report.cuda_devices:
        why = ("no CUDA device: the trial trains on the CPU"
               + (f" (Ray assigned GPU {', '.join(report.ray_gpu_ids)}, which this process cannot see)"
                  if report.ray_gpu_ids else ""))
        return Placement("cpu", report.ray_gpu_ids, why)
    ids = report.ray_gpu_ids
    if not ids:
        return Placement("cuda:0", (), "the first visible CUDA device (no GPU assigned by Ray)")
    visible = [v.strip() for v in (report.visible_devices or "").split(",") if v.strip()]
    if visible and ids[0] in visible:
        index = visible.index(ids[0])
    else:  # every device visible: the id is the index
        index = int(ids[0]) if ids[0].isdigit() and int(ids[0]) < report.cuda_devices else 0
    return Placement(f"cuda:{index}", ids, f"GPU {ids[0]}, as Ray assigned it")


def quantization_unavailable(report: DeviceReport) -> str | None:
    """Why 4-bit base weights (QLoRA) cannot load here, or None when they can."""
    if not report.cuda_devices:
        return "4-bit base weights (QLoRA) need a CUDA GPU; none is visible"
    if not report.bitsandbytes:
        return "4-bit base weights (QLoRA) need the bitsandbytes package (`pip install bitsandbytes`)"
    return None


def reads_cuda_memory(device: str) -> bool:
    """Whether a trial's peak memory is CUDA's allocator peak (on a GPU) rather than the
    process's resident set (on the CPU, sampled)."""
    return device.startswith("cuda")


def precision(requested: str, report: DeviceReport, device: str) -> tuple[str, str]:
    """The precision a model loads in for ``requested`` (``fp32`` or ``bf16``) on ``device``,
    and why: bf16 stays bf16 on the CPU (slower than fp32 on most, but what was asked) and on a
    GPU that computes in it; a GPU without bf16 (before Ampere) loads in fp32."""
    if requested != "bf16":
        return requested, "as asked"
    if device.startswith("cuda") and not report.bf16_supported:
        return "fp32", "this GPU has no bf16 arithmetic (before Ampere): fp32 instead"
    return "bf16", "as asked"
