"""Data-parallel ``text.train``: one job, ``num_processes`` ranks on one host, torch.distributed (NCCL/gloo).

:func:`launch` runs in the job's own process. It writes the job's inputs under ``work_dir/ddp``, starts the ranks
as child processes (``python -m worker.ml.distributed``; a Celery pool process is daemonic and may not fork
``multiprocessing`` children), and relays rank 0's logs and reports to the job's ``log``/``report`` over a socket
pair. A :class:`Stopped` from ``report`` (cancel, timeout, shutdown, fencing) goes back to rank 0 and from it to
every rank at the next metrics point (:meth:`World.agree_on_stop`): rank 0 checkpoints and all ranks exit. A rank
that dies ends the attempt: the others are killed and :class:`RankFailed` raised, never a hung job. Each rank dies
with the job's process (``PR_SET_PDEATHSIG``), so a pool process ended for running past its timeout leaves none.

Rank ``r`` trains on CUDA device ``base + r`` (NCCL) or on the CPU (gloo, the host's threads split between ranks).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from worker.ml.common import Device, Stopped, pick_device

logger = logging.getLogger(__name__)

STOP_REASONS = ("cancelled", "shutdown", "timeout", "fenced")
_FD_ENV = "GENQUEUE_DDP_FD"
_PARENT_ENV = "GENQUEUE_DDP_PARENT"
_POLL_SECONDS = 0.2


class RankFailed(RuntimeError):
    """A data-parallel rank exited with an error; the attempt is over (the job fails or is retried whole)."""


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` (``SINGLE``: not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model DDP-wrapped (gradients all-reduced in backward), or as is when alone."""
        if self.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [model.device.index] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, forward: torch.nn.Module, last: bool):
        """Skip the gradient all-reduce for a micro-batch that is not the step's ``last``."""
        sync_off = getattr(forward, "no_sync", None)
        return nullcontext() if last or sync_off is None else sync_off()

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the ranks (the value itself when alone)."""
        if self.size == 1:
            return value
        out = value.detach().clone()
        dist.all_reduce(out)
        return out / self.size

    def agree_on_stop(self, reason: str | None) -> str | None:
        """Rank 0's stop reason (or None), known to every rank: each calls this at the same steps."""
        if self.size == 1:
            return reason
        dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
        code = torch.tensor([0 if reason is None else 1 + STOP_REASONS.index(reason)], device=dev)
        dist.broadcast(code, src=0)
        value = int(code.item())
        return None if value == 0 else STOP_REASONS[value - 1]

    @contextlib.contextmanager
    def rank_zero_first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others (it writes what they then read)."""
        if self.size > 1 and not self.is_main:
            dist.barrier()
        yield
        if self.size > 1 and self.is_main:
            dist.barrier()


SINGLE = World()


def nullcontext():
    return contextlib.nullcontext()


def launch(cfg, train_texts: Sequence[str], val_texts, work_dir: Path, device: Device, report, log):
    """Run :func:`worker.ml.lm.train.train_rank` in ``cfg.num_processes`` child processes; rank 0's result."""
    from worker.ml.lm.train import LMTrainResult

    ddp = work_dir / "ddp"
    ddp.mkdir(parents=True, exist_ok=True)
    devices = rank_devices(device, cfg.num_processes)
    spec = {"cfg": asdict(cfg), "work_dir": str(work_dir), "devices": devices, "threads": torch.get_num_threads()}
    (ddp / "job.json").write_text(json.dumps(spec))
    (ddp / "texts.json").write_text(json.dumps({"train": list(train_texts), "val": list(val_texts or []) or None}))
    parent_end, child_end = socket.socketpair()
    procs = _start_ranks(ddp, cfg.num_processes, child_end.fileno())
    child_end.close()
    conn = Connection(parent_end.detach())
    log(f"data-parallel: {cfg.num_processes} ranks on {', '.join(devices)} (pids {[p.pid for p in procs]})")
    try:
        done = _relay(conn, procs, report, log)
    finally:
        conn.close()
        _end(procs)
    if done.get("stopped"):
        raise Stopped(done["stopped"])
    return LMTrainResult(
        Path(done["model_dir"]), done["steps"], done["resumed_from"], done["metrics"], done["n_params"]
    )


def rank_devices(device: Device, n: int) -> list[str]:
    """The device of each of ``n`` ranks: CUDA ``base .. base + n - 1`` (ValueError past the last), else CPU."""
    if not device.is_cuda:
        return ["cpu"] * n
    base, count = device.torch_device.index or 0, torch.cuda.device_count()
    if base + n > count:
        raise ValueError(f"num_processes {n} from cuda:{base} needs {base + n} GPUs; this worker has {count}")
    return [f"cuda:{base + r}" for r in range(n)]


def _start_ranks(ddp: Path, n: int, fd: int) -> list[subprocess.Popen]:
    with socket.socket() as s:  # a free port for the rendezvous (a race with another job is retried by the job)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(n):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(n),
            "LOCAL_RANK": str(rank),
        }
        if rank == 0:
            env[_FD_ENV] = str(fd)
        cmd = [sys.executable, "-m", "worker.ml.distributed", str(ddp)]
        env[_PARENT_ENV] = str(os.getpid())
        procs.append(subprocess.Popen(cmd, env=env, pass_fds=(fd,) if rank == 0 else ()))
    return procs


def _die_with_parent() -> None:
    """SIGKILL this rank when the job's process dies, however it dies (Linux ``PR_SET_PDEATHSIG``); exit now if it
    already has. Set here rather than in a ``preexec_fn``, which is unsafe in the job's threaded process."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != int(os.environ[_PARENT_ENV]):
        os._exit(1)


def _relay(conn: Connection, procs: list[subprocess.Popen], report, log) -> dict[str, Any]:
    """Pass rank 0's messages on until it says it is done; RankFailed as soon as any rank exits with an error."""
    pending_stop: str | None = None
    error: tuple[str, str] | None = None
    while True:
        while conn.poll(_POLL_SECONDS):
            try:
                kind, *payload = conn.recv()
            except EOFError:
                time.sleep(_POLL_SECONDS)
                break
            if kind == "error":
                error = (payload[0], payload[1])
            elif kind == "log":
                log(payload[0])
            elif kind == "report":
                step, total, metrics, wants_answer = payload
                try:
                    report(step, total, **metrics)
                except Stopped as stop:
                    pending_stop = pending_stop or stop.reason
                if wants_answer:
                    conn.send(pending_stop)
            elif kind == "done":
                _wait_all(procs)
                return payload[0]
        failed = [(r, p.returncode) for r, p in enumerate(procs) if p.poll() not in (None, 0)]
        if failed:
            user_errors = _user_errors()
            if error is not None and error[0] in user_errors:
                raise user_errors[error[0]](error[1])
            detail = f"; rank 0: {error[0]}: {error[1]}" if error else ""
            raise RankFailed(f"data-parallel rank(s) exited with an error: {failed} (rank, exit code){detail}")
        if all(p.poll() == 0 for p in procs):
            raise RankFailed("the ranks exited without a result")


def _user_errors() -> dict[str, type[Exception]]:
    from worker.ml.lm.data import DatasetTooSmall
    from worker.ml.lm.models import BlockSizeTooLarge

    return {"DatasetTooSmall": DatasetTooSmall, "BlockSizeTooLarge": BlockSizeTooLarge, "ValueError": ValueError}


def _wait_all(procs: list[subprocess.Popen], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for rank, p in enumerate(procs):
        code = p.wait(timeout=max(0.1, deadline - time.monotonic()))
        if code != 0:
            raise RankFailed(f"data-parallel rank {rank} exited with {code} after rank 0 finished")


def _end(procs: list[subprocess.Popen]) -> None:
    """Kill whatever rank is still running (after success they have all exited already)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=10)


class _Parent:
    """Rank 0's line to the job's process: logs, reports, and the answer to "should we stop?"."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def log(self, message: str) -> None:
        self.conn.send(("log", message))

    def report(self, step: int, total: int, **metrics: float) -> None:
        wants_answer = bool(metrics)  # metrics points are where every rank agrees on stopping
        self.conn.send(("report", step, total, metrics, wants_answer))
        if wants_answer:
            reason = self.conn.recv()
            if reason is not None:
                raise Stopped(reason)


def _rank_main(ddp: Path) -> None:
    """Entry point of one rank (env: RANK, WORLD_SIZE, MASTER_ADDR/PORT as torchrun sets them)."""
    from worker.ml.lm.train import LMTrainConfig, train_rank

    _die_with_parent()
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    spec = json.loads((ddp / "job.json").read_text())
    texts = json.loads((ddp / "texts.json").read_text())
    device = pick_device(spec["devices"][rank])
    if device.is_cuda:
        torch.cuda.set_device(device.torch_device)
    else:
        torch.set_num_threads(max(1, spec["threads"] // size))
    backend = "nccl" if device.is_cuda else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=size, timeout=timedelta(minutes=30))
    parent = _Parent(Connection(int(os.environ[_FD_ENV]))) if rank == 0 else None
    log: Callable[[str], None] = parent.log if parent else logger.debug
    report = parent.report if parent else _no_report
    cfg = LMTrainConfig(**spec["cfg"])
    world = World(rank, size)
    try:
        result = train_rank(cfg, texts["train"], texts["val"], Path(spec["work_dir"]), device, report, log, world)
        done = {
            "model_dir": str(result.model_dir),
            "steps": result.steps,
            "resumed_from": result.resumed_from_step,
            "metrics": result.metrics,
            "n_params": result.n_params,
        }
    except Stopped as stop:
        done = {"stopped": stop.reason}
    except Exception as exc:
        if parent:  # the job's process re-raises the user errors (dataset too small, …) as themselves
            parent.conn.send(("error", type(exc).__name__, str(exc)))
        raise
    dist.destroy_process_group()
    if parent:
        parent.conn.send(("done", done))


def _no_report(step: int, total: int, **metrics: float) -> None:
    """Ranks other than 0 report nothing."""


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    _rank_main(Path(sys.argv[1]))
