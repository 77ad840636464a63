"""Building and loading token classifiers: scratch BERT presets, hub encoders, registry taggers (safetensors only)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, BertConfig, BertForTokenClassification

from shared.defaults import TAGGER_PRESETS
from worker.ml.lm.loading import check_safe_weights


class TaggerLoadError(ValueError):
    """The base model cannot be used as a tagger (no fast tokenizer, pickle-only weights, …)."""


def scratch_model(size: str, vocab_size: int, labels: list[str], max_length: int) -> BertForTokenClassification:
    """A randomly initialised BERT encoder of a preset shape with a token-classification head for ``labels``."""
    shape = TAGGER_PRESETS[size]
    config = BertConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max(512, max_length),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **shape,
    )
    return BertForTokenClassification(config)


def load_tokenizer(source: str, local_files_only: bool = True):
    """The model's fast tokenizer (word ids and character offsets need one)."""
    tok = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    if not tok.is_fast:
        raise TaggerLoadError(f"{source}: a fast tokenizer is needed (word alignment and offsets)")
    return tok


def pretrained_model(source: str, labels: list[str], local_files_only: bool = True):
    """A hub or local encoder with a token-classification head for ``labels``.

    A registry tagger with the same labels keeps its head; other label sets get a new head (the encoder is kept).
    """
    if Path(source).is_dir():
        check_safe_weights(Path(source))
    return AutoModelForTokenClassification.from_pretrained(
        source,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        ignore_mismatched_sizes=True,
        local_files_only=local_files_only,
        use_safetensors=Path(source).is_dir() or None,
    )


def load_tagger(source: str, device: torch.device, local_files_only: bool = True):
    """(model in eval mode on ``device``, tokenizer, labels) for inference."""
    if Path(source).is_dir():
        check_safe_weights(Path(source))
    model = AutoModelForTokenClassification.from_pretrained(
        source, local_files_only=local_files_only, use_safetensors=Path(source).is_dir() or None
    )
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return model.to(device).eval(), load_tokenizer(source, local_files_only), labels


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
