"""gunicorn server hooks of the ingest (``--config python:privpoll.gunicorn_hooks``).

They keep ``/metrics`` honest across worker processes (privpoll.service.metrics): a fresh
``PROMETHEUS_MULTIPROC_DIR`` at each server start, so no value of an earlier run is summed in,
and a dead worker's files marked dead, so its gauges go but its counts stay.

prometheus_client decides at import whether it runs in multiprocess mode: it is imported here
only inside the hooks, after the folder is set, never when gunicorn loads this file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
_created: list[Path] = []


def on_starting(server: Any) -> None:
    """Empty the folder the environment names, or make one; before any worker forks."""
    given = os.environ.get(MULTIPROC_DIR)
    if given:
        folder = Path(given)
        if folder.exists():
            for item in folder.iterdir():
                if item.is_dir():
                    shutil.rmtree(item)
                else:
                    item.unlink()
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix="privpoll-metrics-"))
        _created.append(folder)
        os.environ[MULTIPROC_DIR] = str(folder)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    for folder in _created:
        shutil.rmtree(folder, ignore_errors=True)
