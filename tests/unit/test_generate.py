"""The bulk generation engines on a tiny GPT-2 built in the test and loaded through ``load_causal_lm``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import worker.ml.lm.continuous as continuous
import worker.ml.lm.static_batch as static_batch
from tests.tiny import make_tiny_gpt2
from worker.ml.common import Stopped, pick_device
from worker.ml.lm.generate import Completion, GenerateConfig, GenerationOOM, PromptItem, auto_batch_size, generate
from worker.ml.lm.loading import UnsafeWeightsError, count_tokens, load_causal_lm
from worker.ml.lm.sampling import Sample, draw, row_uniforms

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
ENGINES = ["continuous", "static"]


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


def hf_greedy(lm, prompt: str, new: int, **kwargs) -> str:
    """Plain HF ``generate`` on one prompt, no padding: the reference for greedy decoding."""
    ids = lm.tokenizer(prompt or lm.tokenizer.eos_token, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = lm.model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, **kwargs)
    return lm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


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


def test_rows_in_flight_follow_memory_and_batch_size(lm):
    per_token = continuous.kv_bytes_per_token(lm)
    assert per_token == 2 * 2 * 32 * 4  # keys + values x layers x width x fp32
    assert continuous.rows_in_flight(lm, GenerateConfig(batch_size=3, num_return_sequences=2), 100) == 6
    assert continuous.rows_in_flight(lm, GenerateConfig(batch_size=3, temperature=0, num_return_sequences=2), 9) == 3
    assert 1 <= continuous.rows_in_flight(lm, GenerateConfig(), 128) <= continuous.MAX_ROWS["cpu"]


@pytest.mark.parametrize("engine", ENGINES)
def test_every_prompt_gets_all_sequences(lm, engine):
    indexes = [3, 7, 8, 20, 21, 22, 40, 41, 99, 100]
    cfg = GenerateConfig(max_new_tokens=6, num_return_sequences=3, batch_size=4)
    out = generate(lm, items(indexes), cfg, engine=engine)
    assert len(out) == 30
    assert set(by_key(out)) == {(i, s) for i in indexes for s in range(3)}
    for c in out:
        assert 0 <= c.tokens <= 6
        assert c.finish_reason in ("stop", "length")
        if c.finish_reason == "length":
            assert c.tokens == 6
    assert not any(c.text.startswith(PROMPTS[1]) for c in out if c.index == 7)  # the prompt is not in the text


def test_same_seed_same_texts_other_seed_differs(lm):
    cfg = GenerateConfig(max_new_tokens=8, num_return_sequences=2, batch_size=4, seed=1)
    first = texts(generate(lm, items(), cfg))
    again = texts(generate(lm, items(), cfg))
    other = texts(generate(lm, items(), GenerateConfig(max_new_tokens=8, num_return_sequences=2, batch_size=4, seed=2)))
    assert first == again
    assert sum(first[k] != other[k] for k in first) >= len(first) // 2
    # the sequences of one prompt are different samples
    assert sum(first[(i, 0)] != first[(i, 1)] for i in range(len(PROMPTS))) >= len(PROMPTS) // 2


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_sampled_texts_do_not_depend_on_rows_in_flight_batch_mates_or_order(lm, penalty):
    def run(batch_size, chosen=range(len(PROMPTS))):
        cfg = GenerateConfig(
            max_new_tokens=12, num_return_sequences=2, batch_size=batch_size, seed=7, repetition_penalty=penalty
        )
        return texts(generate(lm, [PromptItem(i, PROMPTS[i]) for i in chosen], cfg))

    alone = run(1)
    assert run(5) == alone and run(0) == alone and run(3) == alone
    # other batch-mates, another order, or only the prompts a retry has left to do: the same texts
    assert run(2, [9, 3, 6, 1]) == {k: v for k, v in alone.items() if k[0] in (9, 3, 6, 1)}
    assert run(4, range(5, 10)) == {k: v for k, v in alone.items() if k[0] >= 5}


def test_sampled_texts_match_under_a_tighter_budget_even_per_prompt_limits(lm):
    limits = [3, 20, 1, 9, 14, 2, 20, 5, 7, 11]
    chosen = [PromptItem(i, PROMPTS[i], max_new_tokens=n) for i, n in enumerate(limits)]
    cfg = GenerateConfig(max_new_tokens=20, min_new_tokens=20, seed=3, top_k=20, top_p=0.9)
    wide = by_key(generate(lm, chosen, cfg))
    narrow = by_key(generate(lm, chosen, GenerateConfig(**{**cfg.__dict__, "batch_size": 2})))
    assert {k: c.text for k, c in wide.items()} == {k: c.text for k, c in narrow.items()}
    assert [wide[(i, 0)].tokens for i in range(len(limits))] == limits  # each prompt's own max_new_tokens


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("batch_size", [1, 3, 0])
def test_greedy_matches_plain_hf_generate_one_prompt_at_a_time(lm, engine, batch_size):
    cfg = GenerateConfig(max_new_tokens=10, min_new_tokens=10, temperature=0, batch_size=batch_size)
    ours = texts(generate(lm, items(), cfg, engine=engine))
    for i, prompt in enumerate(PROMPTS):
        assert ours[(i, 0)] == hf_greedy(lm, prompt, 10), i
    # a job of one-token prompts only: nothing to prefill
    one_token = [PromptItem(i, PROMPTS[i]) for i in (2, 3, 8)]
    assert count_tokens(lm.tokenizer, [it.prompt for it in one_token]) == [0, 1, 1]
    assert texts(generate(lm, one_token, cfg, engine=engine)) == {(i, 0): ours[(i, 0)] for i in (2, 3, 8)}


def test_greedy_repetition_penalty_matches_hf_and_changes_the_text(lm):
    cfg = GenerateConfig(max_new_tokens=10, min_new_tokens=10, temperature=0, repetition_penalty=1.5, batch_size=4)
    ours = texts(generate(lm, items(), cfg))
    plain = texts(generate(lm, items(), GenerateConfig(max_new_tokens=10, min_new_tokens=10, temperature=0)))
    for i, prompt in enumerate(PROMPTS):
        assert ours[(i, 0)] == hf_greedy(lm, prompt, 10, repetition_penalty=1.5), i
    assert sum(ours[k] != plain[k] for k in ours) >= 3


def test_greedy_copies_and_top_k_one_or_tiny_top_p_is_greedy(lm):
    greedy = texts(generate(lm, items(), GenerateConfig(max_new_tokens=8, temperature=0)))
    two = generate(lm, items(), GenerateConfig(max_new_tokens=8, temperature=0, num_return_sequences=2))
    assert {(c.index, c.sequence) for c in two} == {(i, s) for i in range(len(PROMPTS)) for s in range(2)}
    assert all(c.text == greedy[(c.index, 0)] for c in two)
    top1 = texts(generate(lm, items(), GenerateConfig(max_new_tokens=8, temperature=1.5, top_k=1, seed=3)))
    assert top1 == greedy
    nucleus = texts(generate(lm, items(), GenerateConfig(max_new_tokens=8, top_k=0, top_p=1e-6, seed=3)))
    assert nucleus == greedy


def test_sampler_follows_the_distribution():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    scores = logits.repeat(20_000, 1)  # (N, V): one draw per row
    n = np.arange(len(scores))
    u = torch.from_numpy(row_uniforms(5, n, n % 3, n // 7))[:, None]

    def freq(**overrides):
        kw = {"temperature": 1.0, "top_k": None, "top_p": 1.0, **overrides}
        token = draw(scores.clone(), kw["temperature"], kw["top_k"], kw["top_p"], u)[:, 0]
        return torch.bincount(token, minlength=4) / len(scores)

    assert torch.allclose(freq(), torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.015)
    assert torch.allclose(freq(top_k=2), torch.tensor([0.625, 0.375, 0, 0]), atol=0.015)
    assert torch.allclose(freq(top_p=0.7), torch.tensor([0.625, 0.375, 0, 0]), atol=0.015)
    hot = freq(temperature=2.0)  # flatter than the logits
    assert hot[0] < 0.45 and hot[3] > 0.08
    # the static engine's processor: one finite score per row
    out = Sample(1.0, None, 1.0, torch.Generator().manual_seed(0))(None, scores.clone())
    assert torch.isinf(out).sum(-1).eq(3).all()


def test_row_uniforms_are_a_pure_function_of_their_key():
    idx = np.arange(1000)
    a = row_uniforms(1, idx, idx * 0, idx * 0 + 4)
    assert ((a >= 0) & (a < 1)).all() and 0.45 < a.mean() < 0.55
    assert np.array_equal(a[::-1], row_uniforms(1, idx[::-1], idx * 0, idx * 0 + 4))  # no dependence on row order
    assert len({row_uniforms(1, idx[:1], idx[:1] * 0, np.array([s]))[0] for s in range(50)}) == 50
    for other in (row_uniforms(2, idx, idx * 0, idx * 0 + 4), row_uniforms(1, idx, idx * 0 + 1, idx * 0 + 4)):
        assert (other != a).mean() > 0.99
    seeds = idx % 3  # a seed per row (jobs of other seeds in one batch): each row as if its seed were everyone's
    mixed = row_uniforms(seeds, idx, idx * 0, idx * 0 + 4)
    for seed in range(3):
        assert np.array_equal(mixed[seeds == seed], row_uniforms(seed, idx[seeds == seed], idx[:1] * 0, np.array([4])))


def _pick_stop(text: str) -> str | None:
    """Two printable ASCII characters from the middle of ``text``."""
    for k in range(2, len(text) - 1):
        pair = text[k : k + 2]
        if pair.isascii() and pair.isprintable() and pair.strip() == pair:
            return pair
    return None


@pytest.mark.parametrize("engine", ENGINES)
def test_stop_strings_truncate_and_set_finish_reason(lm, engine):
    base = by_key(generate(lm, items(), GenerateConfig(max_new_tokens=24, temperature=0), engine=engine))
    stop = next(s for c in base.values() if (s := _pick_stop(c.text)))
    cfg = GenerateConfig(max_new_tokens=24, temperature=0, stop=["@@never@@", stop], batch_size=3)
    out = by_key(generate(lm, items(), cfg, engine=engine))
    hits = 0
    for key, c in out.items():
        original = base[key]
        cut = original.text.find(stop)
        if cut < 0:
            assert (c.text, c.finish_reason, c.tokens) == (original.text, original.finish_reason, original.tokens)
            continue
        hits += 1
        assert (c.text, c.finish_reason) == (original.text[:cut], "stop")
        assert 1 <= c.tokens <= original.tokens
    assert hits >= 1


def test_per_prompt_stop_and_max_new_tokens_override_the_job(lm):
    base = by_key(generate(lm, items(), GenerateConfig(max_new_tokens=24, temperature=0)))
    i, stop = next((k[0], s) for k, c in base.items() if (s := _pick_stop(c.text)))
    chosen = [PromptItem(i, PROMPTS[i], stop=(stop,)), PromptItem(1, PROMPTS[1], max_new_tokens=5)]
    chosen.append(PromptItem(4, PROMPTS[4], max_new_tokens=30, stop=()))  # no stop for this one
    out = by_key(generate(lm, chosen, GenerateConfig(max_new_tokens=24, temperature=0, stop=["@@never@@"])))
    assert out[(i, 0)].text == base[(i, 0)].text[: base[(i, 0)].text.find(stop)]
    assert out[(i, 0)].finish_reason == "stop"
    assert out[(1, 0)].text == hf_greedy(lm, PROMPTS[1], 5) and out[(1, 0)].tokens <= 5
    assert out[(4, 0)].text.startswith(base[(4, 0)].text) and out[(4, 0)].tokens <= 30


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
    assert sorted(c.tokens for c in forced) == [5] * len(PROMPTS)
    assert all(c.finish_reason == "length" for c in forced)


def test_long_prompts_keep_their_end_and_config_is_validated(lm):
    long_prompt = " ".join(PROMPTS * 20)
    assert count_tokens(lm.tokenizer, [long_prompt])[0] > lm.context_length
    for limit in (4, 100):
        out = generate(lm, [PromptItem(0, long_prompt, max_new_tokens=limit)], GenerateConfig(min_new_tokens=100))
        assert out[0].tokens == limit
    with pytest.raises(ValueError, match="no room"):
        generate(lm, items(), GenerateConfig(max_new_tokens=lm.context_length))
    with pytest.raises(ValueError, match="no room"):
        generate(lm, [PromptItem(0, "a", max_new_tokens=lm.context_length)], GenerateConfig())
    with pytest.raises(ValueError, match="top_p"):
        GenerateConfig(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        GenerateConfig(temperature=-1)


def _count_steps(monkeypatch) -> list[int]:
    """Record the rows of every decode step of the continuous engine."""
    steps = []
    real = continuous.ContinuousEngine._step

    def counting(self):
        steps.append(len(self.slots))
        return real(self)

    monkeypatch.setattr(continuous.ContinuousEngine, "_step", counting)
    return steps


def test_a_finished_row_s_slot_takes_the_next_prompt_at_the_next_step(lm, monkeypatch):
    steps = _count_steps(monkeypatch)
    limits = [10, 1, 1, 1, 1, 2]
    chosen = [PromptItem(i, PROMPTS[i], max_new_tokens=n) for i, n in enumerate(limits)]
    out = generate(lm, chosen, GenerateConfig(min_new_tokens=10, batch_size=2))
    assert sorted((c.index, c.tokens) for c in out) == list(enumerate(limits))
    # prompt 0's first token comes from its prefill, then it decodes for 9 steps; meanwhile the other slot takes
    # prompts 1, 2, 3, 4 (each done by its prefill: one token, no decode step), then 5 (its second token in a step)
    assert steps == [1] * 4 + [2] + [1] * 4
    assert [c.index for c in out] == [1, 2, 3, 4, 5, 0]  # in the order they finished


def test_chunks_stream_as_prompts_finish_bounded_and_whole(lm, monkeypatch):
    monkeypatch.setattr(continuous, "CHUNK_ROWS", 4)
    monkeypatch.setattr(continuous, "FLUSH_SECONDS", 0.0)
    events = []
    limits = [2, 30, 3, 4, 30, 5, 6, 7, 8, 9]
    chosen = [PromptItem(i, PROMPTS[i], max_new_tokens=n) for i, n in enumerate(limits)]
    cfg = GenerateConfig(min_new_tokens=30, num_return_sequences=2, batch_size=10)

    def report(step, total, **metrics):
        events.append(("report", step, total, metrics["tokens_per_s"]))

    out = generate(lm, chosen, cfg, report=report, on_chunk=lambda chunk: events.append(("chunk", chunk)))
    chunks = [e[1] for e in events if e[0] == "chunk"]
    assert [c for chunk in chunks for c in chunk] == out and len(out) == 20
    assert all(1 <= len(chunk) <= 4 for chunk in chunks)
    first_long = next(k for k, c in enumerate(out) if limits[c.index] == 30)
    assert {c.index for c in out[:first_long]} == {i for i, n in enumerate(limits) if n < 30}  # short ones first
    for chunk in chunks:  # a prompt's sequences go out together
        assert all(sum(d.index == c.index for d in chunk) == 2 for c in chunk)
    progress = [(e[1], e[2]) for e in events if e[0] == "report"]
    assert progress[-1] == (10, 10) and progress == sorted(progress) and len(set(progress)) >= 3
    assert all(e[3] > 0 for e in events if e[0] == "report")


def test_stopped_by_report_keeps_every_finished_prompt(lm, monkeypatch):
    monkeypatch.setattr(continuous, "FLUSH_SECONDS", 0.0)  # hand over (and report) as soon as a prompt is done
    delivered = []

    def report(step, total, **metrics):
        if step >= 4:
            raise Stopped("cancelled")

    chosen = [PromptItem(i, PROMPTS[i], max_new_tokens=1 + 3 * i) for i in range(len(PROMPTS))]
    with pytest.raises(Stopped):
        generate(lm, chosen, GenerateConfig(min_new_tokens=40, batch_size=3), report=report, on_chunk=delivered.extend)
    assert 4 <= len(delivered) < len(PROMPTS)
    assert sorted(c.index for c in delivered) == list(range(len(delivered)))  # the shortest finished first


def test_report_comes_during_a_long_decode_so_cancel_is_noticed(lm, monkeypatch):
    monkeypatch.setattr(continuous, "REPORT_SECONDS", 0.0)
    steps = _count_steps(monkeypatch)
    calls = []

    def report(step, total, **metrics):
        calls.append(step)
        if len(calls) == 3:
            raise Stopped("cancelled")

    with pytest.raises(Stopped):
        generate(lm, items(), GenerateConfig(max_new_tokens=60, min_new_tokens=60), report=report)
    assert calls == [0, 0, 0] and len(steps) == 3  # nothing finished yet, and it stopped after three steps


def _oom_above(monkeypatch, limit: int, error: Exception) -> list[int]:
    """Make a continuous decode step with more than ``limit`` rows raise ``error``; returns rows per step."""
    steps = []
    real = continuous.ContinuousEngine._step

    def flaky(self):
        steps.append(len(self.slots))
        if len(self.slots) > limit:
            raise error
        return real(self)

    monkeypatch.setattr(continuous.ContinuousEngine, "_step", flaky)
    return steps


def test_oom_shrinks_the_rows_in_flight_and_keeps_every_row_and_text(lm, monkeypatch):
    cfg = GenerateConfig(max_new_tokens=6, seed=4, num_return_sequences=2, batch_size=8)
    expected = texts(generate(lm, items(), cfg))
    steps = _oom_above(monkeypatch, 4, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    chunks = []
    out = generate(lm, items(), cfg, on_chunk=chunks.append)
    assert steps[:2] == [16, 8] and max(steps[2:]) == 4
    assert texts(out) == expected  # complete, and the same sampled texts as without the OOM


def test_oom_as_runtime_error_message_is_handled(lm, monkeypatch):
    steps = _oom_above(monkeypatch, 3, RuntimeError("DefaultCPUAllocator: not enough memory: out of memory"))
    out = generate(lm, items(), GenerateConfig(max_new_tokens=3, batch_size=7))
    assert steps[0] == 7 and max(steps[1:]) == 3
    assert {c.index for c in out} == set(range(len(PROMPTS)))


def test_oom_at_one_row_raises_and_other_errors_propagate(lm, monkeypatch):
    _oom_above(monkeypatch, 0, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(GenerationOOM):
        generate(lm, items(), GenerateConfig(max_new_tokens=3, batch_size=4))
    _oom_above(monkeypatch, 0, RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate(lm, items(), GenerateConfig(max_new_tokens=3, batch_size=4))


def test_static_engine_still_batches_and_halves_on_oom(lm, monkeypatch):
    expected = texts(generate(lm, items(), GenerateConfig(max_new_tokens=5, temperature=0), engine="static"))
    calls, real = [], lm.model.generate

    def flaky(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        if calls[-1] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(lm.model, "generate", flaky)
    monkeypatch.setitem(static_batch.PREFILL_MICRO_BATCH, "cpu", 3)
    chunks = []
    cfg = GenerateConfig(max_new_tokens=5, temperature=0, batch_size=8)
    out = generate(lm, items(), cfg, on_chunk=chunks.append, engine="static")
    assert calls[:3] == [8, 4, 2] and [len(c) for c in chunks] == [2] * 5
    assert texts(out) == expected


def test_empty_items_and_unknown_engine(lm):
    assert generate(lm, [], GenerateConfig()) == []
    with pytest.raises(ValueError, match="engine"):
        generate(lm, items(), GenerateConfig(), engine="vllm")


def test_uncached_hub_id_fails_without_network():
    with pytest.raises(OSError):  # local_files_only: the local HF cache or nothing
        load_causal_lm("genqueue-test/definitely-not-cached", pick_device("cpu"))
