"""Admission of big text.generate jobs: only prompts that might not fit are tokenized, and what does not fit is
still refused (a byte-level BPE never makes more tokens than a text has bytes)."""

from __future__ import annotations

import time


def post(client, model: str, prompts: list[str], max_new_tokens: int = 16):
    body = {"kind": "text.generate", "params": {"model": model, "prompts": prompts, "max_new_tokens": max_new_tokens}}
    return client.post("/api/v1/jobs", json=body)


def test_long_in_bytes_but_short_in_tokens_is_admitted_and_too_many_tokens_is_refused(client, tiny_model, held_queue):
    room = 128 - 16  # the tiny model's context minus max_new_tokens
    wordy = " the" * 60  # 240 bytes: over the room in bytes, so it is tokenized; far fewer tokens than bytes
    assert len(wordy.encode()) > room
    assert post(client, tiny_model.name, ["short", wordy]).status_code == 201
    noisy = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(room + 10))  # CJK: several tokens a character
    resp = post(client, tiny_model.name, ["short", noisy, "also short"])
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]["details"][0]["loc"] == ["params", "prompts", 1]


def test_a_ten_thousand_prompt_job_is_admitted(client, tiny_model, held_queue):
    prompts = [f"prompt number {i} of the big job says" for i in range(10_000)]
    started = time.perf_counter()
    resp = post(client, tiny_model.name, prompts)
    took = time.perf_counter() - started
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["progress"]["total"] == 10_000
    print(f"10,000-prompt job admitted in {took:.2f} s")
