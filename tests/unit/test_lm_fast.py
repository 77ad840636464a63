"""The fast text.train loop keeps the numbers: bf16 tracks fp32, 2 gloo ranks x B equal 1 process x 2B, MFU is
counted from the architecture, cancellation and a crashed rank end every rank."""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import replace

import pytest
import torch

from shared.corpus import stdlib_documents
from worker.ml.checkpoints import list_checkpoints
from worker.ml.common import Stopped, pick_device
from worker.ml.distributed import RankFailed
from worker.ml.lm.loss import CausalLMLoss
from worker.ml.lm.models import build_scratch_model, fuse_activations, preset_config
from worker.ml.lm.train import LMTrainConfig, train_lm
from worker.ml.mfu import flops_per_token, gpu_peak_tflops, matmul_params, mfu

CPU = pick_device("cpu")

CFG = LMTrainConfig(
    size="tiny",
    n_embd=64,
    vocab_size=384,
    block_size=32,
    batch_size=4,
    learning_rate=3e-3,
    warmup_steps=2,
    max_steps=8,
    eval_every=4,
    eval_batches=2,
    checkpoint_every=4,
    seed=3,
    log_every=1,
    precision="fp32",
)


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return stdlib_documents(max_chars=30_000)


class Recorder:
    def __init__(self, stop_at: int | None = None):
        self.losses: dict[int, float] = {}
        self.metrics: dict[int, dict[str, float]] = {}
        self.stop_at = stop_at

    def __call__(self, step: int, total: int, **metrics: float) -> None:
        if "train_loss" in metrics:
            self.losses[step] = metrics["train_loss"]
            self.metrics[step] = metrics
        if self.stop_at is not None and step >= self.stop_at:
            raise Stopped("cancelled")


@pytest.mark.slow
def test_bf16_loss_curve_tracks_fp32(tmp_path, docs):
    fp32, bf16 = Recorder(), Recorder()
    train_lm(replace(CFG, max_steps=12), docs, None, tmp_path / "fp32", CPU, fp32)
    train_lm(replace(CFG, max_steps=12, precision="bf16"), docs, None, tmp_path / "bf16", CPU, bf16)
    assert sorted(fp32.losses) == sorted(bf16.losses) == list(range(1, 13))
    for step, loss in fp32.losses.items():
        assert bf16.losses[step] == pytest.approx(loss, rel=0.03), step  # bf16 rounding, same trajectory
    assert fp32.losses[12] < fp32.losses[1] - 0.5  # and it is a trajectory: the loss falls
    assert bf16.losses != fp32.losses  # the bf16 run did run in bf16


def test_metrics_are_read_back_every_log_every_steps(tmp_path, docs):
    rec, steps = Recorder(), []
    cfg = replace(CFG, log_every=3, max_steps=7, eval_every=100)

    def report(step, total, **metrics):
        steps.append((step, bool(metrics)))
        rec(step, total, **metrics)

    train_lm(cfg, docs, None, tmp_path, CPU, report)
    assert [s for s, with_metrics in steps if with_metrics] == [3, 6, 7]  # log points and the last step
    assert [s for s, _ in steps] == list(range(1, 8))  # progress on every step
    assert 0 < rec.metrics[6]["mfu"] < 1 and rec.metrics[6]["tokens_per_s"] > 0


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_the_double_batch(tmp_path, docs):
    one, two = Recorder(), Recorder()
    cfg = replace(CFG, eval_batches=1000)  # both evaluate every validation block, whatever their batch size
    single = train_lm(replace(cfg, batch_size=8), docs, None, tmp_path / "one", CPU, one)
    dual = train_lm(replace(cfg, batch_size=4, num_processes=2), docs, None, tmp_path / "two", CPU, two)
    assert sorted(two.losses) == list(range(1, 9))
    for step, loss in one.losses.items():
        assert two.losses[step] == pytest.approx(loss, abs=2e-4), step
    assert dual.metrics["val_loss"] == pytest.approx(single.metrics["val_loss"], abs=2e-4)
    assert dual.steps == 8 and (tmp_path / "two" / "model" / "config.json").is_file()
    assert one.losses[8] < one.losses[1]


@pytest.mark.slow
def test_cancel_stops_every_rank_and_resumes_with_one_process(tmp_path, docs):
    with pytest.raises(Stopped):
        train_lm(replace(CFG, batch_size=4, num_processes=2), docs, None, tmp_path, CPU, Recorder(stop_at=3))
    assert [int(p.name.split("-")[1]) for p in list_checkpoints(tmp_path / "checkpoints")] == [3]  # rank 0's, once
    rest = Recorder()
    result = train_lm(replace(CFG, batch_size=8), docs, None, tmp_path, CPU, rest)
    assert result.resumed_from_step == 3 and sorted(rest.losses) == list(range(4, 9))


@pytest.mark.slow
def test_a_killed_rank_fails_the_attempt_and_leaves_no_rank_behind(tmp_path, docs):
    pids: list[int] = []

    def log(message: str) -> None:
        if message.startswith("data-parallel:"):
            pids.extend(int(p) for p in re.findall(r"\d+", message.split("pids")[1]))

    def report(step, total, **metrics):
        if step == 2 and metrics:
            os.kill(pids[1], signal.SIGKILL)  # rank 1 dies mid-run, as an OOM kill would do it

    started = time.monotonic()
    with pytest.raises(RankFailed, match="rank"):
        train_lm(replace(CFG, num_processes=2, max_steps=50), docs, None, tmp_path, CPU, report, log=log)
    assert time.monotonic() - started < 60  # not hung on the dead peer
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # every rank is gone (and reaped)


def test_flops_per_token_from_the_architecture():
    cfg = preset_config("small", 8192, 256)
    model = build_scratch_model(cfg)
    d, layers, vocab = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    # per layer: qkv (3d^2) + attention out (d^2) + MLP (8d^2) weights; the tied LM head (V·d) once
    assert matmul_params(model) == layers * 12 * d * d + vocab * d
    assert flops_per_token(model, 256) == 6 * (layers * 12 * d * d + vocab * d) + 12 * layers * d * 256
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3", torch.bfloat16) == 989.0
    assert gpu_peak_tflops("NVIDIA H100 PCIe", torch.bfloat16) == 756.0
    assert gpu_peak_tflops("Some Unknown GPU", torch.bfloat16) is None
    assert mfu(1e9, 1000.0, 2.0) == pytest.approx(0.5) and mfu(1e9, 1000.0, None) is None


def test_fused_gelu_is_the_same_function():
    torch.manual_seed(0)
    model = build_scratch_model(preset_config("tiny", 256, 32))
    x = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        before = model(input_ids=x).logits
        after = fuse_activations(model)(input_ids=x).logits
    assert "NewGELUActivation" not in {type(m).__name__ for m in model.modules()}
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_fused_lm_loss_matches_the_models_own_loss_and_gradients():
    """fp32: the fused head + cross-entropy equals the model's own loss and gradients to rounding; bf16 autocast: it
    is as close to the fp32 reference as the model's own bf16 loss is."""
    torch.manual_seed(0)
    model = fuse_activations(build_scratch_model(preset_config("tiny", 320, 32)))
    x = torch.randint(0, 320, (3, 32))
    loss_model = CausalLMLoss(model)
    assert loss_model.fused

    def loss_and_grads(compute, dtype=None):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = compute()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    def own():
        return model(input_ids=x, labels=x, use_cache=False).loss

    ref, ref_grads = loss_and_grads(own)
    fused, fused_grads = loss_and_grads(lambda: loss_model(x))
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    assert ref_grads.keys() == fused_grads.keys()
    for name, grad in ref_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)
    with torch.no_grad():  # evaluation takes the plain path: the same value
        torch.testing.assert_close(loss_model(x), ref, atol=1e-5, rtol=1e-5)

    def rel_err(grads):
        return max(((grads[n] - g).norm() / g.norm()).item() for n, g in ref_grads.items())

    own16, own16_grads = loss_and_grads(own, torch.bfloat16)
    fused16, fused16_grads = loss_and_grads(lambda: loss_model(x), torch.bfloat16)
    assert abs(fused16 - ref) <= 2 * abs(own16 - ref) + 1e-3
    assert 0 < rel_err(fused16_grads) <= 2 * rel_err(own16_grads) + 1e-3  # bf16 rounding, no worse than HF's
