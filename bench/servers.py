"""The servers under test: the comparison apps and privpoll, under one gunicorn configuration.

Both kinds get their command line from ``privpoll.local.runner.gunicorn_argv`` with the same
workers, threads, timeouts and access log (to a file), so only the app differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import cpu
from privpoll.bus import naming, topology
from privpoll.db import storage
from privpoll.local.embedded import NatsServer, PostgresServer, free_port
from privpoll.local.runner import gunicorn_argv
from privpoll.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "bench-admin"
# The gunicorn mix of every server; privpoll's own default (privpoll.settings) unless
# `python -m bench.run --worker-class C --workers N --threads N` asks for another.
WORKER_CLASS: str = Settings.model_fields["ingest_worker_class"].default
WORKERS: int = Settings.model_fields["ingest_workers"].default
THREADS: int = Settings.model_fields["ingest_threads"].default
# The mixing of every privpoll poll of the bench: batches of at least 10 envelopes, written
# at most 1 s after they could be (the default maxWait of 30 s would hold the last votes of
# a run back for long after it).
MIXING = {"minBatch": 10, "maxWait": "1s"}


def use_mix(worker_class: str, workers: int, threads: int) -> None:
    """Run every server of this benchmark with ``workers`` of ``worker_class`` (and
    ``threads`` each, for gthread)."""
    global WORKER_CLASS, WORKERS, THREADS
    WORKER_CLASS, WORKERS, THREADS = worker_class, workers, threads


def web_settings(port: int) -> Settings:
    """The gunicorn part of the settings, the same for every server of the benchmark."""
    return Settings.model_validate(
        {
            "http_addr": f"127.0.0.1:{port}",
            "ingest_worker_class": WORKER_CLASS,
            "ingest_workers": WORKERS,
            "ingest_threads": THREADS,
        }
    )


def shown_argv(app: str) -> list[str]:
    """The gunicorn command line as the docs show it (no path of this machine, no port)."""
    argv = gunicorn_argv(app)
    argv[0] = "python"
    settings = web_settings(0).to_env()
    shown = {k: v.replace("127.0.0.1:0", "127.0.0.1:PORT") for k, v in settings.items()}
    return [f"{k}={v}" for k, v in shown.items() if k != "PRIVPOLL_DATA_DIR"] + argv


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process, in MB."""
    found = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return round(int(found.group(1)) / 1024, 1) if found else 0.0


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
        return True
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def app(
    target: str, env: dict[str, str], log: Path, pg: PostgresServer
) -> Iterator[tuple[str, cpu.Groups]]:
    """A comparison app (``bench.apps:...``) under the ingest's gunicorn; yields its URL and
    its process groups (for bench.cpu)."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            gunicorn_argv(target),
            env={**env, **web_settings(port).to_env()}, stdout=out, stderr=subprocess.STDOUT,
            cwd=ROOT,
        )  # fmt: skip
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/"), f"{target} answering")

        def groups() -> dict[str, list[int]]:
            return {"web server": cpu.tree(process.pid), "PostgreSQL": _pids(pg)}

        yield f"http://127.0.0.1:{port}", groups
    finally:
        process.terminate()
        process.wait(30)


def _pids(server: NatsServer | PostgresServer) -> list[int]:
    return cpu.tree(server.process.pid) if server.process is not None else []


class Privpoll:
    """``privpoll up`` against the bench's NATS and PostgreSQL."""

    def __init__(self, work: Path, nats: NatsServer, pg: PostgresServer) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.nats_url = nats.url
        self.dsn = pg.dsn
        self.servers = (nats, pg)
        self.data = work / "privpoll"
        settings = web_settings(self.port).model_copy(
            update={
                "data_dir": self.data,
                "nats_url": nats.url,
                "database_url": pg.dsn,
                "admin_token": ADMIN,
                "log_level": "WARNING",
            }
        )
        self.env = {**os.environ, **settings.to_env()}
        self.log = (work / "privpoll.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "privpoll", "up"], env=self.env, stdout=self.log, stderr=self.log
        )
        self.http = httpx.Client(base_url=self.url, timeout=120)
        self.admin = {"Authorization": f"Bearer {ADMIN}"}
        self.extra_sinks: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopped_sinks_peak: dict[str, float] = {}
        # How long privpoll up took to stop once asked (None: it did not, it was killed).
        self.stop_seconds: float | None = None
        try:
            wait_for(lambda: answers(f"{self.url}/readyz"), "privpoll up answering", 90)
        except RuntimeError:
            self.stop()
            raise

    def poll(self, name: str, voters: int, **more: Any) -> dict[str, str]:
        """A new open poll with ``voters`` voters (and ``more`` of its spec); their tokens,
        from the invitations."""
        spec = {
            "title": name,
            "choices": ["pizza", "sushi", "tacos"],
            "voters": {"ids": [f"{name}-{i:07d}" for i in range(voters)]},
            "mixing": MIXING,
            **more,
        }
        answer = self.http.post(
            "/api/v1/polls", json={"name": name, "spec": spec}, headers=self.admin
        )
        answer.raise_for_status()
        invitations = self.http.get(f"/api/v1/polls/{name}/invitations", headers=self.admin)
        invitations.raise_for_status()
        return {item["voter"]: item["token"] for item in invitations.json()}

    def close(self, names: Sequence[str]) -> None:
        def close_one(name: str) -> None:
            self.http.post(f"/api/v1/polls/{name}/close", headers=self.admin).raise_for_status()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(close_one, names))

    def wait_drained(self, names: Sequence[str], timeout: float = 600) -> float:
        """Wait until both sinks committed and acked every envelope of the (closed) polls;
        returns the monotonic time it was seen, checked every 50 ms."""

        async def watch() -> float:
            nc = await naming.connect(self.nats_url, name="privpoll-bench")
            try:
                js = nc.jetstream()
                waiting = set(names)
                deadline = time.monotonic() + timeout
                while True:
                    for name in sorted(waiting):
                        if await topology.drained(js, name):
                            waiting.discard(name)
                    if not waiting:
                        return time.monotonic()
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the sinks did not drain {sorted(waiting)[:5]}")
                    await asyncio.sleep(0.05)
            finally:
                await nc.close()

        return asyncio.run(watch())

    def wait_sinks_ready(
        self, names: Sequence[str], per_role: int = 1, timeout: float = 60
    ) -> bool:
        """Wait until ``per_role`` sink processes of each role pull from every poll's stream
        (each has a pull request waiting), so that no sink starts up inside a timed run;
        False if they did not within ``timeout``."""

        async def watch() -> bool:
            nc = await naming.connect(self.nats_url, name="privpoll-bench")
            try:
                js = nc.jetstream()
                waiting = {(name, role) for name in names for role in naming.ROLES}
                deadline = time.monotonic() + timeout
                while waiting and time.monotonic() < deadline:
                    for name, role in sorted(waiting):
                        with contextlib.suppress(Exception):
                            info = await js.consumer_info(
                                naming.stream(name), naming.consumer(role)
                            )
                            if (info.num_waiting or 0) >= per_role:
                                waiting.discard((name, role))
                    await asyncio.sleep(0.1)
                return not waiting
            finally:
                await nc.close()

        return asyncio.run(watch())

    def stored(self, names: Sequence[str]) -> int:
        """Actor rows (real votes) stored for the polls."""
        with storage.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM actors a JOIN polls p ON p.uid = a.poll "
                "WHERE p.name = ANY(%s)",
                (list(names),),
            ).fetchone()
        return int(row[0]) if row else 0

    def wait_settled(self, names: Sequence[str], timeout: float = 300) -> bool:
        """Wait until the re-mixer rewrote and vacuumed the polls, so that its work does not
        run into the next measurement; False if it did not finish in time."""

        def settled() -> bool:
            with storage.connect(self.dsn) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM polls WHERE remixed AND purged AND name = ANY(%s)",
                    (list(names),),
                ).fetchone()
            return row is not None and int(row[0]) == len(set(names))

        try:
            wait_for(settled, "the re-mix", timeout)
        except RuntimeError:
            return False
        return True

    def start_sink(self, role: naming.Role, poll: str) -> None:
        """One more sink process for ``poll`` (which may not exist yet), in the environment
        of privpoll up's own."""
        log = (self.data / "logs" / f"extra-sink-{role}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "privpoll", "sink", role, "--poll", poll],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.extra_sinks.append((f"extra sink-{role}", process))

    def stop_extra_sinks(self) -> None:
        for name, process in self.extra_sinks:
            with contextlib.suppress(OSError):
                self.stopped_sinks_peak[name] = peak_rss_mb(process.pid)
            process.send_signal(signal.SIGINT)
        for _, process in self.extra_sinks:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.extra_sinks = []

    def groups(self) -> dict[str, list[int]]:
        """The processes of privpoll by part, for bench.cpu."""
        run = self.data / "run"
        ingest = cpu.tree(int((run / "ingest.pid").read_text()))
        sinks = [int((run / f"sink-{role}.pid").read_text()) for role in naming.ROLES]
        sinks += [process.pid for _, process in self.extra_sinks]
        remixer = [int((run / "remixer.pid").read_text())]
        nats, pg = self.servers
        return {
            "ingest": ingest,
            "sinks": sinks,
            "re-mixer": remixer,
            "nats-server": _pids(nats),
            "PostgreSQL": _pids(pg),
        }

    def memory(self) -> dict[str, Any]:
        """Peak RSS (MB) of every ingest worker and of every sink process, the bench's extra
        ones included."""
        run = self.data / "run"
        master = psutil.Process(int((run / "ingest.pid").read_text()))
        sinks = {
            f"sink-{role}": peak_rss_mb(int((run / f"sink-{role}.pid").read_text()))
            for role in naming.ROLES
        }
        sinks.update(self.stopped_sinks_peak)
        for name, process in self.extra_sinks:
            sinks[name] = peak_rss_mb(process.pid)
        return {
            "ingest_workers_peak": [peak_rss_mb(w.pid) for w in master.children()],
            "sinks_peak": sinks,
        }

    def stop(self) -> None:
        self.stop_extra_sinks()
        self.http.close()
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            children = []
        self.process.send_signal(signal.SIGINT)
        asked = time.monotonic()
        try:
            self.process.wait(60)
            self.stop_seconds = round(time.monotonic() - asked, 1)
        except subprocess.TimeoutExpired:
            # privpoll up did not stop its children: they run in sessions of their own.
            self.process.kill()
            self.process.wait()
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
        self.log.close()
