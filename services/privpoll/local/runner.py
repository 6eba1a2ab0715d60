"""``privpoll up``: the whole system on one machine, under one data folder.

Starts (unless pointed at existing ones) a nats-server with JetStream and a PostgreSQL server,
applies the schema, re-provisions known polls, then supervises the ingest (gunicorn), the
two sinks and the re-mixer as child processes, restarting any that dies, until Ctrl-C stops
everything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from privpoll.bus import naming
from privpoll.db import migrations, storage
from privpoll.local import secrets
from privpoll.service import lifecycle
from privpoll.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    pid_path: Path
    # Added to the environment every child gets.
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env={**env, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid_path.write_text(str(self.process.pid))
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10) -> None:
        self.ask_to_stop()
        self.wait_stopped(time.monotonic() + timeout)

    def ask_to_stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait_stopped(self, deadline: float) -> None:
        """Wait until ``deadline`` (monotonic) for the child to exit, then kill it."""
        if self.process is not None:
            try:
                self.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
        self.pid_path.unlink(missing_ok=True)


CONFIG = "python:privpoll.web.gunicorn_conf"
# How long the children get to stop, all together, before they are killed.
CHILD_STOP_TIMEOUT = 10.0


def gunicorn_argv(app: str | None = None) -> list[str]:
    """The ingest's gunicorn command line (privpoll.web.gunicorn_conf), serving ``app`` if
    given (the benchmark serves its comparison apps so, that only the app differs). Its
    settings come from the environment: run it with ``settings.to_env()``."""
    return [sys.executable, "-m", "gunicorn", "--config", CONFIG, *([app] if app else [])]


def children(settings: Settings) -> list[Child]:
    logs = settings.data_dir / "logs"
    run = settings.data_dir / "run"
    logs.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    ingest = gunicorn_argv()
    # The ingest's workers sum their metrics in files there (emptied at each start).
    metrics = {"PROMETHEUS_MULTIPROC_DIR": str(run / "metrics")}
    found = [Child("ingest", ingest, logs / "ingest.log", run / "ingest.pid", metrics)]
    for offset, role in enumerate(naming.ROLES):
        argv = [python, "-m", "privpoll", "sink", role]
        # One sink_metrics_addr for two processes: the actors sink takes its port, the ballots
        # sink the next one.
        own = {}
        if settings.sink_metrics_addr:
            host, _, port = settings.sink_metrics_addr.rpartition(":")
            own["PRIVPOLL_SINK_METRICS_ADDR"] = f"{host}:{int(port) + offset}"
        found.append(
            Child(f"sink-{role}", argv, logs / f"sink-{role}.log", run / f"sink-{role}.pid", own)
        )
    # Rewrites each poll's rows once it closed and the sinks drained it (privpoll.workers.remixer).
    remixer = [python, "-m", "privpoll", "remixer"]
    found.append(Child("remixer", remixer, logs / "remixer.log", run / "remixer.pid"))
    return found


async def _reprovision(settings: Settings) -> None:
    nc = await naming.connect(settings.nats_url, name="privpoll-up")
    try:
        js = nc.jetstream()
        with storage.connect(settings.database_url) as conn:
            for poll in storage.list_polls(conn):
                await lifecycle.reprovision(js, conn, poll, replicas=settings.stream_replicas)
    finally:
        await nc.close()


def prepare(settings: Settings) -> None:
    """Schema and queues for every known poll; safe to run at every start."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with storage.connect(settings.database_url) as conn:
                migrations.migrate(conn)
            break
        # PostgreSQL still starting raises several kinds; after the deadline, the last one.
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    asyncio.run(_reprovision(settings))


class Stop(Exception):
    pass


def up(settings: Settings) -> None:
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token_given = bool(settings.admin_token)
    settings, store_key = secrets.load(settings)

    from privpoll.local.embedded import NatsServer, PostgresServer

    servers: list[NatsServer | PostgresServer] = []
    procs: list[Child] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise Stop

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not settings.nats_url:
            nats = NatsServer(settings.data_dir / "nats", store_key=store_key)
            servers.append(nats)
            nats.start()
            settings = settings.model_copy(update={"nats_url": nats.url})
        if not settings.database_url:
            pg = PostgresServer(settings.data_dir / "postgres")
            servers.append(pg)
            pg.start()
            settings = settings.model_copy(update={"database_url": pg.dsn})
        prepare(settings)
        env = {**os.environ, **settings.to_env()}
        procs = children(settings)
        for child in procs:
            child.start(env)
        _banner(settings, token_given)
        while True:
            for child in procs:
                if not child.alive():
                    code = child.process.returncode if child.process else None
                    delay = min(2 ** min(child.restarts, 5) * 0.25, 5.0)
                    if time.monotonic() - child.started_at > 30:
                        child.restarts = 0
                    print(f"privpoll: {child.name} exited ({code}); restarting", flush=True)
                    child.stop()
                    time.sleep(delay)
                    child.restarts += 1
                    child.start(env)
            time.sleep(0.5)
    except Stop:
        print("\nprivpoll: stopping", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # All children at once: each drains its own work (a sink with a thousand polls takes
        # a while), and one after the other the waits would add up.
        for child in procs:
            child.ask_to_stop()
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT
        for child in reversed(procs):
            child.wait_stopped(deadline)
        for server in reversed(servers):
            server.stop()
        print("privpoll: stopped", flush=True)


def _banner(settings: Settings, token_given: bool) -> None:
    # A token the user chose is theirs already: never echo a secret into a log for nothing.
    token = "the one in PRIVPOLL_ADMIN_TOKEN" if token_given else settings.admin_token
    print(
        "\n".join(
            [
                "",
                f"privpoll is up at {settings.base_url}",
                f"  admin token: {token}",
                f"  data folder: {settings.data_dir}",
                f"  secrets:     {secrets.folder(settings)} (back it up apart from the data)",
                f"  logs:        {settings.data_dir / 'logs'}",
                "  stop with Ctrl-C",
                "",
            ]
        ),
        flush=True,
    )
