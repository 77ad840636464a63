"""GPU memory in use on this worker's device, for ``/metrics`` (recorded on the worker's heartbeat row).

Read with ``nvidia-smi`` rather than torch: the worker's main process must not create a CUDA context before it forks
its pool processes, and ``nvidia-smi`` reports the device's memory used by every process (all pool processes), which
is what an operator watches.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

logger = logging.getLogger(__name__)

MiB = 1024 * 1024


def parse_memory_used(output: str, index: int) -> int | None:
    """Bytes used on GPU ``index`` from ``nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits``."""
    for line in output.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(index) and parts[1].isdigit():
            return int(parts[1]) * MiB
    return None


def gpu_memory_used(device: str) -> int | None:
    """Bytes in use on ``device`` (``cuda`` / ``cuda:N``); None on a CPU worker or without ``nvidia-smi``."""
    if not device.startswith("cuda") or shutil.which("nvidia-smi") is None:
        return None
    index = int(device.partition(":")[2] or 0)
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("nvidia-smi failed: %s", exc)
        return None
    return parse_memory_used(out, index)
