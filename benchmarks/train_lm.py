"""Training throughput: genqueue's ``train_lm`` loop against a Hugging Face ``Trainer`` baseline, same run.

    python -m benchmarks.train_lm --size small --steps 30 --batch-size 8 --block-size 256 --device cpu \
        [--precision auto|fp32|bf16] [--repeats 2]

Both start from the same randomly initialised GPT-2 (saved once, loaded by each from disk), train on the same
pre-tokenized blocks of the stdlib corpus (the blocks ``train_lm`` itself trains on) with the same batch,
sequence length, learning rate, schedule, AdamW (fused, beta2 0.95), weight decay, clipping and precision:
``--precision auto`` is what a text.train job picks (bf16 autocast on CUDA and on CPUs with native bf16), and the
Trainer then runs with ``bf16=True`` too; ``fp32`` runs both in fp32. The Trainer does no evaluation, saving or
reporting; genqueue reads its loss back every ``log_every`` (10) steps as jobs do.

Timing: a wall-clock stamp when each optimizer step ends (the Trainer: ``on_step_end`` callback; genqueue: its
``report`` callback), with a device sync at the two stamps that bound the window. tokens/s is measured over
steps ``warmup+1 .. steps-1``: the first ``warmup`` steps (allocator, kernel selection, torch.compile) and the
last (genqueue evaluates and checkpoints there) are left out; tokenization and model loading are outside too.
Printed: tokens/s from the median step time (robust on a shared machine) and from the window's mean; with
``--repeats`` the runs alternate which goes first and the timed steps are pooled.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from shared.corpus import stdlib_documents
from worker.ml.common import Device, pick_device, with_precision
from worker.ml.lm.data import build_data
from worker.ml.lm.models import build_scratch_model, count_params, preset_config
from worker.ml.lm.tokenizer import train_bpe_tokenizer
from worker.ml.lm.train import BETAS, LMTrainConfig, train_lm
from worker.ml.mfu import flops_per_token, peak_tflops

logger = logging.getLogger(__name__)


class StepClock:
    """Stamps the start of training (step 0) and the end of step 1 and of every step from ``first`` to ``last``
    (syncing CUDA at each stamp)."""

    def __init__(self, first: int, last: int, device: Device):
        self.first, self.last, self.device, self.stamps = first, last, device, {}

    def mark(self, step: int) -> None:
        if step <= 1 or self.first <= step <= self.last:
            if self.device.is_cuda:
                torch.cuda.synchronize()
            self.stamps[step] = time.perf_counter()

    def first_step(self) -> float:
        """Seconds of step 1: allocator and kernel warm-up, and torch.compile's compilation when compiling."""
        return self.stamps[1] - self.stamps[0] if 0 in self.stamps and 1 in self.stamps else float("nan")

    def step_times(self) -> list[float]:
        """Seconds of each timed step (``first + 1 .. last``)."""
        return [self.stamps[s] - self.stamps[s - 1] for s in range(self.first + 1, self.last + 1)]


class _ClockCallback(TrainerCallback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock.mark(0)

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.mark(state.global_step)


class BlockDataset(torch.utils.data.Dataset):
    """The pre-tokenized ``(n, T)`` blocks as Trainer examples (labels = inputs, shifted by the model)."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks.long()

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def make_base(args: argparse.Namespace, out: Path) -> tuple[Path, int, float]:
    """Train the tokenizer, build the GPT-2 once and save both as a HF dir; (dir, parameters, FLOPs per token)."""
    docs = stdlib_documents()
    tok = train_bpe_tokenizer(docs, vocab_size=min(args.vocab_size, 8192))
    config = preset_config(args.size, max(args.vocab_size, len(tok)), args.block_size, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = build_scratch_model(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, count_params(model), flops_per_token(model, args.block_size)


def run_hf(args, base: Path, cfg: LMTrainConfig, device: Device, work: Path) -> tuple[list[float], float]:
    """The Trainer baseline on the blocks train_lm trains on; the timed steps' seconds and step 1's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    data = build_data(tok, stdlib_documents(), None, cfg.block_size, cfg.validation_fraction, cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True, attn_implementation="sdpa")
    targs = TrainingArguments(
        output_dir=str(work),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type="cosine",
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.grad_clip,
        adam_beta1=BETAS[0],
        adam_beta2=BETAS[1],
        optim="adamw_torch_fused",
        tf32=True if device.is_cuda else None,  # as genqueue allows for fp32 matmuls on CUDA
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        use_cpu=not device.is_cuda,
        bf16=device.autocast_dtype == torch.bfloat16 and not args.hf_fp32,  # genqueue's precision unless --hf-fp32
        dataloader_drop_last=True,
        dataloader_pin_memory=device.is_cuda,
        remove_unused_columns=False,
        torch_compile=args.hf_compile,
    )
    clock = StepClock(args.warmup, args.steps - 1, device)
    trainer = Trainer(
        model=model, args=targs, train_dataset=BlockDataset(data.train), callbacks=[_ClockCallback(clock)]
    )
    trainer.train()
    return clock.step_times(), clock.first_step()


def run_genqueue(args, base: Path, cfg: LMTrainConfig, device: Device, work: Path) -> tuple[list[float], float]:
    """genqueue's train_lm, fine-tuning the same saved model; the same timed steps' seconds and step 1's."""
    clock = StepClock(args.warmup, args.steps - 1, device)

    def log(message: str) -> None:  # train_lm logs "training N parameters ..." as its loop starts
        if message.startswith("training ") and "parameters" in message:
            clock.mark(0)

    train_lm(cfg, stdlib_documents(), None, work, device, lambda step, total, **m: clock.mark(step), log=log)
    return clock.step_times(), clock.first_step()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["tiny", "small", "gpt2-124m"], default="small")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing at the start")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=None, help="model vocab (default 8192; 50304 for gpt2-124m)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--repeats", type=int, default=1, help="runs of each, alternating which goes first")
    p.add_argument("--compile", action="store_true", help="torch.compile genqueue's model")
    p.add_argument("--hf-compile", action="store_true", help="torch_compile=True for the Trainer too")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="both runs' precision")
    p.add_argument("--hf-fp32", action="store_true", help="leave the Trainer at its default fp32 (not same-precision)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: worker.ml.mfu's)")
    args = p.parse_args(argv)
    args.vocab_size = args.vocab_size or (50304 if args.size == "gpt2-124m" else 8192)
    if args.steps < args.warmup + 3:
        p.error("--steps must exceed --warmup by at least 3")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = with_precision(pick_device("cpu" if args.device == "cpu" else None), args.precision)
    if args.device == "cuda" and not device.is_cuda:
        raise SystemExit("CUDA requested but not available")
    times: dict[str, list[float]] = {"hf-trainer": [], "genqueue": []}
    first: dict[str, list[float]] = {"hf-trainer": [], "genqueue": []}
    with tempfile.TemporaryDirectory() as tmp:
        base, n_params, fpt = make_base(args, Path(tmp) / "base")
        cfg = LMTrainConfig(
            base_model=str(base),
            block_size=args.block_size,
            batch_size=args.batch_size,
            learning_rate=3e-4,
            warmup_steps=5,
            max_steps=args.steps,
            eval_every=10**9,
            eval_batches=1,
            checkpoint_every=10**9,
            compile=args.compile,
            precision="bf16" if device.autocast_dtype == torch.bfloat16 else "fp32",
        )
        runs = [("hf-trainer", run_hf), ("genqueue", run_genqueue)]
        for r in range(args.repeats):  # alternate who goes first: A B, B A, ...
            for name, fn in runs if r % 2 == 0 else runs[::-1]:
                steps, first_step = fn(args, base, cfg, device, Path(tmp) / f"{name}-{r}")
                times[name] += steps
                first[name].append(first_step)
    report(args, device, n_params, fpt, times, first)


def report(args, device: Device, n_params: int, fpt: float, times: dict[str, list[float]], first) -> None:
    """Print both runs' tokens/s (median step, its spread over the runs, window mean), TFLOPS, MFU, the first
    (warm-up) step's seconds, and the ratios."""
    tokens = args.batch_size * args.block_size
    print(
        f"device {device.name} ({torch.get_num_threads()} threads), size {args.size} ({n_params / 1e6:.1f}M params), "
        f"batch {args.batch_size} x {args.block_size} tokens, {args.steps} steps x {args.repeats} repeats, "
        f"timed steps {args.warmup + 1}..{args.steps - 1}, compile genqueue={args.compile} hf={args.hf_compile}"
    )
    peak, source = (args.peak_tflops, "--peak-tflops") if args.peak_tflops else peak_tflops(device)
    hf_dtype = torch.float32 if args.hf_fp32 else device.autocast_dtype or torch.float32
    print(
        f"precision genqueue {device.autocast_dtype or torch.float32}, hf {hf_dtype}; "
        f"MFU against {source}: {peak or 0:.3f} TFLOPS"
    )
    tps = {}
    for name, steps in times.items():
        tps[name] = (tokens / statistics.median(steps), tokens * len(steps) / sum(steps))
        tflops = fpt * tps[name][0] / 1e12
        mfu = f", MFU {100 * tflops / peak:.1f}% of {peak:g} TFLOPS" if peak else ""
        per_run = _per_run_medians(steps, args.repeats)
        print(
            f"{name:>10}: {tps[name][0]:,.0f} tokens/s (median step; mean {tps[name][1]:,.0f}; per run "
            f"{', '.join(f'{tokens / t:,.0f}' for t in per_run)}), {tflops:.3f} TFLOPS{mfu}; "
            f"first step {', '.join(f'{s:.1f}' for s in first[name])} s ({_warmup_kind(args, name)})"
        )
    ours, hf = tps["genqueue"], tps["hf-trainer"]
    hf_runs, our_runs = (_per_run_medians(times[name], args.repeats) for name in ("hf-trainer", "genqueue"))
    rounds = zip(hf_runs, our_runs, strict=True)
    print(f"ratio per round (median steps): {', '.join(f'{h / g:.2f}' for h, g in rounds)}")
    print(f"ratio genqueue/hf (window mean): {ours[1] / hf[1]:.2f}")
    print(f"ratio genqueue/hf: {ours[0] / hf[0]:.2f}")  # median step: the headline figure


def _per_run_medians(steps: list[float], runs: int) -> list[float]:
    """The median step time of each run (the pooled list holds the runs' timed steps one run after the other)."""
    n = len(steps) // max(1, runs)
    return [statistics.median(steps[i * n : (i + 1) * n]) for i in range(runs)] if n else []


def _warmup_kind(args, name: str) -> str:
    compiled = args.compile if name == "genqueue" else args.hf_compile
    return "warm-up incl. torch.compile" if compiled else "warm-up"


if __name__ == "__main__":
    main()
