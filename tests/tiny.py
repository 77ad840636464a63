"""Tiny, offline stand-ins for real models, built in the test and saved with ``save_pretrained``.

Tests load them back through genqueue's real loading code; nothing comes from a hub.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from transformers import GPT2Config, GPT2LMHeadModel

from shared.corpus import stdlib_documents
from worker.ml.lm.tokenizer import train_bpe_tokenizer


@lru_cache(maxsize=1)
def tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE trained on a slice of the stdlib docstrings (cached per process)."""
    return train_bpe_tokenizer(stdlib_documents(max_chars=60_000), vocab_size=vocab_size)


def make_tiny_gpt2(
    path: Path, n_positions: int = 128, n_embd: int = 32, n_layer: int = 2, n_head: int = 2, seed: int = 0
) -> Path:
    """Save a randomly initialised tiny GPT-2 and its tokenizer as a Hugging Face directory at ``path``."""
    import torch

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    path = Path(path)
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
