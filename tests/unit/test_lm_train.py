"""text.train engine: the loop learns, checkpoints resume exactly, cancel saves, fine-tuning and export work."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from shared.corpus import stdlib_documents
from tests.tiny import make_tiny_gpt2
from worker.ml.checkpoints import list_checkpoints
from worker.ml.common import Stopped, pick_device
from worker.ml.lm.data import BatchOrder, DatasetTooSmall, build_data
from worker.ml.lm.models import BlockSizeTooLarge, context_length, preset_config
from worker.ml.lm.train import LMTrainConfig, train_lm

CPU = pick_device("cpu")

# Small and quick, but with dropout so that resuming must restore the RNG to reproduce the losses.
BASE = LMTrainConfig(
    size="tiny",
    n_embd=64,
    vocab_size=384,
    dropout=0.1,
    block_size=32,
    batch_size=4,
    learning_rate=3e-3,
    warmup_steps=3,
    max_steps=12,
    eval_every=4,
    eval_batches=2,
    checkpoint_every=4,
    seed=1,
)


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return stdlib_documents(max_chars=40_000)


class Recorder:
    """A report callback that records each call and can raise at a chosen step."""

    def __init__(self, stop_at: int | None = None, exc: Exception | None = None):
        self.calls: list[tuple[int, int, dict[str, float]]] = []
        self.stop_at, self.exc = stop_at, exc or Stopped("cancelled")

    def __call__(self, step: int, total: int, **metrics: float) -> None:
        self.calls.append((step, total, metrics))
        if step == self.stop_at:
            raise self.exc

    @property
    def steps(self) -> list[int]:
        return [s for s, _, _ in self.calls]

    def losses(self) -> dict[int, float]:
        return {s: m["train_loss"] for s, _, m in self.calls}


def ckpt_steps(work_dir: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in list_checkpoints(work_dir / "checkpoints")]


def test_loss_goes_down_and_model_exports(tmp_path):
    texts = [f"the cat sat on the mat number {i % 7}. the dog ran after the cat. " * 4 for i in range(60)]
    cfg = replace(BASE, dropout=0.0, max_steps=40, eval_every=20, checkpoint_every=100, warmup_steps=5)
    rec = Recorder()
    result = train_lm(cfg, texts, None, tmp_path, CPU, rec)
    losses = [m["train_loss"] for _, _, m in rec.calls]
    assert rec.steps == list(range(1, 41)) and all(t == 40 for _, t, _ in rec.calls)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:3]) / 3, losses
    assert result.metrics["val_loss"] < 0.5 * math.log(384)
    assert result.metrics["perplexity"] == pytest.approx(math.exp(result.metrics["val_loss"]))
    assert {"val_loss", "perplexity"} <= set(rec.calls[19][2]) and "val_loss" not in rec.calls[18][2]
    assert all(m["lr"] > 0 and m["tokens_per_s"] > 0 for _, _, m in rec.calls)
    assert result.steps == 40 and result.resumed_from_step is None and ckpt_steps(tmp_path) == [40]

    model = AutoModelForCausalLM.from_pretrained(result.model_dir, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(result.model_dir)
    assert sum(p.numel() for p in model.parameters()) == result.n_params
    ids = tok("the cat sat", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape[1] == ids.shape[1] + 6
    assert tok.decode(out[0, ids.shape[1] :]).startswith(" on the mat")  # it learned the corpus


def test_cancel_saves_and_resume_matches_uninterrupted_run(tmp_path, docs):
    straight = Recorder()
    full = train_lm(BASE, docs, None, tmp_path / "a", CPU, straight)

    stopped = Recorder(stop_at=6)
    with pytest.raises(Stopped):
        train_lm(BASE, docs, None, tmp_path / "b", CPU, stopped)
    assert stopped.steps == [1, 2, 3, 4, 5, 6]
    assert ckpt_steps(tmp_path / "b") == [4, 6]  # periodic at 4, the cancel at 6
    assert not (tmp_path / "b" / "model").exists()

    resumed = Recorder()
    result = train_lm(BASE, docs, None, tmp_path / "b", CPU, resumed)
    assert result.resumed_from_step == 6 and result.steps == 12
    assert resumed.steps == list(range(7, 13))
    for step, loss in resumed.losses().items():
        assert loss == pytest.approx(straight.losses()[step], abs=1e-5), step
    assert result.metrics["val_loss"] == pytest.approx(full.metrics["val_loss"], abs=1e-5)
    assert straight.losses()[7] != pytest.approx(straight.losses()[6], abs=1e-5)  # the steps do differ


def test_crash_resumes_from_last_checkpoint(tmp_path, docs):
    straight = Recorder()
    train_lm(BASE, docs, None, tmp_path / "a", CPU, straight)
    with pytest.raises(RuntimeError):
        train_lm(BASE, docs, None, tmp_path / "b", CPU, Recorder(stop_at=7, exc=RuntimeError("worker lost")))
    assert ckpt_steps(tmp_path / "b") == [4]  # a crash saves nothing: the last periodic checkpoint remains

    resumed = Recorder()
    result = train_lm(BASE, docs, None, tmp_path / "b", CPU, resumed)
    assert result.resumed_from_step == 4 and resumed.steps == list(range(5, 13))
    assert resumed.losses()[5] == pytest.approx(straight.losses()[5], abs=1e-5)
    assert resumed.losses()[12] == pytest.approx(straight.losses()[12], abs=1e-5)


def test_resume_of_finished_run_trains_nothing(tmp_path, docs):
    cfg = replace(BASE, max_steps=3)
    first = train_lm(cfg, docs, None, tmp_path, CPU, Recorder())
    again = Recorder()
    second = train_lm(cfg, docs, None, tmp_path, CPU, again)
    assert second.resumed_from_step == 3 and second.steps == 3 and again.steps == []
    assert second.metrics == first.metrics


def test_pruning_keeps_newest(tmp_path, docs):
    cfg = replace(BASE, max_steps=9, checkpoint_every=2, keep_checkpoints=2)
    train_lm(cfg, docs, None, tmp_path, CPU, Recorder())
    assert ckpt_steps(tmp_path) == [8, 9]


def test_finetune_tiny_gpt2(tmp_path, docs):
    base = make_tiny_gpt2(tmp_path / "base", n_positions=64)
    assert context_length(base) == 64
    cfg = replace(BASE, base_model=str(base), max_steps=6, learning_rate=1e-3)
    rec = Recorder()
    result = train_lm(cfg, docs, docs[:20], tmp_path / "job", CPU, rec)
    assert rec.steps == list(range(1, 7)) and not (tmp_path / "job" / "tokenizer").exists()
    assert result.n_params == sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(base).parameters())
    tuned = AutoModelForCausalLM.from_pretrained(result.model_dir, use_safetensors=True)
    before = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True)
    assert not torch.equal(tuned.transformer.h[0].mlp.c_fc.weight, before.transformer.h[0].mlp.c_fc.weight)
    with pytest.raises(BlockSizeTooLarge):
        train_lm(replace(cfg, block_size=65), docs, None, tmp_path / "too-long", CPU, Recorder())


def test_epochs_convert_to_steps(tmp_path, docs):
    cfg = replace(BASE, max_steps=None, epochs=0.05, batch_size=4, grad_accum_steps=2)
    rec = Recorder()
    train_lm(cfg, docs, None, tmp_path, CPU, rec)
    tok = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    n_train = len(build_data(tok, docs, None, cfg.block_size, cfg.validation_fraction, cfg.seed).train)
    assert rec.calls[-1][1] == math.ceil(0.05 * n_train / 8) == len(rec.calls)
    assert LMTrainConfig(epochs=2, batch_size=4, grad_accum_steps=2).total_steps(100) == 25
    assert LMTrainConfig(max_steps=7).total_steps(100) == 7


def test_dataset_too_small(tmp_path, docs):
    with pytest.raises(DatasetTooSmall):
        train_lm(BASE, ["too short"], None, tmp_path / "a", CPU, Recorder())
    base = make_tiny_gpt2(tmp_path / "base", n_positions=64)
    tok = AutoTokenizer.from_pretrained(base)
    text = " ".join(docs)[:400]
    while len(tok(text).input_ids) + 1 >= 2 * 64:  # + EOS: exactly one block of 64
        text = text[:-10]
    assert len(tok(text).input_ids) + 1 >= 64
    with pytest.raises(DatasetTooSmall, match="at least 2"):  # a block to train, none to validate
        train_lm(replace(BASE, base_model=str(base), block_size=64), [text], None, tmp_path / "b", CPU, Recorder())
    assert issubclass(DatasetTooSmall, ValueError)


def test_short_validation_texts_fall_back_to_a_split(tmp_path, docs):
    lines: list[str] = []
    rec = Recorder()
    result = train_lm(replace(BASE, max_steps=2), docs, ["tiny"], tmp_path, CPU, rec, log=lines.append)
    assert any("splitting the training texts" in line for line in lines)
    assert math.isfinite(result.metrics["val_loss"])


def test_batch_order_is_deterministic_and_resumable():
    order = BatchOrder(10, 4, seed=3)
    first_epoch = torch.cat([order.next() for _ in range(5)])  # 20 indices: two epochs
    assert sorted(first_epoch[:10].tolist()) == list(range(10)) and sorted(first_epoch[10:].tolist()) == list(range(10))
    assert first_epoch[:10].tolist() != first_epoch[10:].tolist()  # a new permutation per epoch
    again = BatchOrder(10, 4, seed=3)
    again.load_state_dict({"epoch": 1, "index": 2})
    assert again.next().tolist() == first_epoch[12:16].tolist()
    assert BatchOrder(3, 5, seed=0).next().numel() == 5  # fewer blocks than a batch still gives full batches


def test_presets_and_config_validation():
    big = preset_config("gpt2-124m", vocab_size=50257, block_size=1024)
    assert (big.n_layer, big.n_head, big.n_embd, big.n_positions) == (12, 12, 768, 1024)
    assert preset_config("tiny", 100, 512).n_positions == 512  # widened to fit the blocks
    assert preset_config("small", 100, 64, n_layer=3).n_layer == 3
    with pytest.raises(ValueError):
        preset_config("tiny", 100, 64, n_head=3, n_embd=64)
    with pytest.raises(ValueError):
        LMTrainConfig(max_steps=10, epochs=1.0)
    with pytest.raises(ValueError):
        LMTrainConfig(size="huge")
    with pytest.raises(ValueError):
        LMTrainConfig(batch_size=0)


def test_a_training_refusal_or_an_unloadable_base_is_the_users_error_with_its_code():
    """What a training handler raises for its own refusals and for a base it cannot load (worker.tasks.common)."""
    from worker.context import UserError
    from worker.tasks.common import training_errors

    cases = [
        (DatasetTooSmall("need at least 2 blocks"), "invalid_params", "need at least 2 blocks"),
        (BlockSizeTooLarge("block_size 9999 > 1024"), "invalid_params", "block_size 9999 > 1024"),
        (OSError("not cached, offline"), "model_unavailable", "cannot load 'hub/base': not cached, offline"),
    ]
    for raised, code, message in cases:
        with pytest.raises(UserError) as caught, training_errors("hub/base", DatasetTooSmall, BlockSizeTooLarge):
            raise raised
        assert (caught.value.code, caught.value.message) == (code, message)
    with pytest.raises(ValueError, match="a bug"), training_errors("hub/base", DatasetTooSmall):
        raise ValueError("a bug")  # anything else is not the user's: it propagates (retried or failed as it is)
