"""Fault-injection hooks for the test suite and the soak, inert unless ``GENQUEUE_TEST_HOOKS=1`` is set on a worker.

A job asks for a hook with the param ``_test_hook``. The API cannot store that param (every kind's params schema
forbids unknown fields, so ``POST /jobs`` answers 422), so only a test that inserts the job row directly can use one,
and only a worker started with the variable acts on it; the API and its OpenAPI document are unchanged.

- ``crash``: the pool process kills itself with SIGKILL before the handler runs (a "poison" job);
- ``hang``: the handler blocks without ever reporting (only the heartbeat's timeout watchdog can end it).
"""

from __future__ import annotations

import os
import signal
import time

from worker.context import JobContext

ENV = "GENQUEUE_TEST_HOOKS"
PARAM = "_test_hook"


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def wrap(handler):
    """``handler``, preceded by the job's hook when hooks are enabled (else ``handler`` itself)."""
    if not enabled():
        return handler

    def hooked(ctx: JobContext):
        hook = ctx.params.pop(PARAM, None)
        if hook == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif hook == "hang":
            while True:
                time.sleep(3600)
        return handler(ctx)

    return hooked
