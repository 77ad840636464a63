"""Loading a causal LM and its tokenizer for generation: safetensors only, eval mode, SDPA, left padding.

``source`` is a local Hugging Face directory (a registry model, one an operator registered, a test's tiny model)
or a hub id such as ``gpt2``; with ``local_files_only`` a hub id resolves from the local HF cache only, so nothing
here touches the network unless asked to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from shared.weights import UnsafeWeightsError, context_length_of, pickle_files
from worker.ml.common import Device

__all__ = [
    "LoadedLM",
    "UnsafeWeightsError",
    "check_safe_weights",
    "context_length_of",
    "count_tokens",
    "load_causal_lm",
]

logger = logging.getLogger(__name__)


@dataclass
class LoadedLM:
    """A causal LM ready for :func:`worker.ml.lm.generate.generate`."""

    model: PreTrainedModel
    tokenizer: object  # a PreTrainedTokenizer(Fast), left padding, pad token set
    context_length: int  # the longest sequence (prompt + new tokens) the model takes
    source: str
    device: Device


def check_safe_weights(directory: Path) -> None:
    """Raise :class:`UnsafeWeightsError` when ``directory`` has pickle weights and no ``*.safetensors``."""
    names = [p.name for p in directory.iterdir() if p.is_file()]
    if any(n.endswith(".safetensors") for n in names):
        return
    pickles = pickle_files(directory)
    if pickles:
        raise UnsafeWeightsError(
            f"{directory} holds only pickle weights ({', '.join(pickles)}); genqueue loads safetensors only. "
            "Convert them (e.g. model.save_pretrained(dir, safe_serialization=True)) and register that directory."
        )


def _weights_dtype(device: Device) -> torch.dtype:
    if device.is_cuda and device.autocast_dtype == torch.bfloat16:
        return torch.bfloat16
    return torch.float32


def load_tokenizer(source: str, local_files_only: bool = True):
    """The model's tokenizer with left padding (decoder-only batching) and pad = EOS when it has no pad token."""
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"{source}: the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(source: str, device: Device, local_files_only: bool = True) -> LoadedLM:
    """Load ``source`` (local HF dir or hub id) for inference on ``device``.

    Safetensors only (:class:`UnsafeWeightsError` for a pickle-only directory), eval mode, SDPA attention, bf16
    weights on CUDA when ``device.autocast_dtype`` is bf16, fp32 otherwise. The model's generation config gets
    the tokenizer's pad token (and its EOS when the model declares none).
    """
    source = str(source)
    if Path(source).is_dir():
        check_safe_weights(Path(source))
    tokenizer = load_tokenizer(source, local_files_only)
    model = AutoModelForCausalLM.from_pretrained(
        source,
        use_safetensors=True,
        local_files_only=local_files_only,
        attn_implementation="sdpa",
        dtype=_weights_dtype(device),
    )
    model.to(device.torch_device).eval()
    model.requires_grad_(False)
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    if gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id
    context = context_length_of(model.config)
    logger.info("loaded %s on %s (%s, context %d)", source, device.name, model.dtype, context)
    return LoadedLM(model=model, tokenizer=tokenizer, context_length=context, source=source, device=device)


def count_tokens(tokenizer, texts: Sequence[str]) -> list[int]:
    """Token count of each text, encoded the way :func:`worker.ml.lm.generate.generate` encodes prompts."""
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(list(texts))["input_ids"]]
