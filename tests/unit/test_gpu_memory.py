"""GPU memory for /metrics: parsed from nvidia-smi's CSV (no CUDA context in the worker's main process)."""

from __future__ import annotations

from worker.gpu_memory import MiB, gpu_memory_used, parse_memory_used

SAMPLE = "0, 81234\n1, 17\n"  # nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits


def test_the_device_index_picks_its_line():
    assert parse_memory_used(SAMPLE, 0) == 81234 * MiB
    assert parse_memory_used(SAMPLE, 1) == 17 * MiB
    assert parse_memory_used(SAMPLE, 2) is None
    assert parse_memory_used("[N/A]\n", 0) is None


def test_a_cpu_worker_reports_nothing():
    assert gpu_memory_used("cpu") is None
