"""Cross-job batching in the continuous engine: several jobs' streams share one batch, more join between steps."""

from __future__ import annotations

import pytest

import worker.ml.lm.continuous as continuous
from tests.tiny import make_tiny_gpt2
from tests.unit.test_generate import PROMPTS, texts
from worker.ml.common import Stopped, pick_device
from worker.ml.lm.gen_base import GenerateConfig, PromptItem, Stream
from worker.ml.lm.generate import generate
from worker.ml.lm.loading import load_causal_lm


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return load_causal_lm(str(make_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))), pick_device("cpu"))


class Job:
    """What the task layer keeps per job: its chunks, its reports, how it ended."""

    def __init__(self, items: list[PromptItem], stop_at_report: int | None = None, cfg: GenerateConfig | None = None):
        self.items, self.chunks, self.reports, self.ends = items, [], [], []
        self.stop_at_report = stop_at_report
        self.stream = Stream(items, self.report, self.chunks.append, self.ends.append, cfg)

    def report(self, step: int, total: int, **metrics: float) -> None:
        self.reports.append((step, total))
        if self.stop_at_report is not None and len(self.reports) >= self.stop_at_report:
            raise Stopped("cancelled")

    @property
    def out(self):
        return [c for chunk in self.chunks for c in chunk]


def one_prompt_jobs(n: int, limit: int | None = None) -> list[Job]:
    return [Job([PromptItem(0, PROMPTS[k % len(PROMPTS)], max_new_tokens=limit)]) for k in range(n)]


def run_joining(lm, first: Job, later: list[Job], cfg: GenerateConfig, after_steps: int) -> list[int]:
    """Run ``first``; ``later`` are handed to ``join`` once ``after_steps`` decode steps ran. Rows per step back."""
    steps: list[int] = []
    real = continuous.ContinuousEngine._step

    def counting(self):
        steps.append(len(self.slots))
        return real(self)

    pending = list(later)

    def join(free: int) -> list[Stream]:
        assert free >= 1
        if len(steps) < after_steps or not pending:
            return []
        taken = pending[:free]
        del pending[:free]
        return [j.stream for j in taken]

    continuous.ContinuousEngine._step = counting
    try:
        continuous.generate_streams(lm, [first.stream], cfg, join)
    finally:
        continuous.ContinuousEngine._step = real
    return steps


def test_jobs_joining_mid_decode_get_exactly_their_texts_alone(lm, monkeypatch):
    monkeypatch.setattr(continuous, "JOIN_SECONDS", 0.0)
    cfg = GenerateConfig(max_new_tokens=12, min_new_tokens=12, seed=5, num_return_sequences=2, batch_size=16)
    first = Job([PromptItem(i, p) for i, p in enumerate(PROMPTS[:3])])
    later = one_prompt_jobs(6)
    later.append(Job([PromptItem(0, PROMPTS[1], max_new_tokens=40)]))  # needs wider KV rows than any before it
    steps = run_joining(lm, first, later, cfg, after_steps=4)
    assert steps[:4] == [6, 6, 6, 6] and max(steps) > 6  # they joined while the first job's rows decoded
    for job in [first, *later]:
        alone = generate(lm, job.items, cfg)
        assert texts(job.out) == texts(alone)  # same prompt index 0 in several jobs: each gets its own text
        assert job.ends == [None]
        assert job.reports[-1] == (len(job.items), len(job.items))
    assert len(later[-1].out[0].text) > 0 and later[-1].out[0].tokens == 40


def test_jobs_with_other_sampling_share_the_batch_and_get_exactly_their_texts_alone(lm, monkeypatch):
    """Each stream draws with its own config (temperature, top-k, top-p, seed, greedy, repetition penalty, sequences
    per prompt, default limit and stop strings), in one batch with the others; each gets what it gets alone."""
    monkeypatch.setattr(continuous, "JOIN_SECONDS", 0.0)
    engine = GenerateConfig(max_new_tokens=10, seed=1, batch_size=32)
    configs = [
        GenerateConfig(max_new_tokens=10, seed=1),
        GenerateConfig(max_new_tokens=14, seed=2, temperature=0.7, top_k=5),
        GenerateConfig(max_new_tokens=9, seed=2, top_p=0.8, top_k=None),
        GenerateConfig(max_new_tokens=12, temperature=0, num_return_sequences=2),
        GenerateConfig(max_new_tokens=11, seed=3, repetition_penalty=1.3, num_return_sequences=3),
        GenerateConfig(max_new_tokens=10, seed=1),  # the first job's sampling again: drawn in its group
        GenerateConfig(max_new_tokens=10, seed=9),  # only its seed differs: drawn in that group too (seeds per row)
        GenerateConfig(max_new_tokens=16, seed=4, stop=["e"], repetition_penalty=0.8),
    ]
    jobs = [
        Job([PromptItem(i, PROMPTS[(k + i) % len(PROMPTS)]) for i in range(2)], cfg=c) for k, c in enumerate(configs)
    ]
    draws = []
    real = continuous.ContinuousEngine._draw

    def counting(self, scores, rows, *args):
        draws.append(len(rows))
        return real(self, scores, rows, *args)

    monkeypatch.setattr(continuous.ContinuousEngine, "_draw", counting)
    steps = run_joining(lm, jobs[0], jobs[1:], engine, after_steps=2)
    assert max(steps) > 4 and len(draws) > len(steps)  # they shared steps, drawn in several groups
    monkeypatch.setattr(continuous.ContinuousEngine, "_draw", real)
    for job, cfg in zip(jobs, configs, strict=True):
        assert job.ends == [None]
        alone = generate(lm, job.items, cfg)
        assert texts(job.out) == texts(alone), cfg
        assert len(job.out) == 2 * cfg.num_return_sequences


def test_jobs_that_differ_only_in_their_seed_are_drawn_as_one_group(lm, monkeypatch):
    monkeypatch.setattr(continuous, "JOIN_SECONDS", 0.0)
    configs = [GenerateConfig(max_new_tokens=8, seed=k, temperature=0.8) for k in range(4)]
    jobs = [Job([PromptItem(0, PROMPTS[k])], cfg=c) for k, c in enumerate(configs)]
    calls = {"choose": 0, "draw": 0}
    for name in calls:
        real = getattr(continuous.ContinuousEngine, f"_{name}")

        def counted(self, *args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(continuous.ContinuousEngine, f"_{name}", counted)
    continuous.generate_streams(lm, [j.stream for j in jobs], configs[0], None)
    assert calls["choose"] > 0 and calls["draw"] == calls["choose"]  # one draw per step for the four seeds
    monkeypatch.undo()
    for job, cfg in zip(jobs, configs, strict=True):
        assert texts(job.out) == texts(generate(lm, job.items, cfg))
    assert len({job.out[0].text for job in jobs}) > 1  # the seeds did draw differently


def test_cancelling_one_job_leaves_the_others_untouched(lm, monkeypatch):
    monkeypatch.setattr(continuous, "JOIN_SECONDS", 0.0)
    monkeypatch.setattr(continuous, "REPORT_SECONDS", 0.0)
    cfg = GenerateConfig(max_new_tokens=30, min_new_tokens=30, seed=2, batch_size=8)
    first = Job([PromptItem(0, PROMPTS[4])])
    later = one_prompt_jobs(3)
    later[1] = Job([PromptItem(0, PROMPTS[6]), PromptItem(1, PROMPTS[7])], stop_at_report=3)
    run_joining(lm, first, later, cfg, after_steps=1)
    cancelled = later[1]
    assert len(cancelled.ends) == 1 and isinstance(cancelled.ends[0], Stopped) and cancelled.out == []
    for job in (first, later[0], later[2]):
        assert job.ends == [None]
        assert texts(job.out) == texts(generate(lm, job.items, cfg))


def test_a_job_with_bad_input_fails_alone(lm, monkeypatch):
    monkeypatch.setattr(continuous, "JOIN_SECONDS", 0.0)
    cfg = GenerateConfig(max_new_tokens=8, seed=1, batch_size=4)
    first = Job([PromptItem(0, PROMPTS[0])])
    bad = Job([PromptItem(0, "x", max_new_tokens=lm.context_length)])  # leaves no room for the prompt
    good = Job([PromptItem(0, PROMPTS[3])])
    empty = Job([])  # every prompt already stored by an earlier attempt
    run_joining(lm, first, [bad, good, empty], cfg, after_steps=1)
    assert len(bad.ends) == 1 and isinstance(bad.ends[0], ValueError) and "no room" in str(bad.ends[0])
    assert first.ends == good.ends == empty.ends == [None]
    assert texts(good.out) == texts(generate(lm, good.items, cfg))


def test_a_job_running_alone_still_propagates_its_stop(lm):
    cfg = GenerateConfig(max_new_tokens=30, min_new_tokens=30, batch_size=2)
    job = Job([PromptItem(0, PROMPTS[0])], stop_at_report=1)
    alone = Stream(job.items, job.report, job.chunks.append)  # no on_end: the engine raises, as for one job

    with pytest.raises(Stopped):
        continuous.ContinuousEngine(lm, [alone], cfg, encoded=None).run()


def test_progress_never_runs_ahead_of_the_results_handed_over(lm, monkeypatch):
    monkeypatch.setattr(continuous, "REPORT_SECONDS", 0.0)  # report every step
    monkeypatch.setattr(continuous, "FLUSH_SECONDS", 1e9)  # finished prompts wait for a full chunk
    monkeypatch.setattr(continuous, "CHUNK_ROWS", 6)
    cfg = GenerateConfig(max_new_tokens=12, batch_size=2, num_return_sequences=2, temperature=1.0, seed=3)
    job = Job([PromptItem(i, PROMPTS[i % len(PROMPTS)], max_new_tokens=2 + 3 * (i % 4)) for i in range(9)])
    seen = []

    def report(step: int, total: int, **metrics: float) -> None:
        seen.append((step, len(job.out) // 2))  # (reported prompts, prompts whose results were handed over)

    job.stream = Stream(job.items, report, job.chunks.append, job.ends.append)
    continuous.generate_streams(lm, [job.stream], cfg, None)
    assert len(job.out) == 18
    assert any(0 < step < 9 for step, _ in seen)  # it did report mid-way
    assert all(step <= handed for step, handed in seen), seen
    assert seen[-1] == (9, 9)
