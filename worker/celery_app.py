"""The Celery app of the worker processes: broker from the settings, one thin task module per job kind.

Process roles (prefork): the *main* process consumes messages and runs the maintenance thread; *pool* processes run
one job at a time. What is wired here so that no job is lost or run twice:

- a frozen process cannot hold a job row's lock (or the maintenance lock) for longer than a lease: Postgres ends
  its connections' idle transactions (``idle_in_transaction_timeout_ms``);
- a pool process may end itself when its job hangs past its timeout (``runtime.process.exit_on_hung``); the pool
  replaces it;
- a pool process that dies (SIGKILL, OOM killer, a crash in native code) ends its job's lease at once
  (:class:`JobRequest`), so the rescuer requeues the job on its next pass rather than one lease later;
- SIGTERM (or Ctrl-C) to the main process is forwarded to the pool processes running jobs, which checkpoint and hand
  their jobs back; Celery's warm shutdown then waits only for that hand-back, not for the jobs to finish.
"""

from __future__ import annotations

import logging
import os
import signal

# Torch's CPU threads (OpenMP) spin only briefly (~0.1 ms) after a parallel region before they sleep, unless the
# operator chose a wait policy. Set before any task module imports torch (OpenMP reads it when it loads).
# - Spinning long (libgomp's default, ~3 ms; OMP_WAIT_POLICY=ACTIVE: forever) starves the web, Postgres or other
#   workers on a shared host, and the threads are descheduled mid-step: the decode steps of a 64-row batch went
#   3 ms -> 150 ms while submissions came in (benchmarks/small_jobs: 200 one-prompt jobs 6.35 s -> 3.82 s with PASSIVE).
# - Not spinning at all (OMP_WAIT_POLICY=PASSIVE, used before) wakes the threads with a futex at every one of the
#   hundreds of parallel regions of a forward pass: on a 2-core Xeon (AVX-512) that made GPT-2 124M generation through
#   the continuous engine 1.22-1.26x slower (benchmarks.generation mixed, 64 prompts: 261 vs 318-329 tokens/s) and
#   a tiny model's one-prompt forward 3x slower (1.84 vs 0.66 ms), with no gain under load (small_jobs (b) 1.04 vs
#   1.01-1.08 s). (On an AVX2 EPYC, PASSIVE had cost nothing measurable.)
# GOMP_SPINCOUNT is libgomp's (Linux torch wheels); KMP_BLOCKTIME (ms) is the same knob for Intel's and LLVM's OpenMP.
if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"} & set(os.environ):
    os.environ.update(GOMP_SPINCOUNT="10000", KMP_BLOCKTIME="1")  # libgomp: ~100,000 spins a millisecond

from celery import Celery, Task, signals
from celery.worker.request import Request

from shared.broker import configure, redis_url
from shared.kinds import KINDS
from shared.settings import get_settings

logger = logging.getLogger(__name__)

TASK_MODULES = [*(k.module for k in KINDS.values()), "worker.tasks.webhooks"]  # one per job kind (shared/kinds.py)


class JobRequest(Request):
    """Celery's request, plus: when the pool process running a job is lost, the job's lease ends now.

    Runs in the main process. Celery requeues the message itself (``task_reject_on_worker_lost``); the redelivered
    copy finds the job still ``running`` and is dropped by the claim, so the rescuer is what runs the job again.
    """

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        from billiard.einfo import ExceptionWithTraceback
        from billiard.exceptions import WorkerLostError

        exc = exc_info.exception
        exc = exc.exc if isinstance(exc, ExceptionWithTraceback) else exc
        if isinstance(exc, WorkerLostError) and self.args:
            try:
                from worker.maintenance import worker_process_lost

                worker_process_lost(str(self.args[0]), self.hostname, str(exc))
            except Exception as exc:  # noqa: BLE001 - the lease then simply runs out and the rescuer acts later
                logger.warning("could not end the lease of %s after its process was lost: %s", self.args[0], exc)
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


class JobTask(Task):
    Request = JobRequest


app = configure(Celery("genqueue", include=TASK_MODULES, task_cls=JobTask), redis_url())

_maintenance = None


def host_device() -> str:
    """The device this worker's jobs run on (``GENQUEUE_DEVICE``, else CUDA if present), checked without initialising
    CUDA (which must not happen before the pool forks). One this machine cannot honour stops the worker at start."""
    from worker.ml.common import DeviceUnavailable, resolve_device

    try:
        return str(resolve_device(get_settings().device))
    except DeviceUnavailable as exc:
        raise SystemExit(f"GENQUEUE_DEVICE: {exc}") from exc


HOST_DEVICE = host_device()


def idle_in_transaction_timeout_ms() -> int:
    """A worker connection idle inside a transaction this long is ended by Postgres (with its locks).

    No worker code waits inside a transaction; a process that does was frozen (SIGSTOP, a hung host) and must not
    keep holding a job row's lock or the maintenance lock, which would stop the rescuer from requeuing its jobs.
    """
    return max(get_settings().lease_seconds, 10) * 1000


_pool_size = 1  # pool processes of this worker (its --concurrency), known in the main process before the pool forks


def share_cpu_threads(pool_size: int) -> None:
    """Give each of ``pool_size`` pool processes its share of torch's CPU threads, unless the operator chose
    (``OMP_NUM_THREADS``). Torch gives every process all the cores: two pool processes generating with GPT-2 124M on
    a 2-core host made 157-161 tokens/s together with 2 threads each, 226-228 with 1 each (``torchrun`` sets one
    thread a process for the same reason). One pool process keeps torch's default."""
    if pool_size > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, torch.get_num_threads() // pool_size))


@signals.worker_init.connect
def _remember_pool_size(sender=None, **_: object) -> None:
    global _pool_size
    concurrency = getattr(sender, "concurrency", None)
    _pool_size = concurrency if isinstance(concurrency, int) and concurrency > 0 else 1


@signals.worker_init.connect
def _configure_connections(**_: object) -> None:
    """Every database connection this worker opens (main and pool processes) gets the idle-transaction limit."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    timeout = idle_in_transaction_timeout_ms()

    @event.listens_for(Engine, "connect")
    def _set_timeout(dbapi_connection, _record) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            dbapi_connection.execute(f"SET idle_in_transaction_session_timeout = {int(timeout)}")
        finally:
            dbapi_connection.autocommit = autocommit


@signals.worker_process_init.connect
def _after_fork(**_: object) -> None:
    """Each pool child opens its own database connections, takes its share of the CPU threads, and may end itself when
    its job hangs."""
    from shared.db import reset_engines
    from worker import runtime

    reset_engines()
    share_cpu_threads(_pool_size)
    runtime.process.exit_on_hung = True


@signals.worker_ready.connect
def _start_maintenance(sender=None, **_: object) -> None:
    global _maintenance
    from worker.maintenance import Maintenance

    queues = ",".join(get_settings().worker_queues)
    _maintenance = Maintenance(sender.hostname if sender else "worker", queues, HOST_DEVICE, os.getpid())
    _maintenance.start()


@signals.worker_shutting_down.connect
def _on_shutdown(how: str = "Warm", **_: object) -> None:
    """Stop the maintenance thread; on a warm shutdown, ask the running jobs to checkpoint and hand back.

    Runs inside the main process's signal handler: only flag setting and ``kill`` here.
    """
    if _maintenance is not None:
        _maintenance.stop_event.set()
    if how == "Warm":
        forward_sigterm_to_running_jobs()


def forward_sigterm_to_running_jobs() -> list[int]:
    """SIGTERM the pool processes that run a job (docker and ``genqueue up`` signal only the main process)."""
    from celery.worker import state

    pids = sorted({r.worker_pid for r in list(state.active_requests) if r.worker_pid})
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return pids
