"""The bulk generation engine on a tiny GPT-2 built in the test and loaded through ``load_causal_lm``."""

from __future__ import annotations

import pytest
import torch

import worker.ml.generate as generate_module
from tests.tiny import make_tiny_gpt2
from worker.ml.common import Stopped, pick_device
from worker.ml.generate import (
    Completion,
    GenerateConfig,
    GenerationOOM,
    PromptItem,
    _Sample,
    auto_batch_size,
    generate,
)
from worker.ml.lm_loading import UnsafeWeightsError, count_tokens, load_causal_lm

PROMPTS = [
    "Return a new list",
    "The csv module implements classes to read and write tabular data in CSV format. It allows programmers",
    "",
    "x",
    "Decimal fixed point and floating point arithmetic",
    "Create a new thread",
    "Parse a URL into six components, returning a 6-item named tuple.",
    "Heap queue algorithm",
    "A",
    "Return the number of days in the month",
]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return load_causal_lm(str(make_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))), pick_device("cpu"))


def items(indexes=None) -> list[PromptItem]:
    indexes = indexes or range(len(PROMPTS))
    return [PromptItem(i, PROMPTS[k]) for k, i in enumerate(indexes)]


def by_key(completions: list[Completion]) -> dict[tuple[int, int], Completion]:
    return {(c.index, c.sequence): c for c in completions}


def texts(completions: list[Completion]) -> dict[tuple[int, int], str]:
    return {k: c.text for k, c in by_key(completions).items()}


def test_load_causal_lm_prepares_model_and_tokenizer(lm):
    assert lm.context_length == 128
    assert lm.tokenizer.padding_side == "left"
    assert lm.tokenizer.pad_token_id == lm.tokenizer.eos_token_id
    assert lm.model.generation_config.pad_token_id == lm.tokenizer.pad_token_id
    assert not lm.model.training and lm.model.dtype == torch.float32
    assert lm.model.config._attn_implementation == "sdpa"
    counts = count_tokens(lm.tokenizer, PROMPTS)
    assert counts[2] == 0 and counts[1] > counts[0] > 0
    assert auto_batch_size(lm.device) >= 8


def test_pickle_only_directory_is_refused(lm, tmp_path):
    torch.save(lm.model.state_dict(), tmp_path / "pytorch_model.bin")
    lm.model.config.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(UnsafeWeightsError, match="pickle"):
        load_causal_lm(str(tmp_path), pick_device("cpu"))
    assert issubclass(UnsafeWeightsError, ValueError)


def test_every_prompt_gets_all_sequences(lm):
    indexes = [3, 7, 8, 20, 21, 22, 40, 41, 99, 100]
    cfg = GenerateConfig(max_new_tokens=6, num_return_sequences=3, batch_size=4)
    out = generate(lm, items(indexes), cfg)
    assert len(out) == 30
    assert set(by_key(out)) == {(i, s) for i in indexes for s in range(3)}
    for c in out:
        assert 0 <= c.tokens <= 6
        assert c.finish_reason in ("stop", "length")
        if c.finish_reason == "length":
            assert c.tokens == 6
    # the prompt is not part of the text
    assert not any(c.text.startswith(PROMPTS[1]) for c in out if c.index == 7)


def test_same_seed_same_texts_other_seed_differs(lm):
    cfg = GenerateConfig(max_new_tokens=8, num_return_sequences=2, batch_size=4, seed=1)
    first = texts(generate(lm, items(), cfg))
    again = texts(generate(lm, items(), cfg))
    other = texts(generate(lm, items(), GenerateConfig(max_new_tokens=8, num_return_sequences=2, batch_size=4, seed=2)))
    assert first == again
    assert first != other
    assert sum(first[k] != other[k] for k in first) >= len(first) // 2
    # the sequences of one prompt are different samples
    assert sum(first[(i, 0)] != first[(i, 1)] for i in range(len(PROMPTS))) >= len(PROMPTS) // 2


def test_greedy_is_deterministic_and_independent_of_batching(lm, monkeypatch):
    monkeypatch.setitem(generate_module.PREFILL_MICRO_BATCH, "cpu", 3)
    one = texts(generate(lm, items(), GenerateConfig(max_new_tokens=8, temperature=0, batch_size=1, seed=1)))
    five = texts(generate(lm, items(), GenerateConfig(max_new_tokens=8, temperature=0, batch_size=5, seed=2)))
    assert one == five  # left padding + attention mask: padded rows generate what they would alone
    two = generate(lm, items(), GenerateConfig(max_new_tokens=8, temperature=0, num_return_sequences=2))
    assert {(c.index, c.sequence) for c in two} == {(i, s) for i in range(len(PROMPTS)) for s in range(2)}
    assert all(c.text == one[(c.index, 0)] for c in two)


@pytest.mark.parametrize("micro_batch", [2, 8])
def test_greedy_matches_plain_hf_generate_one_prompt_at_a_time(lm, monkeypatch, micro_batch):
    # micro-batches of 2 within batches of 6: the prefill caches of different widths are merged
    monkeypatch.setitem(generate_module.PREFILL_MICRO_BATCH, "cpu", micro_batch)
    cfg = GenerateConfig(max_new_tokens=10, min_new_tokens=10, temperature=0, batch_size=6)
    ours = texts(generate(lm, items(), cfg))
    for i, prompt in enumerate(PROMPTS):
        ids = lm.tokenizer(prompt or lm.tokenizer.eos_token, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = lm.model.generate(ids, max_new_tokens=10, min_new_tokens=10, do_sample=False)
        assert ours[(i, 0)] == lm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True), i
    # a batch of one-token prompts only: nothing to prefill, HF generate starts from the empty cache
    one_token = [PromptItem(i, PROMPTS[i]) for i in (2, 3, 8)]
    assert count_tokens(lm.tokenizer, [it.prompt for it in one_token]) == [0, 1, 1]
    assert texts(generate(lm, one_token, cfg)) == {(i, 0): ours[(i, 0)] for i in (2, 3, 8)}


def test_top_k_one_is_greedy(lm):
    greedy = texts(generate(lm, items(), GenerateConfig(max_new_tokens=8, temperature=0)))
    top1 = texts(generate(lm, items(), GenerateConfig(max_new_tokens=8, temperature=1.5, top_k=1, seed=3)))
    assert top1 == greedy


def test_sampler_follows_the_distribution():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    scores = logits.repeat(20_000, 1)  # (N, V): one draw per row

    def draw(**overrides):
        cfg = GenerateConfig(**{"top_k": None, **overrides})
        out = _Sample(cfg, torch.Generator().manual_seed(0))(None, scores.clone())
        assert torch.isinf(out).sum(-1).eq(3).all()  # exactly one finite score per row
        return torch.bincount(out.argmax(-1), minlength=4) / len(scores)

    assert torch.allclose(draw(), torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.015)
    assert torch.allclose(draw(top_k=2), torch.tensor([0.625, 0.375, 0, 0]), atol=0.015)
    assert torch.allclose(draw(top_p=0.7), torch.tensor([0.625, 0.375, 0, 0]), atol=0.015)
    hot = draw(temperature=2.0)  # flatter than the logits
    assert hot[0] < 0.45 and hot[3] > 0.08


def _pick_stop(text: str) -> str | None:
    """Two printable ASCII characters from the middle of ``text``."""
    for k in range(2, len(text) - 1):
        pair = text[k : k + 2]
        if pair.isascii() and pair.isprintable() and pair.strip() == pair:
            return pair
    return None


def test_stop_strings_truncate_and_set_finish_reason(lm):
    base_cfg = GenerateConfig(max_new_tokens=24, temperature=0)
    base = by_key(generate(lm, items(), base_cfg))
    stop = next(s for c in base.values() if (s := _pick_stop(c.text)))
    out = by_key(generate(lm, items(), GenerateConfig(max_new_tokens=24, temperature=0, stop=["@@never@@", stop])))
    hits = 0
    for key, c in out.items():
        original = base[key]
        cut = original.text.find(stop)
        if cut < 0:
            assert (c.text, c.finish_reason, c.tokens) == (original.text, original.finish_reason, original.tokens)
            continue
        hits += 1
        assert c.text == original.text[:cut]
        assert stop not in c.text
        assert c.finish_reason == "stop"
        assert 1 <= c.tokens <= original.tokens
    assert hits >= 1


def test_stop_string_straddling_the_prompt_end_does_not_stop(lm):
    base = by_key(generate(lm, items(), GenerateConfig(max_new_tokens=12, temperature=0)))
    candidates = [(i, PROMPTS[i][-2:] + base[(i, 0)].text[:2]) for i in range(len(PROMPTS)) if len(PROMPTS[i]) >= 2]
    straddling = [(i, s) for i, s in candidates if len(base[(i, 0)].text) >= 2 and s not in base[(i, 0)].text]
    assert straddling
    for i, stop in straddling:
        out = generate(lm, [PromptItem(i, PROMPTS[i])], GenerateConfig(max_new_tokens=12, temperature=0, stop=[stop]))
        assert (out[0].text, out[0].tokens) == (base[(i, 0)].text, base[(i, 0)].tokens)


def test_max_new_tokens_respected(lm):
    out = generate(lm, items(), GenerateConfig(max_new_tokens=3, batch_size=3))
    assert all(c.tokens <= 3 for c in out)
    forced = generate(lm, items(), GenerateConfig(max_new_tokens=5, min_new_tokens=5, batch_size=3))
    assert [c.tokens for c in forced] == [5] * len(PROMPTS)
    assert all(c.finish_reason == "length" for c in forced)


def test_long_prompts_keep_their_end_and_config_is_validated(lm):
    long_prompt = " ".join(PROMPTS * 20)
    assert count_tokens(lm.tokenizer, [long_prompt])[0] > lm.context_length
    out = generate(lm, [PromptItem(0, long_prompt)], GenerateConfig(max_new_tokens=4, min_new_tokens=4))
    assert out[0].tokens == 4
    with pytest.raises(ValueError, match="no room"):
        generate(lm, items(), GenerateConfig(max_new_tokens=lm.context_length))
    with pytest.raises(ValueError, match="top_p"):
        GenerateConfig(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        GenerateConfig(temperature=-1)


def test_chunks_are_delivered_batch_by_batch(lm):
    events = []
    cfg = GenerateConfig(max_new_tokens=4, num_return_sequences=2, batch_size=4)

    def report(step, total, **metrics):
        events.append(("report", step, total, metrics["tokens_per_s"]))

    out = generate(lm, items(), cfg, report=report, on_chunk=lambda chunk: events.append(("chunk", chunk)))
    assert [e[0] for e in events] == ["chunk", "report"] * 3
    chunks = [e[1] for e in events if e[0] == "chunk"]
    assert [len(c) for c in chunks] == [8, 8, 4]
    assert [(e[1], e[2]) for e in events if e[0] == "report"] == [(4, 10), (8, 10), (10, 10)]
    assert all(e[3] > 0 for e in events if e[0] == "report")
    assert [c for chunk in chunks for c in chunk] == out
    # batches are built from length-sorted prompts: the longest come first
    lengths = count_tokens(lm.tokenizer, PROMPTS)
    first, last = {c.index for c in chunks[0]}, {c.index for c in chunks[-1]}
    assert min(lengths[i] for i in first) >= max(lengths[i] for i in last)


def test_stopped_by_report_ends_after_current_batch(lm, monkeypatch):
    calls, chunks = [], []
    real = lm.model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return real(*args, **kwargs)

    def report(step, total, **metrics):
        if step >= 6:
            raise Stopped("cancelled")

    monkeypatch.setattr(lm.model, "generate", counting)
    with pytest.raises(Stopped):
        generate(lm, items(), GenerateConfig(max_new_tokens=4, batch_size=3), report=report, on_chunk=chunks.append)
    assert calls == [3, 3]
    assert [len(c) for c in chunks] == [3, 3]
    assert len({c.index for chunk in chunks for c in chunk}) == 6


def _oom_above(monkeypatch, lm, limit: int, error: Exception) -> list[tuple[int, bool]]:
    """Make the model's generate raise ``error`` for batches above ``limit``; returns (batch, ok) per call."""
    calls = []
    real = lm.model.generate

    def flaky(*args, **kwargs):
        rows = kwargs["input_ids"].shape[0]
        calls.append((rows, rows <= limit))
        if rows > limit:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(lm.model, "generate", flaky)
    return calls


def test_oom_halves_the_batch_and_completes(lm, monkeypatch):
    expected = texts(generate(lm, items(), GenerateConfig(max_new_tokens=5, temperature=0, batch_size=2)))
    calls = _oom_above(monkeypatch, lm, 2, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    chunks = []
    out = generate(lm, items(), GenerateConfig(max_new_tokens=5, temperature=0, batch_size=8), on_chunk=chunks.append)
    assert calls[:3] == [(8, False), (4, False), (2, True)]
    assert all(ok and rows == 2 for rows, ok in calls[2:])
    assert [len(c) for c in chunks] == [2] * 5
    assert texts(out) == expected  # complete, and the same greedy texts as without OOM


def test_oom_as_runtime_error_message_is_handled(lm, monkeypatch):
    calls = _oom_above(monkeypatch, lm, 3, RuntimeError("DefaultCPUAllocator: not enough memory: out of memory"))
    out = generate(lm, items(), GenerateConfig(max_new_tokens=3, batch_size=7))
    assert [rows for rows, _ in calls] == [7, 3, 3, 3, 1]
    assert {c.index for c in out} == set(range(len(PROMPTS)))


def test_oom_at_batch_one_raises_and_other_errors_propagate(lm, monkeypatch):
    _oom_above(monkeypatch, lm, 0, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(GenerationOOM):
        generate(lm, items(), GenerateConfig(max_new_tokens=3, batch_size=4))
    _oom_above(monkeypatch, lm, 0, RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate(lm, items(), GenerateConfig(max_new_tokens=3, batch_size=4))


def test_empty_items(lm):
    assert generate(lm, [], GenerateConfig()) == []


def test_uncached_hub_id_fails_without_network():
    with pytest.raises(OSError):  # local_files_only: the local HF cache or nothing
        load_causal_lm("genqueue-test/definitely-not-cached", pick_device("cpu"))
