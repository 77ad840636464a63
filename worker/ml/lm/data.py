"""Documents → fixed-length token blocks, a train/validation split, and a deterministic, resumable batch order.

Documents are tokenized, joined with EOS between them (GPT-2 style: the model learns where a document ends),
and cut into ``block_size`` blocks; the remainder is dropped. Labels are the blocks themselves (the model
shifts them), as in transformers' ``run_clm.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

_CHUNK = 1024  # documents tokenized per call: bounds the Python lists alive at once


class DatasetTooSmall(ValueError):
    """The texts do not make the blocks training (and validation) need."""


def tokenize_documents(texts: Sequence[str], tokenizer) -> torch.Tensor:
    """All documents' token ids, each followed by EOS, as one 1-D int32 tensor."""
    eos = tokenizer.eos_token_id
    parts: list[np.ndarray] = []
    for start in range(0, len(texts), _CHUNK):
        chunk = [t for t in texts[start : start + _CHUNK] if t]
        if not chunk:
            continue
        encoded = tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]
        parts.extend(np.asarray([*ids, eos], dtype=np.int32) for ids in encoded)
    if not parts:
        return torch.zeros(0, dtype=torch.int32)
    return torch.from_numpy(np.concatenate(parts))  # (N,)


def to_blocks(ids: torch.Tensor, block_size: int) -> torch.Tensor:
    """Cut a 1-D token stream into ``(n_blocks, block_size)``, dropping the remainder."""
    n = ids.numel() // block_size
    return ids[: n * block_size].view(n, block_size)  # (n, T)


@dataclass
class LMData:
    """Training and validation blocks, ``(n, block_size)`` int32 each."""

    train: torch.Tensor
    val: torch.Tensor


def build_data(
    tokenizer,
    train_texts: Sequence[str],
    val_texts: Sequence[str] | None,
    block_size: int,
    validation_fraction: float,
    seed: int,
    log: Callable[[str], None] = logger.info,
) -> LMData:
    """Tokenize and block the texts; take validation from ``val_texts`` or, failing that, a seeded split.

    Raises :class:`DatasetTooSmall` when there is not one training block, or no validation block can be had.
    """
    train = to_blocks(tokenize_documents(train_texts, tokenizer), block_size)
    if len(train) == 0:
        raise DatasetTooSmall(
            f"the training texts make fewer than {block_size} tokens (one block of block_size); "
            "add text or lower block_size"
        )
    if val_texts:
        val = to_blocks(tokenize_documents(val_texts, tokenizer), block_size)
        if len(val):
            return LMData(train, val)
        log(f"validation texts make no full block of {block_size} tokens: splitting the training texts instead")
    return split_blocks(train, validation_fraction, seed)


def split_blocks(blocks: torch.Tensor, fraction: float, seed: int) -> LMData:
    """Hold out a seeded random ``fraction`` of the blocks (at least one, leaving at least one to train on)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    n = len(blocks)
    if n < 2:
        raise DatasetTooSmall(
            f"the texts make {n} block(s); at least 2 are needed (one to train, one to validate): "
            "add text, lower block_size, or give validation texts"
        )
    n_val = min(n - 1, max(1, round(n * fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return LMData(train=blocks[perm[n_val:].sort().values], val=blocks[perm[:n_val].sort().values])


class BatchOrder:
    """Which training blocks each micro-batch takes: a fresh seeded permutation per epoch, resumable.

    The position is ``(epoch, index into that epoch's permutation)``; a batch that runs off the end of an epoch
    continues into the next one, so every batch is full even when there are fewer blocks than ``batch_size``.
    """

    def __init__(self, n_blocks: int, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        self.n, self.batch_size, self.seed, self.device = n_blocks, batch_size, seed, torch.device(device)
        self.epoch, self.index = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        return torch.randperm(self.n, generator=gen).to(self.device)  # (n,)

    def next(self) -> torch.Tensor:
        """The next ``batch_size`` block indices (on ``device``), advancing the position."""
        taken: list[torch.Tensor] = []
        need = self.batch_size
        while need:
            if self.index == self.n:
                self.load_state_dict({"epoch": self.epoch + 1, "index": 0})
            take = min(need, self.n - self.index)
            taken.append(self._perm[self.index : self.index + take])
            self.index += take
            need -= take
        return taken[0] if len(taken) == 1 else torch.cat(taken)  # (B,)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, index = int(state["epoch"]), int(state["index"])
        if epoch != self.epoch:
            self._perm = self._permutation(epoch)
        self.epoch, self.index = epoch, index
