"""Token choice shared by the engines: repetition penalty, temperature / top-k / top-p draws, per-row uniforms.

The continuous engine draws each row's uniform from a counter-based hash of (seed, prompt index, sequence, token
number), so a row's samples never depend on which rows share its decode step, when it joined, or how often it
was restarted after an out-of-memory error.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor

_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(_MIX[1])
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(_MIX[2])
    return x ^ (x >> np.uint64(31))


def row_uniforms(seed: int | np.ndarray, index: np.ndarray, sequence: np.ndarray, step: np.ndarray) -> np.ndarray:
    """One uniform in [0, 1) per row (float64), a pure function of (seed, index, sequence, step); ``seed`` is one
    for all rows or one per row."""
    with np.errstate(over="ignore"):
        x = _splitmix(np.broadcast_to(np.asarray(seed, dtype=np.uint64), index.shape) + np.uint64(_MIX[0]))
        for part in (index, sequence, step):
            x = _splitmix(x ^ (part.astype(np.uint64) * np.uint64(_MIX[3]) + np.uint64(_MIX[0])))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def draw(scores: torch.Tensor, temperature: float, top_k: int | None, top_p: float, u: torch.Tensor) -> torch.Tensor:
    """The token each row samples from ``scores`` (B, V) given its uniform ``u`` (B, 1): returns (B, 1) ids.

    Temperature, then top-k (values sorted descending), then nucleus top-p over what is left; inverse-CDF
    sampling with ``u``. Only the top-k are sorted, which is much cheaper than ``torch.multinomial`` over the vocab.
    """
    scores = scores.float()  # (B, V)
    if top_k and top_k < scores.shape[-1]:
        values, ids = scores.topk(top_k, dim=-1)  # (B, k), descending
    elif top_p < 1:
        values, ids = scores.sort(dim=-1, descending=True)  # (B, V)
    else:
        values, ids = scores, None
    probs = torch.softmax(values / temperature, dim=-1)  # (B, K)
    if top_p < 1:  # nucleus: keep the smallest prefix whose mass reaches top_p (at least one token)
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0)
    cdf = probs.cumsum(-1)  # (B, K)
    target = u.to(cdf.device, cdf.dtype) * cdf[:, -1:]  # (B, 1)
    choice = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)  # (B, 1)
    return choice if ids is None else ids.gather(1, choice)  # (B, 1)


def penalize(scores: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """HF's repetition penalty: every token in ``history`` (B, T) gets its score divided (or, if < 0, multiplied).

    ``history`` may repeat a token (padding repeats a token of the row): the update is the same for each copy.
    """
    picked = scores.gather(1, history)  # (B, T)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, history, picked)  # (B, V)


class Sample(LogitsProcessor):
    """The static engine's sampler under HF's greedy search: draws with a per-batch generator, returns one-hot scores.

    It runs last (after the repetition penalty and min-length processors); the argmax of what it returns is the
    drawn token.
    """

    def __init__(self, temperature: float, top_k: int | None, top_p: float, generator: torch.Generator):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        u = torch.rand((scores.shape[0], 1), generator=self.generator, device=scores.device)  # (B, 1)
        token = draw(scores, self.temperature, self.top_k, self.top_p, u)  # (B, 1)
        return torch.full_like(scores, float("-inf"), dtype=torch.float32).scatter_(1, token, 0.0)  # (B, V)
