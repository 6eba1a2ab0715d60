"""The ingest's gunicorn configuration, the one for ``privpoll up``, the image and the chart:
``gunicorn --config python:privpoll.web.gunicorn_conf``. What varies comes from the same
``PRIVPOLL_*`` environment as every other setting (``privpoll.settings``)."""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from privpoll.settings import Settings

_settings = Settings.from_env()

wsgi_app = "privpoll.web.app:create_app()"
bind = [_settings.http_addr]
# gevent: each worker serves its requests in greenlets on one thread, its NATS loop among them.
worker_class = _settings.ingest_worker_class
workers = _settings.ingest_workers
threads = _settings.ingest_threads
# A stop (SIGTERM: a rollout, a scale-down) lets requests in flight finish (a vote takes
# milliseconds) but does not wait out idle keep-alive connections: within Kubernetes' and the
# tests' 5 s.
graceful_timeout = 3
accesslog = "-"
# The path only (invitation links carry their token in the query string), written without
# gunicorn's per-request table of every field.
logger_class = "privpoll.web.access_log.AccessLog"
# gunicorn 25.1+ opens a control socket at one path in the home folder by default, which each
# new server takes from the one before (privpoll up twice, the benchmark's servers, the
# tests'), and which a read-only root filesystem turns into a warning at every start; nothing
# of privpoll uses it.
control_socket_disable = True
# The gevent worker reads a request's headers within its keep-alive time: a slow client's
# headers get no longer (privpoll.web.slow_clients bounds the body).
keepalive = _settings.header_timeout

# /metrics sums every worker's values (prometheus_client's multiprocess mode,
# privpoll.service.metrics): a fresh PROMETHEUS_MULTIPROC_DIR at each server start, so no value
# of an earlier run is summed in, and a dead worker's files marked dead, so its gauges go but
# its counts stay. prometheus_client decides at import whether it runs in multiprocess mode:
# it is imported only inside the hooks, after the folder is set.


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
