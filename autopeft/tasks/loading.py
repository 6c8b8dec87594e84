"""Loading a base model as a trial's :class:`~autopeft.tasks.base.ModelOptions` say: precision,
gradient checkpointing and 4-bit (QLoRA) base weights."""

from __future__ import annotations

from typing import Any

import torch

from autopeft import devices
from autopeft.errors import ModelError
from autopeft.tasks.base import ModelOptions


def quantization_unavailable() -> str | None:
    """Why 4-bit base weights cannot be used here, or None when they can."""
    return devices.quantization_unavailable(devices.DeviceReport.probe())


def load_pretrained(auto_class: Any, model_path: str, options: ModelOptions, **kwargs: Any
                    ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``auto_class.from_pretrained(model_path, **kwargs)`` as ``options`` say, with its loading
    info (missing keys: the new task head)."""
    report = devices.DeviceReport.probe()
    placement = devices.choose_device(report)
    if options.quantization == "4bit":
        reason = devices.quantization_unavailable(report)
        if reason:
            raise ModelError(reason)
        from transformers import BitsAndBytesConfig

        # QLoRA's recipe (Dettmers et al. 2023): NF4 storage, double quantisation, bf16 compute.
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": placement.device}  # the GPU Ray assigned, not cuda:0 by habit
    dtype, _ = devices.precision(options.precision, report, placement.device)
    model, info = auto_class.from_pretrained(model_path, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32,
                                             output_loading_info=True, **kwargs)
    if options.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=options.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif options.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ModelError(f"{type(model).__name__} does not support gradient checkpointing")
        # Non-reentrant checkpointing lets gradients reach adapters when no input requires
        # grad (frozen embeddings); the reentrant default would need enable_input_require_grads.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, info
