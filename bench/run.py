"""``make bench``: privpoll against its ceiling and against the naive design, in ONE run.

Everything runs on this machine: an embedded nats-server and PostgreSQL, three servers under
the same gunicorn configuration (ceiling, naive, privpoll), and wrk as the load generator (C,
epoll, a Lua script that gives every request its own voter): a Python client would compete
for the same cores and measure itself. Results go to bench/results/*.json and
docs/benchmarks.md; the goals are ratios against baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from privpoll import __version__, storage
from privpoll.embedded import NatsServer, PostgresServer, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ADMIN = "bench-admin"
WORKERS, THREADS = 2, 16
GUNICORN = ["--worker-class", "gthread", "--workers", str(WORKERS), "--threads", str(THREADS)]


def wrk(url: str, bodies: Path, seconds: int, connections: int, rate: float = 0) -> dict[str, Any]:
    env = {
        **os.environ,
        "BODIES": str(bodies),
        "VOTE_PATH": "/" + url.split("/", 3)[3],
        "THREADS": "2",
        "CONNECTIONS": str(connections),
        "RATE": str(rate),
    }
    base = "/".join(url.split("/", 3)[:3])
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
         "-s", str(HERE / "load.lua"), base],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"^WRK_JSON (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    summary: dict[str, Any] = json.loads(found.group(1))
    accepted = summary["statuses"].get("202", 0)
    summary["accepted_per_s"] = round(accepted / summary["seconds"], 1)
    summary["requests_per_s"] = round(summary["requests"] / summary["seconds"], 1)
    return summary


@contextlib.contextmanager
def gunicorn(app: str, env: dict[str, str], log: Path) -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *GUNICORN, "--bind", f"127.0.0.1:{port}", app],
            env=env, stdout=out, stderr=out, cwd=ROOT,
        )  # fmt: skip
    try:
        _wait(lambda: _answers(f"http://127.0.0.1:{port}/"), app)
        yield f"http://127.0.0.1:{port}", psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(30)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
        return True
    except httpx.HTTPError:
        return False


def _wait(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up")
        time.sleep(0.2)


def write_bodies(path: Path, voters: list[str], tokens: dict[str, str] | None = None) -> Path:
    choices = ["pizza", "sushi", "tacos"]
    with path.open("w") as out:
        for i, voter in enumerate(voters):
            token = tokens[voter] if tokens else "t"
            out.write(json.dumps({"voter": voter, "token": token, "choice": choices[i % 3]}))
            out.write("\n")
    return path


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process, in MB."""
    found = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return round(int(found.group(1)) / 1024, 1) if found else 0.0


class Privpoll:
    """`privpoll up` against the bench's NATS and PostgreSQL."""

    def __init__(self, work: Path, nats: NatsServer, pg: PostgresServer) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PRIVPOLL_DATA_DIR": str(work / "privpoll"),
            "PRIVPOLL_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "PRIVPOLL_NATS_URL": nats.url,
            "PRIVPOLL_DATABASE_URL": pg.dsn,
            "PRIVPOLL_ADMIN_TOKEN": ADMIN,
            "PRIVPOLL_INGEST_WORKERS": str(WORKERS),
            "PRIVPOLL_INGEST_THREADS": str(THREADS),
            "PRIVPOLL_LOG_LEVEL": "WARNING",
            # wrk is one address; the per-address limit would measure itself.
            "PRIVPOLL_VOTE_RATE_LIMIT": "off",
        }
        self.log = (work / "privpoll.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "privpoll", "up"], env=self.env, stdout=self.log, stderr=self.log
        )
        self.http = httpx.Client(base_url=self.url, timeout=60)
        self.admin = {"Authorization": f"Bearer {ADMIN}"}
        _wait(lambda: _answers(f"{self.url}/readyz"), "privpoll up")
        self.dsn = pg.dsn

    def poll(self, name: str, voters: int) -> dict[str, str]:
        ids = [f"v{i:06d}" for i in range(voters)]
        spec = {
            "title": name,
            "choices": ["pizza", "sushi", "tacos"],
            "voters": {"ids": ids},
            "mixing": {"minBatch": 10, "maxWait": "1s"},
        }
        answer = self.http.post(
            "/api/v1/polls", json={"name": name, "spec": spec}, headers=self.admin
        )
        answer.raise_for_status()
        invitations = self.http.get(f"/api/v1/polls/{name}/invitations", headers=self.admin)
        return {item["voter"]: item["token"] for item in invitations.json()}

    def stored(self, name: str) -> int:
        with storage.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM actors a JOIN polls p ON p.uid = a.poll WHERE p.name = %s",
                (name,),
            ).fetchone()
        return int(row[0]) if row else 0

    def stop(self) -> None:
        self.process.send_signal(2)
        self.process.wait(60)


def run(seconds: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="privpoll-bench-"))
    nats, pg = NatsServer(work / "nats"), PostgresServer(work / "postgres")
    nats.start()
    pg.start()
    with storage.connect(pg.dsn) as conn:
        storage.migrate(conn)
    env = {**os.environ, "PRIVPOLL_DATABASE_URL": pg.dsn}
    many = [f"v{i:06d}" for i in range(100_000)]
    plain = write_bodies(work / "plain.jsonl", many)
    out: dict[str, Any] = {}
    try:
        with gunicorn("bench.apps:ceiling()", env, work / "ceiling.log") as (url, _):
            wrk(f"{url}/api/v1/polls/x/votes", plain, 2, 64)  # warm-up
            out["ceiling"] = wrk(f"{url}/api/v1/polls/x/votes", plain, seconds, 64)
        with gunicorn("bench.apps:naive()", env, work / "naive.log") as (url, _):
            wrk(f"{url}/api/v1/polls/x/votes", plain, 2, 64)
            out["naive"] = wrk(f"{url}/api/v1/polls/x/votes", plain, seconds, 64)

        system = Privpoll(work, nats, pg)
        try:
            tokens = system.poll("warmup", 20_000)
            bodies = write_bodies(work / "warmup.jsonl", sorted(tokens), tokens)
            wrk(f"{system.url}/api/v1/polls/warmup/votes", bodies, 2, 64)

            tokens = system.poll("saturation", 100_000)
            bodies = write_bodies(work / "saturation.jsonl", sorted(tokens), tokens)
            started = time.monotonic()
            saturation = wrk(f"{system.url}/api/v1/polls/saturation/votes", bodies, seconds, 64)
            last_accepted = time.monotonic()
            accepted = saturation["statuses"].get("202", 0)
            system.http.post("/api/v1/polls/saturation/close", headers=system.admin)
            _wait(lambda: system.stored("saturation") >= accepted, "the sinks", timeout=600)
            stored_at = time.monotonic()
            saturation["drain_seconds"] = round(stored_at - last_accepted, 2)
            saturation["persisted_per_s"] = round(accepted / (stored_at - started), 1)
            out["privpoll"] = saturation

            rate = saturation["accepted_per_s"]
            for share in (0.5, 0.8):
                name = f"load{int(share * 100)}"
                tokens = system.poll(name, 100_000)
                bodies = write_bodies(work / f"{name}.jsonl", sorted(tokens), tokens)
                out[f"privpoll_at_{int(share * 100)}pct"] = wrk(
                    f"{system.url}/api/v1/polls/{name}/votes", bodies, seconds, 32, rate * share
                )
            run_dir = work / "privpoll" / "run"
            master = psutil.Process(int((run_dir / "ingest.pid").read_text()))
            out["memory_mb"] = {
                "ingest_workers_peak": [peak_rss_mb(w.pid) for w in master.children()],
                "sinks_peak": [
                    peak_rss_mb(int((run_dir / f"sink-{role}.pid").read_text()))
                    for role in ("actors", "ballots")
                ],
            }
        finally:
            system.stop()
    finally:
        nats.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def targets(found: dict[str, Any]) -> list[tuple[str, float, str, bool]]:
    """(goal, measured, wanted, met) for the goals of issue 8 that this run measures."""
    ceiling = found["ceiling"]["requests_per_s"]
    naive = found["naive"]["accepted_per_s"]
    ours = found["privpoll"]["accepted_per_s"]
    p99 = found["privpoll_at_80pct"]["p99_ms"]
    workers = max(found["memory_mb"]["ingest_workers_peak"] or [0])
    sinks = max(found["memory_mb"]["sinks_peak"] or [0])
    return [
        ("privpoll / ceiling", round(ours / ceiling, 2), ">= 0.7", ours >= 0.7 * ceiling),
        ("privpoll / naive", round(ours / naive, 2), ">= 2", ours >= 2 * naive),
        ("p99 at 80% load (ms)", p99, "<= 25", p99 <= 25),
        ("ingest worker peak RSS (MB)", workers, "<= 120", workers <= 120),
        ("sink peak RSS (MB)", sinks, "<= 100", sinks <= 100),
    ]


def report(result: dict[str, Any]) -> str:
    found = result["results"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (bench/run.py) from "
        f"`bench/results/{result['file']}`; do not edit by hand.",
        "",
        f"- machine: {result['machine']}",
        f"- versions: {result['versions']}",
        f"- gunicorn: {' '.join(GUNICORN)} (the same for all three servers)",
        "- load: wrk, 2 threads, 64 connections (32 for the paced runs), "
        f"{result['seconds']} s per run, every request a different voter",
        "",
        "| what | requests/s | accepted (202)/s | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in ("ceiling", "naive", "privpoll", "privpoll_at_50pct", "privpoll_at_80pct"):
        row = found[key]
        lines.append(
            f"| {key} | {row['requests_per_s']} | {row['accepted_per_s']} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} |"
        )
    saturation = found["privpoll"]
    lines += [
        "",
        f"privpoll persisted {saturation['persisted_per_s']} votes/s end to end; the last row "
        f"was stored {saturation['drain_seconds']} s after the last 202.",
        f"Peak RSS (MB): ingest workers {found['memory_mb']['ingest_workers_peak']}, "
        f"sinks {found['memory_mb']['sinks_peak']}.",
        "",
        "| goal | measured | wanted | met |",
        "| --- | --- | --- | --- |",
    ]
    for goal, measured, wanted, met in targets(found):
        lines.append(f"| {goal} | {measured} | {wanted} | {'yes' if met else 'NO'} |")
    lines += [
        "",
        "Not measured yet: sink rows/s against raw COPY, and scale over 1/10/100 polls and "
        "1/2 sinks per poll.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: `make bench` installs it (apt-get install wrk)")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "file": f"{stamp}.json",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{round(psutil.virtual_memory().total / 2**30)} GiB, {platform.platform()}",
        "versions": f"privpoll {__version__}, Python {platform.python_version()}",
        "seconds": args.seconds,
        "results": run(args.seconds),
    }
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / result["file"]).write_text(json.dumps(result, indent=2) + "\n")
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text(report(result))
    for goal, measured, wanted, met in targets(result["results"]):
        print(f"{goal:<30} {measured:>8} {wanted:>8}  {'met' if met else 'NOT MET'}")


if __name__ == "__main__":
    main()
