"""gunicorn settings used by ``genqueue web`` / ``genqueue up`` (``-c python:web.gunicorn_conf``): prometheus-client's
multiprocess mode, so ``genqueue_http_requests_total`` on ``/metrics`` counts the requests of every gunicorn worker.

``PROMETHEUS_MULTIPROC_DIR`` (kept if the operator set it, else ``$GENQUEUE_DATA_DIR/prometheus``) is emptied when
the master starts and set before any worker imports the app; a worker that exits is marked dead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def on_starting(server) -> None:
    from shared.settings import get_settings

    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or get_settings().data_dir / "prometheus")
    shutil.rmtree(path, ignore_errors=True)  # counts of an earlier run's processes would be summed in
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
