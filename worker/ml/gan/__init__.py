"""GANs for ``image.train_gan`` and ``image.generate``: models, datasets, training, a Fréchet metric, sampling.

Pure torch/numpy/Pillow: nothing here knows Celery, Flask or the database. Import from the submodules
(``worker.ml.gan.train`` etc.); this package re-exports the public names for convenience.
"""

from worker.ml.gan.data import ImageDatasetError, Limits, inspect_image_dataset, load_images
from worker.ml.gan.fid import FrechetScorer, frechet_distance
from worker.ml.gan.images import make_grid_png, zip_pngs
from worker.ml.gan.models import (
    Discriminator,
    Generator,
    GeneratorSpec,
    UnsafeWeightsError,
    build_gan,
    load_generator,
    save_generator,
    weights_init,
)
from worker.ml.gan.sample import GeneratedImages, generate_images
from worker.ml.gan.train import GanTrainConfig, GanTrainResult, train_gan

__all__ = [
    "Discriminator",
    "FrechetScorer",
    "GanTrainConfig",
    "GanTrainResult",
    "GeneratedImages",
    "Generator",
    "GeneratorSpec",
    "ImageDatasetError",
    "Limits",
    "UnsafeWeightsError",
    "build_gan",
    "frechet_distance",
    "generate_images",
    "inspect_image_dataset",
    "load_generator",
    "load_images",
    "make_grid_png",
    "save_generator",
    "train_gan",
    "weights_init",
    "zip_pngs",
]
