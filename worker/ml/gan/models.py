"""GAN networks: a DCGAN and the fully connected GAN of the reference article, plus saving/loading a generator.

Both discriminators return a raw **logit** (no Sigmoid): training uses ``BCEWithLogitsLoss``, which is the
numerically stable form of Sigmoid + BCE. Both generators take a flat latent ``(B, latent_dim)`` and return
images ``(B, C, H, W)`` in ``[-1, 1]`` (Tanh), the range :mod:`worker.ml.gan.data` normalises real images to.

A saved generator is a directory holding ``generator.safetensors`` (weights, no pickle) and ``generator.json``
(a :class:`GeneratorSpec`), enough to rebuild the network without the training job's config.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from shared.weights import UnsafeWeightsError, pickle_files

logger = logging.getLogger(__name__)

ARCHITECTURES = ("dcgan", "mlp")
IMAGE_SIZES = (28, 32, 64)
WEIGHTS_FILE = "generator.safetensors"
SPEC_FILE = "generator.json"
SPEC_FORMAT = "genqueue-gan-generator/1"


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything needed to rebuild a generator network; stored as ``generator.json`` next to its weights."""

    architecture: str = "dcgan"
    image_size: int = 28
    channels: int = 1
    latent_dim: int = 100
    features: int = 64  # DCGAN width (ngf/ndf of pytorch/examples); unused by "mlp"

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; choose one of {ARCHITECTURES}")
        if self.image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {IMAGE_SIZES}, not {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {self.channels}")
        if self.latent_dim < 1 or self.features < 1:
            raise ValueError("latent_dim and features must be positive")

    def to_json(self) -> str:
        return json.dumps({"format": SPEC_FORMAT, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GeneratorSpec:
        """Parse ``generator.json``; unknown keys are ignored, wrong types or values raise ``ValueError``."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format", SPEC_FORMAT) != SPEC_FORMAT:
            raise ValueError(f"not a {SPEC_FORMAT} spec")
        known = {f.name: f.type for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key, value in kwargs.items():
            want = str if key == "architecture" else int
            if not isinstance(value, want) or isinstance(value, bool):
                raise ValueError(f"generator spec field {key!r} must be {want.__name__}")
        return cls(**kwargs)


def _up_stages(image_size: int) -> tuple[int, int]:
    """(side of the first feature map, number of ×2 stages to reach ``image_size``): 7→14→28, 4→…→32/64."""
    base = 7 if image_size == 28 else 4
    return base, (image_size // base).bit_length() - 1


class Generator(nn.Module):
    """DCGAN generator (pytorch/examples ``dcgan``), sized for 28, 32 or 64 pixel images.

    z → ConvT(k=base) to a ``base``×``base`` map → [ConvT(4, 2, 1) + BN + ReLU] × (stages - 1) → ConvT → Tanh.
    Widths halve at each stage and end at ``features`` before the image layer.
    """

    def __init__(self, latent_dim: int = 100, image_size: int = 28, channels: int = 1, features: int = 64):
        super().__init__()
        self.latent_dim = latent_dim
        base, stages = _up_stages(image_size)
        width = features * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, width, base, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(stages - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.size(0), self.latent_dim, 1, 1))  # (B, nz) → (B, nz, 1, 1) → (B, C, H, W)


class Discriminator(nn.Module):
    """DCGAN discriminator: the generator mirrored with strided Conv + BN + LeakyReLU(0.2); returns a logit."""

    def __init__(self, image_size: int = 28, channels: int = 1, features: int = 64):
        super().__init__()
        base, stages = _up_stages(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, features, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        width = features
        for _ in range(stages - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2, True),
            ]
            width *= 2
        layers.append(nn.Conv2d(width, 1, base, 1, 0, bias=False))  # (B, width, base, base) → (B, 1, 1, 1)
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)  # (B, C, H, W) → (B,) logits


class MLPGenerator(nn.Module):
    """The reference article's fully connected generator: latent → 256 → 512 → 1024 → C·H·W, ReLU, Tanh."""

    def __init__(self, latent_dim: int = 100, image_size: int = 28, channels: int = 1):
        super().__init__()
        self.shape = (channels, image_size, image_size)
        self.model = nn.Sequential(
            nn.Linear(latent_dim, 256),
            nn.ReLU(True),
            nn.Linear(256, 512),
            nn.ReLU(True),
            nn.Linear(512, 1024),
            nn.ReLU(True),
            nn.Linear(1024, channels * image_size * image_size),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z).view(z.size(0), *self.shape)  # (B, nz) → (B, C, H, W)


class MLPDiscriminator(nn.Module):
    """The reference article's discriminator C·H·W → 1024 → 512 → 256 → 1, returning a logit (no Sigmoid).

    LeakyReLU(0.2) instead of the article's ReLU: a ReLU discriminator passes no gradient through dead units,
    which starves the generator early on.
    """

    def __init__(self, image_size: int = 28, channels: int = 1):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(channels * image_size * image_size, 1024),
            nn.LeakyReLU(0.2, True),
            nn.Linear(1024, 512),
            nn.LeakyReLU(0.2, True),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.2, True),
            nn.Linear(256, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.flatten(1)).view(-1)  # (B, C, H, W) → (B, C·H·W) → (B,) logits


def weights_init(m: nn.Module) -> None:
    """DCGAN initialisation (Radford et al.): conv weights N(0, 0.02), BatchNorm gains N(1, 0.02), biases 0.

    Linear layers (the MLP GAN) keep PyTorch's default initialisation, as in the reference article.
    """
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def build_generator(spec: GeneratorSpec) -> nn.Module:
    """A freshly initialised generator for ``spec``."""
    if spec.architecture == "mlp":
        gen: nn.Module = MLPGenerator(spec.latent_dim, spec.image_size, spec.channels)
    else:
        gen = Generator(spec.latent_dim, spec.image_size, spec.channels, spec.features)
    gen.apply(weights_init)
    return gen


def build_gan(
    architecture: str, image_size: int, channels: int, latent_dim: int, features: int = 64
) -> tuple[nn.Module, nn.Module]:
    """A freshly initialised ``(generator, discriminator)`` pair (uses the global torch RNG)."""
    spec = GeneratorSpec(architecture, image_size, channels, latent_dim, features)
    gen = build_generator(spec)
    if architecture == "mlp":
        disc: nn.Module = MLPDiscriminator(image_size, channels)
    else:
        disc = Discriminator(image_size, channels, features)
    disc.apply(weights_init)
    return gen, disc


def save_generator(gen: nn.Module, spec: GeneratorSpec, out_dir: Path) -> Path:
    """Write ``generator.safetensors`` + ``generator.json`` into ``out_dir`` atomically (temp dir + rename)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".tmp-{out_dir.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(gen, str(tmp / WEIGHTS_FILE))
    (tmp / SPEC_FILE).write_text(spec.to_json())
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    logger.info("generator saved: %s (%s)", out_dir, spec)
    return out_dir


def load_generator(gen_dir: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, GeneratorSpec]:
    """Rebuild a saved generator in eval mode on ``device``; refuses pickle weights (:class:`UnsafeWeightsError`)."""
    gen_dir = Path(gen_dir)
    weights = gen_dir / WEIGHTS_FILE
    if not weights.is_file():
        pickles = pickle_files(gen_dir)
        if pickles:
            raise UnsafeWeightsError(
                f"{gen_dir} holds pickle weights ({', '.join(pickles)}) and no {WEIGHTS_FILE}: genqueue loads "
                "generator weights only as safetensors, since unpickling can run arbitrary code"
            )
        raise FileNotFoundError(f"{gen_dir} is not a generator directory: {WEIGHTS_FILE} is missing")
    spec_path = gen_dir / SPEC_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"{gen_dir} is not a generator directory: {SPEC_FILE} is missing")
    spec = GeneratorSpec.from_json(spec_path.read_text())
    with torch.random.fork_rng(devices=[]):  # the initialisation is overwritten: leave the caller's RNG alone
        gen = build_generator(spec)
    load_model(gen, str(weights), strict=True, device=str(device))
    return gen.to(device).eval(), spec
