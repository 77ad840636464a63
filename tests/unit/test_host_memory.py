"""retained_heap: inside it a training-step-like pattern of large tensors reuses its freed pages without faulting
them in again once the heap has settled; with malloc's defaults every step faults them all in afresh."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")

# Run in a fresh process (malloc's defaults untouched): minor faults of one "step" after a few identical ones.
# 40 MiB tensors: above the 32 MiB up to which glibc adapts its mmap threshold, so by default always mmap'd.
_PROBE = """
import json, resource, torch
from worker.ml.host_memory import retained_heap

def step():
    tensors = [torch.ones(10 * 2**20) for _ in range(3)]  # 3 x 40 MiB, every page touched
    del tensors

def faults_of_a_step_after(warmup):
    for _ in range(warmup):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

outside = faults_of_a_step_after(3)
with retained_heap() as applied:
    inside = faults_of_a_step_after(6)  # the heap settles (an aligned block may first miss the hole its twin left)
with retained_heap(enabled=False) as disabled:
    pass
after = faults_of_a_step_after(0)  # defaults back: large blocks are mmap'd (or trimmed) again
print(json.dumps({"outside": outside, "inside": inside, "after": after, "applied": applied, "disabled": disabled}))
"""


def test_freed_memory_is_reused_without_page_faults_inside_only():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    pages = 3 * 40 * 2**20 // 4096  # the step's 4 KiB pages
    assert got["applied"] and not got["disabled"]
    assert got["outside"] > pages // 2  # malloc's defaults: faulted in every step
    assert got["inside"] < pages // 20  # retained: the same pages again
    assert got["after"] > pages // 4  # restored: the memory went back to the system
