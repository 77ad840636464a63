"""A job's ML config is built from its validated params, and both take their defaults from shared/defaults.py."""

from __future__ import annotations

from dataclasses import MISSING, fields

import pytest

from shared.defaults import GAN_TRAIN, TEXT_TRAIN
from shared.schemas.params import GanTrainParams, TextTrainParams
from worker.ml.common import config_from_params
from worker.ml.gan.train import GanTrainConfig
from worker.ml.lm.train import LMTrainConfig

PAIRS = [(TextTrainParams, LMTrainConfig, TEXT_TRAIN), (GanTrainParams, GanTrainConfig, GAN_TRAIN)]


@pytest.mark.parametrize(("schema", "config", "defaults"), PAIRS)
def test_schema_and_ml_config_share_every_default(schema, config, defaults):
    shared = [f for f in fields(config) if f.name in schema.model_fields]
    assert len(shared) >= 10
    for f in shared:
        api_default = schema.model_fields[f.name].default
        ml_default = None if f.default is MISSING else f.default
        if api_default is None and hasattr(defaults, f.name):
            continue  # filled in by the schema's validator from the same table (max_steps, size): tested below
        assert api_default == ml_default, f"{config.__name__}.{f.name}: API {api_default!r} vs ML {ml_default!r}"
        if hasattr(defaults, f.name):
            assert api_default == getattr(defaults, f.name)


def test_a_jobs_config_is_its_params():
    p = TextTrainParams(dataset_id="ds", learning_rate=1e-3, block_size=64, epochs=2.0)
    cfg = config_from_params(LMTrainConfig, p.model_dump(), base_model="scratch", size=p.size)
    assert (cfg.learning_rate, cfg.block_size, cfg.epochs, cfg.max_steps) == (1e-3, 64, 2.0, None)
    assert TextTrainParams(dataset_id="ds").max_steps == TEXT_TRAIN.max_steps
    assert TextTrainParams(dataset_id="ds").size == TEXT_TRAIN.size
    assert cfg.eval_every == TEXT_TRAIN.eval_every and cfg.validation_fraction == TEXT_TRAIN.validation_fraction
    g = config_from_params(GanTrainConfig, GanTrainParams(architecture="mlp", seed=3).model_dump())
    assert (g.architecture, g.seed, g.max_steps) == ("mlp", 3, GAN_TRAIN.max_steps)
