"""A Fréchet distance between real and generated images, with a feature extractor trained on the job's own data.

FID proper uses an Inception network trained on ImageNet: too big for CPU jobs, not available offline, and a poor
fit for 28×28 digits. Instead each job trains a small CNN for a few seconds on its **own real images** with a
label-free self-supervised task, **rotation prediction** (is the image turned by 0, 90, 180 or 270 degrees?).
Predicting rotation needs features of shape and stroke, needs no labels, and so works for any unlabeled image
dataset a user uploads. Its pooled penultimate activations are the features; the score is the Fréchet distance
between the Gaussians fitted to real and generated features:

    FD = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

Numbers are comparable within one job (same extractor), not across jobs or with published FIDs. The extractor is
deterministic given ``seed`` and does not touch the global RNG streams (training resumes stay reproducible).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

MAX_SIDE = 32  # larger images are average-pooled to 32×32 first: cheaper, and enough for these statistics


class RotationNet(nn.Module):
    """Three strided 3×3 convolutions, global average pooling (the features), and a 4-way rotation head."""

    def __init__(self, channels: int, feature_dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(64, feature_dim, 3, 2, 1),
            nn.LeakyReLU(0.2, True),
        )
        self.head = nn.Linear(feature_dim, 4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(-1) > MAX_SIDE:
            x = F.adaptive_avg_pool2d(x, MAX_SIDE)  # (B, C, 32, 32)
        return self.body(x).mean(dim=(2, 3))  # (B, C, H, W) → (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, 4) rotation logits


def _rotated_batch(images: torch.Tensor, batch_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch, each image turned by a random multiple of 90°: ``(B, C, H, W)`` and labels ``(B,)``."""
    idx = torch.randint(len(images), (batch_size,), generator=gen)
    turns = torch.randint(4, (batch_size,), generator=gen)
    x = images[idx.to(images.device)]  # (B, C, H, W)
    rotated = torch.stack([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])  # (4, B, C, H, W)
    pick = turns.to(images.device)
    return rotated[pick, torch.arange(batch_size, device=images.device)], pick


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians, in float64.

    ``Tr((S1 S2)^(1/2))`` is taken as the sum of square roots of the eigenvalues of the symmetric PSD matrix
    ``S1^(1/2) S2 S1^(1/2)`` (same spectrum), via ``eigh``: real by construction, so the complex parts that
    ``sqrtm`` of the non-symmetric product can show from round-off never arise; tiny negative eigenvalues are
    clipped to 0.
    """
    diff = mu1 - mu2
    w, v = scipy.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # S1^(1/2)
    middle = root1 @ sigma2 @ root1
    eig = scipy.linalg.eigh((middle + middle.T) / 2.0, eigvals_only=True)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)
    return max(value, 0.0)


def _gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)  # (D,), (D, D)


class FrechetScorer:
    """Trains the rotation feature extractor on ``images`` once; :meth:`score` compares generated images to them.

    ``images``: ``(N, C, H, W)`` in [-1, 1] (any device). At most ``max_real`` of them (a seeded choice) give the
    real statistics.
    """

    def __init__(
        self,
        images: torch.Tensor,
        device: torch.device | str = "cpu",
        seed: int = 0,
        train_steps: int = 120,
        batch_size: int = 64,
        max_real: int = 2000,
        feature_dim: int = 64,
    ):
        start = time.perf_counter()
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = RotationNet(images.size(1), feature_dim).to(self.device)
        gen = torch.Generator().manual_seed(seed)
        images = images.to(self.device)
        accuracy = self._train(images, train_steps, batch_size, gen)
        real_idx = torch.randperm(len(images), generator=gen)[:max_real].to(self.device)
        self.mu, self.sigma = _gaussian(self.features(images[real_idx]))
        logger.info(
            "FD extractor: rotation accuracy %.2f after %d steps, %d real images, %.1fs",
            accuracy,
            train_steps,
            len(real_idx),
            time.perf_counter() - start,
        )

    def _train(self, images: torch.Tensor, steps: int, batch_size: int, gen: torch.Generator) -> float:
        """Rotation prediction with Adam; returns the last batch's accuracy (a sanity signal for the logs)."""
        opt = torch.optim.Adam(self.net.parameters(), lr=2e-3)
        self.net.train()
        correct = torch.zeros(())
        for _ in range(steps):
            x, y = _rotated_batch(images, batch_size, gen)  # (B, C, H, W), (B,)
            logits = self.net(x)  # (B, 4)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct = (logits.argmax(1) == y).float().mean()
        self.net.eval()
        return float(correct)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
        """``(N, C, H, W)`` in [-1, 1] → ``(N, D)`` float64 features."""
        parts = [self.net.features(chunk.to(self.device).float()) for chunk in images.split(batch_size)]
        return torch.cat(parts).double().cpu().numpy()

    def score(self, fake_images: torch.Tensor) -> float:
        """Fréchet distance between the real images and ``fake_images`` (``(N, C, H, W)``, N ≥ 2; ~500+ is stabler)."""
        if len(fake_images) < 2:
            raise ValueError("need at least 2 generated images for a covariance")
        mu, sigma = _gaussian(self.features(fake_images))
        return frechet_distance(self.mu, self.sigma, mu, sigma)
