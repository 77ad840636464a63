"""GAN models, datasets (and their safety checks), training, resume, the Fréchet metric and sampling (CPU, offline)."""

from __future__ import annotations

import gzip
import io
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from worker.ml.common import Stopped, pick_device
from worker.ml.gan.data import ImageDatasetError, Limits, inspect_image_dataset, load_images
from worker.ml.gan.fid import FrechetScorer, frechet_distance
from worker.ml.gan.models import GeneratorSpec, UnsafeWeightsError, build_gan, load_generator, save_generator
from worker.ml.gan.sample import AI_LABEL, generate_images, zip_pngs
from worker.ml.gan.train import GanTrainConfig, train_gan

CPU = pick_device("cpu")


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_images("digits", 28, 1)


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_discriminator_shapes(arch, size, channels):
    torch.manual_seed(0)
    gen, disc = build_gan(arch, size, channels, latent_dim=16, features=8)
    images = gen(torch.randn(5, 16))
    assert images.shape == (5, channels, size, size)
    assert images.min() >= -1 and images.max() <= 1
    logits = disc(images)
    assert logits.shape == (5,)
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in disc.modules()), "D must return logits"


def test_dcgan_init_follows_the_paper():
    torch.manual_seed(0)
    gen, _ = build_gan("dcgan", 64, 3, 100)
    conv = next(m for m in gen.modules() if isinstance(m, torch.nn.ConvTranspose2d))
    assert abs(conv.weight.std().item() - 0.02) < 0.002


def test_save_and_load_generator(tmp_path):
    torch.manual_seed(0)
    spec = GeneratorSpec("dcgan", 32, 3, 20, features=8)
    gen, _ = build_gan("dcgan", 32, 3, 20, features=8)
    out = save_generator(gen.eval(), spec, tmp_path / "g")
    assert sorted(p.name for p in out.iterdir()) == ["generator.json", "generator.safetensors"]
    loaded, loaded_spec = load_generator(out, "cpu")
    assert loaded_spec == spec
    z = torch.randn(3, 20)
    assert torch.equal(loaded(z), gen(z))


def test_load_generator_refuses_pickles(tmp_path):
    gen, _ = build_gan("mlp", 28, 1, 10)
    torch.save(gen.state_dict(), tmp_path / "generator.pt")
    (tmp_path / "generator.json").write_text(GeneratorSpec("mlp", 28, 1, 10).to_json())
    with pytest.raises(UnsafeWeightsError, match="safetensors"):
        load_generator(tmp_path, "cpu")
    with pytest.raises(FileNotFoundError):
        load_generator(tmp_path / "missing", "cpu")


# ---------------------------------------------------------------- training


@pytest.mark.slow
def test_short_dcgan_run_on_digits_lowers_the_frechet_distance(tmp_path, digits):
    # The default width (features=64): at half width some seeds stall for the first few hundred steps.
    cfg = GanTrainConfig(max_steps=200, batch_size=64, sample_every=100, fid_every=2, checkpoint_every=100, seed=0)
    reports, samples = [], []
    result = train_gan(
        cfg,
        digits,
        tmp_path,
        CPU,
        lambda s, t, **m: reports.append((s, t, m)),
        lambda step, png: samples.append((step, png)),
    )
    fds = [(s, m["fd"]) for s, _, m in reports if "fd" in m]
    assert [s for s, _ in fds] == [0, 200]
    assert fds[-1][1] < 0.5 * fds[0][1], fds
    assert [s for s, _, _ in reports[1:]] == list(range(1, 201)) and reports[-1][1] == 200
    assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(reports[-1][2])
    assert 0 <= reports[-1][2]["d_real"] <= 1 and 0 <= reports[-1][2]["d_fake"] <= 1
    assert [s for s, _ in samples] == [100, 200]
    assert Image.open(io.BytesIO(samples[-1][1])).size == (8 * 30 + 2, 8 * 30 + 2)  # 8×8 tiles of 28 + 2 padding
    assert result.steps == 200 and result.resumed_from_step is None and result.metrics["fd"] == fds[-1][1]
    gen, spec = load_generator(result.generator_dir, "cpu")
    assert spec == cfg.spec()


def _tiny_cfg(**kw) -> GanTrainConfig:
    base = dict(
        max_steps=12,
        batch_size=16,
        features=8,
        latent_dim=16,
        sample_every=4,
        fid_every=0,
        checkpoint_every=5,
        keep_checkpoints=2,
        seed=3,
        sample_grid=4,
    )
    return GanTrainConfig(**{**base, **kw})


def test_stop_checkpoint_and_resume_continue_exactly(tmp_path, digits):
    images = digits[:100]
    ignore = lambda *a, **k: None  # noqa: E731
    straight = train_gan(_tiny_cfg(), images, tmp_path / "a", CPU, ignore, ignore)

    def stop_at_7(step, total, **metrics):
        if step == 7:
            raise Stopped("cancelled")

    with pytest.raises(Stopped):
        train_gan(_tiny_cfg(), images, tmp_path / "b", CPU, stop_at_7, ignore)
    ckpts = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir())
    assert ckpts == ["step-00000005", "step-00000007"]
    state = torch.load(tmp_path / "b/checkpoints/step-00000007/state.pt", weights_only=True)
    assert {"optimizer_g", "optimizer_d", "rng", "data", "fixed_noise", "cfg"} <= set(state)
    seen = []
    resumed = train_gan(_tiny_cfg(), images, tmp_path / "b", CPU, lambda s, t, **m: seen.append(s), ignore)
    assert resumed.resumed_from_step == 7 and seen == list(range(8, 13))
    a = load_file(straight.generator_dir / "generator.safetensors")
    b = load_file(resumed.generator_dir / "generator.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="different network"):
        train_gan(_tiny_cfg(features=4, max_steps=20), images, tmp_path / "b", CPU, ignore, ignore)


def test_config_and_images_are_validated(digits):
    with pytest.raises(ValueError):
        GanTrainConfig(image_size=30)
    with pytest.raises(ValueError):
        GanTrainConfig(max_steps=5, epochs=1.0)
    with pytest.raises(ValueError, match="images must be"):
        train_gan(_tiny_cfg(channels=3), digits[:8], Path("/nonexistent"), CPU, print, print)


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_distance_closed_form():
    one = np.eye(1)
    assert frechet_distance(np.zeros(1), one, np.zeros(1), one) == pytest.approx(0.0, abs=1e-9)
    # |2|^2 + 1 + 4 - 2 * sqrt(1 * 4) = 5
    assert frechet_distance(np.zeros(1), one, np.array([2.0]), 4 * one) == pytest.approx(5.0)


def test_scorer_is_deterministic_and_separates_real_from_noise(digits):
    noise = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    first = FrechetScorer(digits[:1000], "cpu", seed=1, train_steps=60)
    again = FrechetScorer(digits[:1000], "cpu", seed=1, train_steps=60)
    assert first.score(noise) == again.score(noise)
    assert first.score(digits[1000:1300]) < 0.1 * first.score(noise)


# ---------------------------------------------------------------- sampling


def test_generated_pngs_carry_metadata_and_repeat_by_seed(tmp_path):
    torch.manual_seed(0)
    gen, _ = build_gan("dcgan", 32, 3, 16, features=8)
    gdir = save_generator(gen.eval(), GeneratorSpec("dcgan", 32, 3, 16, features=8), tmp_path / "g")
    meta = {"job_id": "job-1", "model_id": "model-9"}
    out = generate_images(gdir, 5, 42, CPU, meta)
    again = generate_images(gdir, 3, 42, CPU, meta)
    other = generate_images(gdir, 5, 43, CPU, meta)
    assert out.pngs[:3] == again.pngs and out.pngs != other.pngs
    img = Image.open(io.BytesIO(out.pngs[2]))
    assert img.size == (32, 32) and img.mode == "RGB"
    assert img.text == {**meta, "seed": "42", "index": "2", "ai_generated": "true", "Software": AI_LABEL}
    grid = Image.open(io.BytesIO(out.grid_png))
    assert grid.size == (3 * 34 + 2, 2 * 34 + 2) and grid.text["ai_generated"] == "true"
    names = [f"{i:04d}.png" for i in range(5)]
    with zipfile.ZipFile(io.BytesIO(zip_pngs(out.pngs, names))) as zf:
        assert zf.namelist() == names and zf.read("0002.png") == out.pngs[2]


# ---------------------------------------------------------------- datasets


def _idx(pixels: np.ndarray) -> bytes:
    return struct.pack(">4B3I", 0, 0, 8, 3, *pixels.shape) + pixels.astype(np.uint8).tobytes()


def test_idx_images_raw_and_gzipped(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    raw, gz = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-images-idx3-ubyte.gz"
    raw.write_bytes(_idx(pixels))
    gz.write_bytes(gzip.compress(_idx(pixels)))
    want = torch.from_numpy(pixels).float().div(127.5).sub(1).unsqueeze(1)
    for path in (raw, gz):
        assert torch.allclose(load_images(path, 28, 1), want, atol=1e-6)
    assert load_images(gz, 32, 3).shape == (6, 3, 32, 32)
    assert inspect_image_dataset(gz) == {
        "format": "idx.gz",
        "count": 6,
        "sizes": [[28, 28]],
        "channels": 1,
        "skipped": 0,
    }


@pytest.mark.parametrize(
    "blob, message",
    [
        (_idx(np.zeros((3, 4, 4)))[:-1], "header declares"),  # truncated
        (struct.pack(">4BI", 0, 0, 8, 1, 3) + b"\0\1\2", "labels file"),  # labels, not images
        (struct.pack(">4B3I", 0, 0, 8, 3, 0, 4, 4), "empty"),
    ],
)
def test_bad_idx_files_are_rejected(tmp_path, blob, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(blob)
    with pytest.raises(ImageDatasetError, match=message):
        load_images(path, 28, 1)


def _png(size: tuple[int, int], mode: str = "L", fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 200 if mode == "L" else (200, 10, 10)).save(buf, format=fmt)
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_zip_with_mixed_sizes_is_resized_and_junk_ignored(tmp_path):
    path = _zip(
        tmp_path / "imgs.zip",
        {
            "a/small.png": _png((20, 20)),
            "a/wide.png": _png((40, 30), "RGB"),
            "b.jpg": _png((64, 64), "RGB", "JPEG"),
            "__MACOSX/a/._small.png": b"junk",
            ".DS_Store": b"junk",
            "readme.txt": b"hello",
        },
    )
    rgb = load_images(path, 32, 3)
    assert rgb.shape == (3, 3, 32, 32) and rgb.min() >= -1 and rgb.max() <= 1
    assert rgb[1, 0].mean() > 0.4 and rgb[1, 2].mean() < -0.8  # the red RGB image kept its colour
    assert load_images(path, 28, 1).shape == (3, 1, 28, 28)
    info = inspect_image_dataset(path)
    assert info == {"format": "zip", "count": 3, "sizes": [[20, 20], [40, 30], [64, 64]], "channels": 3, "skipped": 1}


def _lying_zip(path: Path) -> Path:
    """A member of 200 kB of zeros whose central directory claims 10 bytes."""
    _zip(path, {"bomb.png": bytes(200_000)})
    data = bytearray(path.read_bytes())
    central = data.rindex(b"PK\x01\x02")
    data[central + 24 : central + 28] = struct.pack("<I", 10)  # uncompressed size field
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("traversal", "climbs out"),
        ("absolute", "absolute"),
        ("symlink", "symbolic link"),
        ("bomb", "uncompressed bytes"),
        ("lying", "not a readable zip|inflates past"),
        ("pixels", "pixel cap"),
        ("count", "members"),
        ("no_images", "no PNG or JPEG"),
        ("not_a_zip", "neither a zip"),
    ],
)
def test_unsafe_or_unusable_uploads_are_rejected(tmp_path, case, message):
    ok = {"ok.png": _png((8, 8))}
    path, limits = tmp_path / "upload.zip", Limits()
    if case == "traversal":
        _zip(path, {**ok, "../x.png": _png((8, 8))})
    elif case == "absolute":
        _zip(path, {**ok, "/abs.png": _png((8, 8))})
    elif case == "symlink":
        _zip(path, ok, symlink="link.png")
    elif case == "bomb":  # honest header, 4 MiB of zeros (a few kB compressed) against a 1 MiB cap
        _zip(path, {**ok, "bomb.png": bytes(4 << 20)})
        limits = Limits(max_bytes=1 << 20)
    elif case == "lying":
        _lying_zip(path)
    elif case == "pixels":  # 4096×1100 = 4.5 M pixels over the default 2048² cap, only kB on disk
        _zip(path, {**ok, "huge.png": _png((4096, 1100))})
    elif case == "count":
        _zip(path, {**ok, "b.png": _png((8, 8)), "c.png": _png((8, 8))})
        limits = Limits(max_members=2)
    elif case == "no_images":
        _zip(path, {"notes.txt": b"text", "data.csv": b"1,2"})
    else:
        path.write_bytes(b"#!/bin/sh\necho not an image dataset\n")
    with pytest.raises(ImageDatasetError, match=message):
        load_images(path, 28, 1, limits)
    with pytest.raises(ImageDatasetError):
        inspect_image_dataset(path, limits)


def test_builtin_sources(digits):
    assert digits.shape == (1797, 1, 28, 28) and digits.dtype == torch.float32
    assert digits.min() == -1 and digits.max() == 1
    assert load_images("digits", 64, 3).shape == (1797, 3, 64, 64)
    with pytest.raises(ImageDatasetError, match="unknown image source"):
        load_images("no-such-dataset", 28, 1)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImageDatasetError, match="torchvision"):
            load_images("mnist", 28, 1)
