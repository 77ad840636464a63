"""Continuous batching over a static per-slot KV buffer: a slot freed by a finished row takes the next prompt.

A budget of rows (prompt x sequence) is in flight. Every decode step feeds each active row its pending token at
its own position (per-row ``position_ids``; GPT-2's positions are absolute) and writes that token's keys and values
into the row's slot of a per-layer buffer (S, H, W, D); a 4D mask hides each slot's columns past its position.
Active rows always fill slots ``0..A-1``: a finished row's slot gets the last active row (one KV copy), so each
step attends over views, never gathers. New prompts are prefilled whole, right-padded and batched; each row's first
token is drawn from its prompt's last logits there (as ``generate`` does: no decode step just to read the prompt's
last token), and the row joins the next decode step with it. Each row samples from uniforms hashed from (seed,
prompt index, sequence, token number) (:func:`worker.ml.lm.sampling.row_uniforms`), so its text does not depend on
its batch-mates. On out-of-memory the rows in flight go back to the queue (front) and the budget halves; a restarted
row draws the same samples.

Several jobs can share one engine (cross-job batching): each is a :class:`~worker.ml.lm.gen_base.Stream` with its own
prompts and callbacks, and ``join(free_rows)`` (given by the task layer, which claims more jobs) is asked between
steps for more streams, whose rows join at the next step. A stream's callbacks only ever see its own rows; one that
raises ends that stream only (its rows leave the batch, ``on_end`` gets the exception); a stream without ``on_end``
(a job running alone) propagates it, as before.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from worker.ml.common import Device, Report
from worker.ml.lm.gen_base import (
    Completion,
    Encoded,
    GenerateConfig,
    GenerationOOM,
    Stream,
    encode,
    eos_ids,
    finish,
    first_stop,
    is_oom,
    stop_window,
)
from worker.ml.lm.loading import LoadedLM
from worker.ml.lm.sampling import draw, penalize, row_uniforms

logger = logging.getLogger(__name__)

MAX_ROWS = {"cpu": 64, "cuda": 512}  # rows in flight when memory allows (CPU: compute-bound beyond ~64 rows)
PREFILL_MICRO_BATCH = {"cpu": 8, "cuda": 64}  # prompts per prefill forward (similar lengths, little padding)
REFILL_FRACTION = 16  # refill once budget/16 slots are free (or none run): prefills of several prompts at once
CHUNK_ROWS = 64  # completions per on_chunk call at most (one bounded transaction in the task)
FLUSH_SECONDS = 1.0  # finished completions wait at most this long before on_chunk
REPORT_SECONDS = 0.5  # report (where cancel is noticed) at least this often while decoding
JOIN_SECONDS = 0.2  # ask ``join`` for more streams at most this often while rows decode (one prefill per join)

Join = Callable[[int], list[Stream]]  # join(free_rows) -> streams to add (may be empty)
Ended = Callable[[], None]  # after a flush that ended streams: the caller may write their ends together


def kv_bytes_per_token(lm: LoadedLM) -> int:
    """Bytes of keys + values one token takes in the cache (GPT-2 124M in bf16: 2 x 12 x 768 x 2 = 36 KiB)."""
    cfg = lm.model.config
    layers = getattr(cfg, "n_layer", None) or cfg.num_hidden_layers
    width = getattr(cfg, "n_embd", None) or cfg.hidden_size
    return 2 * layers * width * lm.model.dtype.itemsize


def rows_in_flight(lm: LoadedLM, cfg: GenerateConfig, width: int) -> int:
    """Rows decoded at once: ``batch_size`` prompts' worth if set, else what memory holds at ``width`` tokens a row."""
    if cfg.batch_size:
        return cfg.batch_size * cfg.decoded_sequences
    per_row = width * kv_bytes_per_token(lm) + 16 * lm.model.config.vocab_size  # KV + the step's fp32 logits
    if lm.device.is_cuda:
        spare = torch.cuda.mem_get_info(lm.device.torch_device)[0] // 2
    else:
        spare = _available_ram() // 4
    cap = MAX_ROWS["cuda" if lm.device.is_cuda else "cpu"]
    return max(1, min(cap, spare // per_row))


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 4 << 30


@dataclass
class _Row:
    """One decoded sequence of one prompt of one stream."""

    enc: Encoded
    sequence: int
    min_new: int
    stream: _Live
    out: list[int] = field(default_factory=list)

    @property
    def key(self) -> tuple[int, int]:
        return self.stream.number, self.enc.item.index


@dataclass(eq=False)
class _Live:
    """A stream in the engine: its finished prompts not yet handed over, its progress, its rows still to decode."""

    stream: Stream
    number: int
    total: int
    rows_left: int
    cfg: GenerateConfig  # its sampling (the stream's, else the engine's)
    sampling: tuple = ()  # how its rows draw, but the seed: streams with the same one are drawn together
    partial: dict[int, list[Completion]] = field(default_factory=dict)
    ready: list[Completion] = field(default_factory=list)
    done: int = 0
    new_tokens: int = 0
    start: float = field(default_factory=time.monotonic)


class _SlotCache:
    """Duck-typed HF cache over the slot buffers: each row writes its one new token at its own position."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.keys, self.values = keys, values  # per layer (S, H, W, D)
        self.rows = self.pos = None
        self.active = self.width = 0

    def bind(self, rows: torch.Tensor, pos: torch.Tensor, width: int) -> None:
        self.rows, self.pos, self.active, self.width = rows, pos, len(rows), width

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[self.rows, :, self.pos] = key_states[:, :, 0]  # (A, H, D) at column pos of each row
        values[self.rows, :, self.pos] = value_states[:, :, 0]
        return keys[: self.active, :, : self.width], values[: self.active, :, : self.width]  # (A, H, width, D)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


class ContinuousEngine:
    """Runs the rows of one or more streams through the slots; see the module docstring."""

    def __init__(
        self,
        lm: LoadedLM,
        streams: list[Stream],
        cfg: GenerateConfig,
        join: Join | None = None,
        encoded: list[list[Encoded]] | None = None,
        ended: Ended | None = None,
    ):
        self.lm, self.cfg, self.join, self.ended = lm, cfg, join, ended
        self.dev = lm.device.torch_device
        self.eos = eos_ids(lm)
        self.eos_t = torch.tensor(sorted(self.eos), device=self.dev, dtype=torch.long)
        self.waiting: deque[_Row] = deque()
        self.live: list[_Live] = []
        self.numbered = 0
        self.kv: _SlotCache | None = None
        self.history: torch.Tensor | None = None  # (S, W + 1) token ids, only once a stream has a repetition penalty
        self.penalized = False
        pre = encoded or [None] * len(streams)  # streams already encoded by the caller
        widths = [_width(e) for stream, enc in zip(streams, pre, strict=True) for e in self._add(stream, enc)]
        self.width = max(widths, default=1)  # KV columns a row can need (grows when a longer row joins)
        self.budget = rows_in_flight(lm, cfg, self.width)
        self.slots: list[_Row] = []
        self.results: list[Completion] = []
        self.new_tokens = 0
        self.start = self.last_flush = self.last_report = self.last_join = time.monotonic()

    def _add(self, stream: Stream, encoded: list[Encoded] | None = None) -> list[Encoded]:
        """Queue a stream's rows (behind those waiting); a stream whose prompts cannot be encoded ends at once."""
        cfg = stream.cfg or self.cfg
        if encoded is None:
            try:
                encoded = encode(self.lm, stream.items, cfg)
            except ValueError as exc:
                self._end(_Live(stream, self.numbered, 0, 0, cfg), exc)
                return []
        copies = cfg.decoded_sequences
        sampling = (cfg.temperature, cfg.top_k or None, cfg.top_p, cfg.repetition_penalty)  # seeds are per row
        live = _Live(stream, self.numbered, len(encoded), len(encoded) * copies, cfg, sampling)
        self.numbered += 1
        self.live.append(live)
        if cfg.repetition_penalty != 1 and not self.penalized:
            self.penalized = True
            if self.kv is not None:  # buffers already made without a history: rows in flight need none
                self.history = torch.zeros((self.budget, self.width + 1), dtype=torch.long, device=self.dev)
        min_new = self.cfg.min_new_tokens
        self.waiting.extend(_Row(e, k, min(min_new, e.max_new_tokens), live) for e in encoded for k in range(copies))
        return encoded

    # -- the loop -------------------------------------------------------------------------------------------------
    def run(self) -> list[Completion]:
        logger.debug("continuous batching: %d rows, budget %d, width %d", len(self.waiting), self.budget, self.width)
        with torch.inference_mode(), _autocast(self.lm.device):
            while self.waiting or self.slots or self._joined(final=True):
                tokens = None
                try:
                    self._admit()
                    if not self.slots:
                        continue
                    tokens = self._step()
                except RuntimeError as exc:
                    if not is_oom(exc):
                        raise
                if tokens is None:  # outside the except block, so the failed step's tensors are freed
                    self._shrink()
                    continue
                self._advance(tokens)
                self._flush(force=False)
        self._flush(force=True)
        return self.results

    def _joined(self, final: bool = False) -> bool:
        """Ask ``join`` for more streams (throttled while rows decode); True if some rows were added."""
        if self.join is None:
            return False
        now = time.monotonic()
        if not final and now - self.last_join < JOIN_SECONDS:
            return False
        self.last_join = now
        before = len(self.waiting)
        for stream in self.join(max(1, self.budget - len(self.slots))):
            for enc in self._add(stream):
                self._fit(_width(enc))
        self._flush(force=False)  # a joined stream with nothing left to do ends now
        return len(self.waiting) > before

    def _fit(self, width: int) -> None:
        """Widen the slot buffers for a joining row that needs more KV columns than any before it."""
        if width <= self.width:
            return
        # geometric growth: jobs arriving one by one with ever longer prompts must not copy the buffers each time
        old, self.width = self.kv, max(width, min(2 * self.width, self.lm.context_length))
        if old is None:
            return
        keys, values, pos, pending = old.keys, old.values, self.pos, self.pending
        history = self.history
        self._allocate(keys[0])
        for i in range(len(keys)):
            self.kv.keys[i][:, :, : keys[i].shape[2]] = keys[i]
            self.kv.values[i][:, :, : values[i].shape[2]] = values[i]
        self.pos[:], self.pending[:] = pos, pending
        if history is not None:
            self.history[:, : history.shape[1]] = history

    def _admit(self) -> None:
        free = self.budget - len(self.slots)
        if not self.waiting and free > 0:
            self._joined()
        if not self.waiting or free <= 0 or (self.slots and free < max(1, self.budget // REFILL_FRACTION)):
            return
        rows = [self.waiting.popleft() for _ in range(min(free, len(self.waiting)))]
        first = len(self.slots)
        try:
            logits = self._prefill(rows)
        except BaseException:
            self.waiting.extendleft(reversed(rows))  # an OOM here must not lose them
            raise
        self.slots.extend(rows)
        # each new row's first token, from its prompt's last logits (its last prompt token sits at pos)
        pos = torch.from_numpy(self.pos[first : len(self.slots)]).to(self.dev)
        self._advance(self._choose(logits, pos, int(pos.max()) + 1, start=first).tolist(), start=first)

    def _step(self) -> list[int]:
        """One decode step of every active row; returns each row's new token."""
        active = len(self.slots)
        pos = torch.from_numpy(self.pos[:active]).to(self.dev)  # (A,)
        width = int(self.pos[:active].max()) + 1
        visible = torch.arange(width, device=self.dev)[None, :] <= pos[:, None]  # (A, width)
        dtype = self.lm.model.dtype
        mask = torch.zeros(visible.shape, dtype=dtype, device=self.dev).masked_fill_(~visible, torch.finfo(dtype).min)
        self.kv.bind(self.arange[:active], pos, width)
        out = self.lm.model(
            input_ids=torch.from_numpy(self.pending[:active]).to(self.dev)[:, None],  # (A, 1)
            position_ids=pos[:, None],  # (A, 1)
            attention_mask=mask[:, None, None, :],  # (A, 1, 1, width)
            past_key_values=self.kv,
            use_cache=True,
        )
        return self._choose(out.logits[:, -1, :], pos, width).tolist()

    def _choose(self, logits: torch.Tensor, pos: torch.Tensor, width: int, start: int = 0) -> torch.Tensor:
        """Next token per row of slots ``start..`` (A,) from its logits (A, V) and the position of the token it was
        fed (A,). Rows are drawn in groups of one sampling config (a group is one stream or several alike), each
        exactly as if its rows were the whole batch."""
        rows = self.slots[start:]
        slots = self.arange[start : start + len(rows)]
        scores = logits.float()  # (A, V)
        groups: dict[tuple, list[int]] = {}  # a sampling config -> the rows that draw with it
        for i, row in enumerate(rows):
            groups.setdefault(row.stream.sampling, []).append(i)
        if len(groups) == 1:
            return self._draw(scores, rows, slots, pos, width)
        token = torch.empty(len(rows), dtype=torch.long, device=self.dev)
        for idx in groups.values():
            ix = torch.tensor(idx, device=self.dev)
            token[ix] = self._draw(scores[ix], [rows[i] for i in idx], slots[ix], pos[ix], width)
        return token

    def _draw(self, scores: torch.Tensor, rows: list[_Row], slots, pos: torch.Tensor, width: int) -> torch.Tensor:
        """Rows of one sampling config: penalty, EOS masked under min_new_tokens, then a draw (A,)."""
        cfg = rows[0].stream.cfg
        if cfg.repetition_penalty != 1:
            scores = penalize(scores, self.history[slots, :width], cfg.repetition_penalty)
        young = [len(r.out) < r.min_new for r in rows]
        if any(young):
            hide = torch.tensor(young, device=self.dev)[:, None]  # (A, 1)
            scores[:, self.eos_t] = scores[:, self.eos_t].masked_fill(hide, float("-inf"))
        if cfg.greedy:
            token = scores.argmax(-1)  # (A,)
        else:
            u = row_uniforms(
                np.array([r.stream.cfg.seed for r in rows], dtype=np.uint64),
                np.array([r.enc.item.index for r in rows]),
                np.array([r.sequence for r in rows]),
                np.array([len(r.out) for r in rows]),
            )
            u_t = torch.from_numpy(u).to(self.dev)[:, None]  # (A, 1)
            token = draw(scores, cfg.temperature, cfg.top_k, cfg.top_p, u_t)[:, 0]  # (A,)
        if cfg.repetition_penalty != 1:
            self.history[slots, pos + 1] = token
        return token

    # -- slots ----------------------------------------------------------------------------------------------------
    def _prefill(self, rows: list[_Row]) -> torch.Tensor:
        """Prefill every prompt of ``rows`` into slots ``A..A+n-1`` (one forward per micro-batch); returns each row's
        logits at its prompt's last token (n, V), from which its first token is drawn."""
        first = len(self.slots)
        by_prompt: dict[tuple[int, int], list[int]] = {}  # (stream, prompt index) -> its rows' slots
        for k, row in enumerate(rows):
            by_prompt.setdefault(row.key, []).append(first + k)
        prompts = sorted({r.key: (r.key, r.enc) for r in rows}.values(), key=lambda ke: len(ke[1].ids))
        micro = PREFILL_MICRO_BATCH["cuda" if self.lm.device.is_cuda else "cpu"]
        last: dict[tuple[int, int], torch.Tensor] = {}
        for s in range(0, len(prompts), micro):
            last.update(self._prefill_batch(prompts[s : s + micro], by_prompt))
        for k, row in enumerate(rows):
            slot = first + k
            self.pos[slot] = len(row.enc.ids) - 1  # its last prompt token: the next token is drawn from its logits
            self.pending[slot] = row.enc.ids[-1]
            if row.stream.cfg.repetition_penalty != 1:
                ids = row.enc.ids
                self.history[slot] = ids[0]
                self.history[slot, : len(ids)] = torch.tensor(ids, device=self.dev)
        return torch.stack([last[row.key] for row in rows])  # (n, V)

    def _prefill_batch(self, batch: list[tuple[tuple[int, int], Encoded]], by_prompt: dict) -> dict:
        """One right-padded forward of whole prompts: their keys and values into their rows' slots; returns each
        prompt's logits at its last token."""
        prompts = [e.ids for _, e in batch]
        w = max(len(p) for p in prompts)
        pad = self.lm.tokenizer.pad_token_id
        input_ids = torch.tensor([p + [pad] * (w - len(p)) for p in prompts], device=self.dev)  # (b, w), right-padded
        out = self.lm.model.base_model(input_ids=input_ids, use_cache=True)  # causal: pads come last, unseen
        lasts = torch.tensor([len(p) - 1 for p in prompts], device=self.dev)
        hidden = out.last_hidden_state[torch.arange(len(batch), device=self.dev), lasts]  # (b, C): last real tokens
        logits = self.lm.model.get_output_embeddings()(hidden)  # (b, V): the LM head on those rows only
        layers = out.past_key_values.layers
        if self.kv is None:
            self._allocate(layers[0].keys)
        src = torch.tensor([j for j, (key, _) in enumerate(batch) for _ in by_prompt[key]], device=self.dev)
        dst = torch.tensor([slot for key, _ in batch for slot in by_prompt[key]], device=self.dev)
        for i, layer in enumerate(layers):
            self.kv.keys[i][dst, :, :w] = layer.keys[src]  # (n, H, w, D); pad columns are masked, then overwritten
            self.kv.values[i][dst, :, :w] = layer.values[src]
        return {key: logits[j] for j, (key, _) in enumerate(batch)}

    def _allocate(self, like: torch.Tensor | None) -> None:
        """The slot buffers: per layer (S, H, W, D) keys and values, plus host positions and pending tokens."""
        config = self.lm.model.config
        heads = getattr(config, "n_head", None) or config.num_attention_heads
        layers = getattr(config, "n_layer", None) or config.num_hidden_layers
        dim = (getattr(config, "n_embd", None) or config.hidden_size) // heads
        if like is not None:
            heads, dim = like.shape[1], like.shape[3]
        dtype = like.dtype if like is not None else self.lm.model.dtype
        shape = (self.budget, heads, self.width, dim)
        keys = [torch.zeros(shape, dtype=dtype, device=self.dev) for _ in range(layers)]
        values = [torch.zeros(shape, dtype=dtype, device=self.dev) for _ in range(layers)]
        self.kv = _SlotCache(keys, values)
        self.arange = torch.arange(self.budget, device=self.dev)
        self.pos = np.zeros(self.budget, dtype=np.int64)  # position of each slot's pending token
        self.pending = np.zeros(self.budget, dtype=np.int64)  # the token each slot feeds next
        if self.penalized:
            self.history = torch.zeros((self.budget, self.width + 1), dtype=torch.long, device=self.dev)

    def _move(self, src: int, dst: int) -> None:
        """Slot ``src``'s row into slot ``dst`` (its KV up to its position, position, pending token, history)."""
        n = int(self.pos[src])
        for keys, values in zip(self.kv.keys, self.kv.values, strict=True):
            keys[dst, :, :n] = keys[src, :, :n]
            values[dst, :, :n] = values[src, :, :n]
        self.pos[dst], self.pending[dst] = self.pos[src], self.pending[src]
        if self.history is not None:
            self.history[dst] = self.history[src]
        self.slots[dst] = self.slots[src]

    def _shrink(self) -> None:
        """After an OOM: rows in flight back to the front of the queue (from scratch), half the budget."""
        if self.lm.device.is_cuda:
            torch.cuda.empty_cache()
        if self.budget <= 1:
            raise GenerationOOM(f"out of memory generating a single row on {self.lm.device.name}")
        for row in self.slots:
            row.out.clear()
        self.waiting.extendleft(reversed(self.slots))
        self.slots, self.kv = [], None
        self.budget //= 2
        logger.warning("out of memory: %d rows in flight from now on", self.budget)

    # -- finishing ------------------------------------------------------------------------------------------------
    def _advance(self, tokens: list[int], start: int = 0) -> None:
        """Record the token of each row of slots ``start..``, then retire the rows that ended (EOS, their
        max_new_tokens, a stop string)."""
        self.new_tokens += len(tokens)
        ended = []
        for slot, (row, token) in enumerate(zip(self.slots[start:], tokens, strict=True), start):
            row.out.append(token)
            self.pos[slot] += 1
            self.pending[slot] = token
            if token in self.eos or len(row.out) >= row.enc.max_new_tokens:
                ended.append(slot)
        ended = sorted(set(ended) | set(self._stopped(ended, start)))
        for slot in reversed(ended):
            self._retire(slot)

    def _stopped(self, ended: list[int], start: int = 0) -> list[int]:
        """Slots ``start..`` whose new text now holds one of their stop strings (their tails decoded in one call)."""
        skip = set(ended)
        check = [s for s in range(start, len(self.slots)) if self.slots[s].enc.stop and s not in skip]
        if not check:
            return []
        tails = [self.slots[s].out[-stop_window(self.slots[s].enc.stop) :] for s in check]
        texts = self.lm.tokenizer.batch_decode(tails, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return [s for s, text in zip(check, texts, strict=True) if first_stop(text, self.slots[s].enc.stop) is not None]

    def _retire(self, slot: int) -> None:
        row = self._release(slot)
        enc, live, cfg = row.enc, row.stream, row.stream.cfg
        live.rows_left -= 1
        live.new_tokens += len(row.out)
        text, tokens, reason = finish(self.lm.tokenizer, row.out, self.eos, enc.max_new_tokens, enc.stop)
        copies = cfg.num_return_sequences // cfg.decoded_sequences  # greedy: one decoded, all copied
        done = live.partial.setdefault(enc.item.index, [])
        done.extend(Completion(enc.item.index, row.sequence + k, text, tokens, reason) for k in range(copies))
        if len(done) == cfg.num_return_sequences:  # a prompt goes out only whole (a retry skips whole prompts)
            live.ready.extend(sorted(live.partial.pop(enc.item.index), key=lambda c: c.sequence))
            live.done += 1

    def _release(self, slot: int) -> _Row:
        """Free ``slot`` (the last active row moves into it); returns the row it held."""
        row = self.slots[slot]
        last = len(self.slots) - 1
        if slot != last:
            self._move(last, slot)
        self.slots.pop()
        return row

    # -- handing over ---------------------------------------------------------------------------------------------
    def _flush(self, force: bool) -> None:
        """Hand finished prompts to each stream's ``on_chunk`` in bounded chunks, then its ``report``; end the
        streams that are complete."""
        now = time.monotonic()
        ready = sum(len(live.ready) for live in self.live)
        due = force or ready >= CHUNK_ROWS or (ready and now - self.last_flush >= FLUSH_SECONDS)
        complete = any(live.rows_left == 0 for live in self.live)
        reporting = due or force or complete or now - self.last_report >= REPORT_SECONDS
        if due and ready:
            self.last_flush = now
        if reporting:
            self.last_report = now
        ended = False
        for live in list(self.live):
            if live.rows_left == 0 or (due and live.ready):
                if not self._call(live, self._hand_over, live):
                    ended = True
                    continue
            if live.rows_left == 0:
                self.live.remove(live)
                self._end(live, None)
                ended = True
            elif reporting:
                self._call(live, self._report, live, now)
        if ended and self.ended is not None:
            self.ended()

    def _hand_over(self, live: _Live) -> None:
        while live.ready:
            chunk, live.ready = live.ready[:CHUNK_ROWS], live.ready[CHUNK_ROWS:]
            if live.stream.on_chunk is not None:
                live.stream.on_chunk(chunk)
            self.results.extend(chunk)
        if live.rows_left == 0:
            self._report(live, time.monotonic())

    def _report(self, live: _Live, now: float) -> None:
        """Progress counts the prompts already handed to ``on_chunk``, not those still waiting in ``ready``: a job's
        progress never runs ahead of the results it has stored."""
        rate = (live.new_tokens + sum(len(r.out) for r in self.slots if r.stream is live)) / max(now - live.start, 1e-9)
        handed = live.done - len(live.ready) // live.cfg.num_return_sequences
        live.stream.report(handed, live.total, tokens_per_s=rate)

    def _call(self, live: _Live, fn, *args) -> bool:
        """Run one of a stream's callbacks; if it raises, the stream ends (its rows leave) and False is returned."""
        try:
            fn(*args)
            return True
        except Exception as exc:
            if live.stream.on_end is None:
                raise  # a job running alone: as before, its Stopped / Fenced / error leaves the engine
            self._drop(live)
            self._end(live, exc)
            return False

    def _drop(self, live: _Live) -> None:
        """Take every row of ``live`` out of the batch (waiting and in flight); the others go on untouched."""
        self.waiting = deque(r for r in self.waiting if r.stream is not live)
        for slot in reversed(range(len(self.slots))):
            if self.slots[slot].stream is live:
                self._release(slot)
        live.partial.clear()
        live.ready.clear()
        if live in self.live:
            self.live.remove(live)

    def _end(self, live: _Live, error: BaseException | None) -> None:
        if live.stream.on_end is not None:
            live.stream.on_end(error)
        elif error is not None:
            raise error


def _width(enc: Encoded) -> int:
    return len(enc.ids) + enc.max_new_tokens - 1


def generate_continuous(
    lm: LoadedLM,
    encoded: list[Encoded],
    cfg: GenerateConfig,
    report: Report,
    on_chunk: Callable[[list[Completion]], None] | None,
) -> list[Completion]:
    """Generate every row of ``encoded`` (one job) with continuous batching; completions in the order they finished."""
    stream = Stream([e.item for e in encoded], report, on_chunk)
    return ContinuousEngine(lm, [stream], cfg, encoded=[encoded]).run()


def generate_streams(
    lm: LoadedLM, streams: list[Stream], cfg: GenerateConfig, join: Join | None, ended: Ended | None = None
) -> list[Completion]:
    """Several jobs' streams in one batch, more joining between steps through ``join``; see the module docstring.

    Each stream ends through its ``on_end``; ``ended()``, if given, follows every flush in which streams ended (so the
    caller can write the ends of the jobs that finished together in one transaction). Only an engine-wide failure
    (out of memory with one row) raises.
    """
    return ContinuousEngine(lm, streams, cfg, join, ended=ended).run()


def _autocast(device: Device):
    if device.is_cuda and device.autocast_dtype is not None:
        return torch.autocast("cuda", dtype=device.autocast_dtype)
    return contextlib.nullcontext()
