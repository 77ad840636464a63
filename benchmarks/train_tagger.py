"""Tagger training throughput: the seed 002 loop against genqueue's ``text.train_tagger`` loop, same run.

    python -m benchmarks.train_tagger --size small --steps 30 --batch-size 16 --max-length 128 --device cpu \
        [--precision auto|fp32|bf16] [--seed-bf16] [--sentences 2000] [--schedule seed|job]

Both train the same randomly initialised ``BertForTokenClassification`` (one initial state, copied into each) on the
same sentences of the offline NER corpus (``shared/tagcorpus.py``), tokenized by the same WordPiece, with the same
batch size, learning rate and number of steps, then are scored on the same validation sentences by the same
entity-level evaluation (``worker/ml/tagger/metrics.py``: exact span and type, as conlleval/seqeval count).

- seed: what ``002_c8d44173930d618a.txt`` does — every sentence padded to ``max_length``, a shuffled
  ``DataLoader``, ``AdamW`` (torch's; the seed's ``transformers.AdamW`` is gone from transformers 5), fp32,
  ``loss.item()`` every step, no schedule, no clipping;
- genqueue: the job's own ``Loop`` (``worker/ml/tagger/train.py``) — length-bucketed batches padded to their longest
  sentence, fused AdamW, bf16 autocast where the device computes it natively (``--precision auto``, as a job),
  gradient clipping. Its learning rate follows the seed's (no warm-up, constant: the job's ``lr_schedule:
  "constant"``, ``warmup_steps: 0``), so the f1s compare the loops, not two schedules; ``--schedule job`` runs the
  job's default instead (warm-up, then linear decay to 0, which after only a few dozen steps has learnt less).

tokens/s counts real (non-padding) sub-tokens, the same sentences for both, over steps ``warmup+1 .. steps``
(the first ``warmup`` steps — allocator warm-up — are left out); tokenization, model building and evaluation are
outside the timing. The last line is ``ratio genqueue/seed: X.XX``. It starts no processes.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import random
import time

import torch
from torch.utils.data import DataLoader, Dataset

from shared.tagcorpus import sentences
from worker.ml.common import Device, pick_device, with_precision
from worker.ml.tagger.data import IGNORE, encode, train_wordpiece
from worker.ml.tagger.model import n_params, scratch_model
from worker.ml.tagger.train import Loop, TaggerTrainConfig, evaluate_model


class FixedPadded(Dataset):
    """The seed's dataset: each sentence padded (or cut) to ``max_length``, labels ``IGNORE`` on padding."""

    def __init__(self, items, pad_id: int, max_length: int):
        self.items, self.pad_id, self.max_length = items, pad_id, max_length

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, n = self.items[i], len(self.items[i].input_ids)
        pad = self.max_length - n
        return {
            "input_ids": torch.tensor(e.input_ids + [self.pad_id] * pad),  # (T,)
            "attention_mask": torch.tensor([1] * n + [0] * pad),  # (T,)
            "labels": torch.tensor(e.labels + [IGNORE] * pad),  # (T,)
        }


def _sync(device: Device) -> None:
    if device.is_cuda:
        torch.cuda.synchronize()


def seed_loop(model, items, pad_id: int, args, device: Device) -> tuple[float, int]:
    """(seconds, real tokens) of the timed steps of the seed's loop."""
    gen = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        FixedPadded(items, pad_id, args.max_length), batch_size=args.batch_size, shuffle=True, generator=gen
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    autocast = contextlib.nullcontext()
    if args.seed_bf16:  # the seed is fp32; bf16 for both isolates what the loop itself does
        autocast = torch.autocast(device.torch_device.type, dtype=torch.bfloat16)
    model.train()
    step, seconds, tokens = 0, 0.0, 0
    while step < args.steps:
        for batch in loader:
            _sync(device)
            t0 = time.perf_counter()
            batch = {k: v.to(device.torch_device) for k, v in batch.items()}
            model.zero_grad()
            with autocast:
                out = model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            out.loss.item()  # the seed's epoch_loss += loss.item(): a host sync per step
            out.loss.backward()
            opt.step()
            _sync(device)
            step += 1
            if step > args.warmup:
                seconds += time.perf_counter() - t0
                tokens += int(batch["attention_mask"].sum())
            if step == args.steps:
                break
    return seconds, tokens


def ours_loop(model, tokenizer, items, args, device: Device) -> tuple[float, int, Loop]:
    """(seconds, real tokens, loop) of the timed steps of genqueue's job loop."""
    cfg = TaggerTrainConfig(
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        max_length=args.max_length,
        seed=args.seed,
        precision=args.precision,
        **(
            {"lr_schedule": "constant", "warmup_steps": 0}
            if args.schedule == "seed"
            else {"lr_schedule": "linear", "warmup_steps": min(10, args.steps // 10)}
        ),
    )
    device = with_precision(device, cfg.precision)
    loop = Loop(cfg, model, tokenizer, items, device)
    seconds, tokens = 0.0, 0
    for step in range(args.steps):
        _sync(device)
        t0 = time.perf_counter()
        batch = loop.batch(step)
        loss = loop.step(batch)
        if (step + 1) % 10 == 0:
            float(loss)  # the job reads its loss back every 10 steps
        _sync(device)
        if step + 1 > args.warmup:
            seconds += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
    return seconds, tokens, loop


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small", "base"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4, help="(peak) learning rate of both loops")
    ap.add_argument(
        "--schedule",
        default="seed",
        choices=["seed", "job"],
        help="genqueue's: the seed's constant rate or the job default",
    )
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--vocab-size", type=int, default=2000)
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="genqueue's, as a job's")
    ap.add_argument("--seed-bf16", action="store_true", help="run the seed's loop under bf16 autocast too")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    train, val = sentences(args.sentences, seed=args.seed), sentences(max(50, args.sentences // 10), seed=args.seed + 1)
    tokenizer = train_wordpiece((w for words, _ in train for w in words), vocab_size=args.vocab_size)
    labels = ["O", *sorted({t for _, tags in train for t in tags} - {"O"}, key=lambda t: (t[2:], t))]
    label2id = {label: i for i, label in enumerate(labels)}
    items, val_items = (encode(tokenizer, s, label2id, args.max_length) for s in (train, val))
    initial = scratch_model(args.size, len(tokenizer), labels, args.max_length)
    real = sum(len(e.input_ids) for e in items) / len(items)
    print(
        f"model: BERT {args.size} ({n_params(initial):,} params), {len(labels)} labels; {len(items)} sentences, "
        f"mean {real:.1f} sub-tokens (max_length {args.max_length}); batch {args.batch_size}, {args.steps} steps "
        f"({args.warmup} untimed); device {device.name}, torch threads {torch.get_num_threads()}"
    )
    results = {}
    for name in ("seed", "genqueue"):
        model = copy.deepcopy(initial).to(device.torch_device)
        torch.manual_seed(args.seed)
        if name == "seed":
            seconds, tokens = seed_loop(model, items, tokenizer.pad_token_id, args, device)
            seed_dtype = torch.bfloat16 if args.seed_bf16 else None
            scores = evaluate_model(model, tokenizer, val_items, labels, Device(device.torch_device, seed_dtype))
        else:
            seconds, tokens, loop = ours_loop(model, tokenizer, items, args, device)
            scores = evaluate_model(model, tokenizer, val_items, labels, loop.device)
            print(f"genqueue precision: {loop.device.autocast_dtype or torch.float32}")
        results[name] = tokens / seconds
        print(
            f"{name}: {results[name]:,.0f} real tokens/s ({tokens:,} tokens in {seconds:.2f} s); "
            f"val f1 {scores['f1']:.3f} (precision {scores['precision']:.3f}, recall {scores['recall']:.3f}, "
            f"token accuracy {scores['accuracy']:.3f}) after {args.steps} steps"
        )
    print(f"ratio genqueue/seed: {results['genqueue'] / results['seed']:.2f}")


if __name__ == "__main__":
    main()
