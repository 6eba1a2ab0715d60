"""``make bench``: privpoll against its ceiling, the naive design and raw COPY, in ONE run.

Everything runs on this machine: an embedded nats-server and PostgreSQL, three web servers
under the same gunicorn configuration (bench.servers), and wrk as the load generator
(bench.load). In order:

1. baselines: the ceiling (Flask parses the body, answers 202), the same without Flask (bare
   WSGI, what privpoll's vote route runs on) and the naive design (Flask inserts (voter,
   choice), one commit per request), at saturation;
2. sinks: one ballot sink process against raw COPY of the same rows (bench.sinks), before
   privpoll up starts, since its sinks would share the stream;
3. privpoll: ``privpoll up``; a warm-up, then votes/s at saturation with the votes stored end
   to end, then paced runs at 50% and 80% of that rate for latency (bench.voting);
4. scale: 1, 10, 100 and 1,000 open polls (and nats-server's memory per open poll), and 1
   and 2 sinks per role (bench.scale);
5. memory: peak RSS of the ingest workers and of every sink.

The figures go to bench/results/<time>.json; docs/benchmarks.md and docs/benchmarks.png are
written from them (bench.report), and each target is printed with measured, wanted and met.
``--only SECTION`` runs part of it (bench/results/partial-<time>.json, the docs untouched);
``--report-only FILE`` writes the docs again from a results file without running anything.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench import load, report, scale, servers, sinks, voting
from privpoll import __version__
from privpoll.db import migrations, storage
from privpoll.local.embedded import NatsServer, PostgresServer, nats_server_binary

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SECTIONS = ("baselines", "sinks", "privpoll", "scale")
# About 300,000 ballot rows: a timed drain of 2 s rather than 0.6, counted every 50 ms.
SINK_VOTES = 100_000
# Voters per run when the ceiling was not measured in this run (--only): its rate here.
CEILING_GUESS = 12_000.0
WARMUP_SECONDS = 2


def _baselines(work: Path, pg: PostgresServer, seconds: int, bodies: Path) -> dict[str, Any]:
    env = {**os.environ, "PRIVPOLL_DATABASE_URL": pg.dsn}
    found = {}
    for name in ("ceiling", "bare", "naive"):
        print(f"{name} ...", flush=True)
        with servers.app(f"bench.apps:{name}()", env, work / f"{name}.log", pg) as (url, groups):
            load.wrk(url, bodies, WARMUP_SECONDS)
            found[name] = load.wrk(url, bodies, seconds, groups=groups)
    return found


def _privpoll(system: servers.Privpoll, work: Path, seconds: int, ceiling: float) -> dict[str, Any]:
    found: dict[str, Any] = {}
    voters = voting.voters_for(ceiling, seconds)
    print("privpoll: saturation ...", flush=True)
    tokens = voting.new_polls(system, ["saturation"], voters)
    found["privpoll"] = voting.vote(system, ["saturation"], tokens, work, seconds)
    rate = found["privpoll"]["accepted_per_s"]
    for share in (50, 80):
        print(f"privpoll: paced at {share}% ...", flush=True)
        name = f"paced{share}"
        offered = rate * share / 100
        tokens = voting.new_polls(system, [name], voting.voters_for(offered, seconds))
        found[f"privpoll_at_{share}pct"] = voting.vote(
            system, [name], tokens, work, seconds, rate=offered
        )
    return found


def run(seconds: int, sink_votes: int, sections: set[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(figures, server versions)."""
    work = Path(tempfile.mkdtemp(prefix="privpoll-bench-"))
    nats, pg = NatsServer(work / "nats"), PostgresServer(work / "postgres")
    found: dict[str, Any] = {}
    try:
        nats.start()
        pg.start()
        with storage.connect(pg.dsn) as conn:
            migrations.migrate(conn)
            row = conn.execute("SHOW server_version").fetchone()
        versions = {"PostgreSQL": str(row[0]) if row else "?"}
        plain = load.write_bodies(
            work / "plain.tsv",
            (
                (f"x{i % 7}", f"v{i:07d}", "t")
                for i in range(voting.voters_for(CEILING_GUESS, seconds))
            ),
        )
        if "baselines" in sections:
            found.update(_baselines(work, pg, seconds, plain))
        ceiling = float(found.get("ceiling", {}).get("requests_per_s") or CEILING_GUESS)
        if "sinks" in sections:
            print("sinks: one ballot sink against raw COPY ...", flush=True)
            found["sinks"] = sinks.measure(nats.url, pg.dsn, sink_votes, work)
        if sections & {"privpoll", "scale"}:
            print("privpoll up ...", flush=True)
            system = servers.Privpoll(work, nats, pg)
            try:
                warmup = voting.new_polls(
                    system, ["warmup"], voting.voters_for(ceiling, WARMUP_SECONDS)
                )
                voting.vote(system, ["warmup"], warmup, work, WARMUP_SECONDS)
                if "privpoll" in sections:
                    found.update(_privpoll(system, work, seconds, ceiling))
                if "scale" in sections:
                    print("scale ...", flush=True)
                    found["scale"] = scale.measure(
                        system, work, seconds, voting.voters_for(ceiling, seconds)
                    )
                found["memory_mb"] = system.memory()
            finally:
                system.stop()
            if "scale" in found:
                found["scale"]["stop_seconds"] = system.stop_seconds
        if "sinks" in found:
            memory = found.setdefault("memory_mb", {"ingest_workers_peak": [], "sinks_peak": {}})
            memory["sinks_peak"]["sink-ballots (sink bench)"] = found["sinks"]["sink"][
                "peak_rss_mb"
            ]
    except BaseException:
        print(f"bench failed: its logs stay in {work}", flush=True)
        raise
    else:
        shutil.rmtree(work, ignore_errors=True)
    finally:
        nats.stop()
        pg.stop()
    return found, versions


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _first_line(argv: list[str]) -> str:
    with contextlib.suppress(OSError):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (done.stdout or done.stderr).splitlines()[0].strip()
    return "?"


def describe_machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores ({platform.machine()})",
        "memory": f"{round(psutil.virtual_memory().total / 2**30)} GiB",
        "system": platform.platform(),
    }


def describe_versions(servers_seen: dict[str, str]) -> dict[str, str]:
    return {
        "privpoll": __version__,
        "Python": platform.python_version(),
        "gunicorn": _version("gunicorn"),
        "gevent": _version("gevent"),
        "Flask": _version("flask"),
        "nats-py": _version("nats-py"),
        "psycopg": _version("psycopg"),
        "nats-server": _first_line([nats_server_binary(), "--version"]).removeprefix(
            "nats-server: "
        ),
        **servers_seen,
        "wrk": _first_line(["wrk", "-v"]).split(" Copyright")[0],
    }


def commands(seconds: int, argv: list[str]) -> list[str]:
    shown = " ".join(argv) or f"--seconds {seconds:g}"
    return [
        "make bench                      # installs wrk and matplotlib if missing, then:",
        f"python -m bench.run {shown}",
        "",
        "# every server, with only the app differing (privpoll.web.gunicorn_conf):",
        shlex.join(servers.shown_argv("APP")),
        "# every load run (bench.load; RATE=... for the paced runs):",
        load.command(seconds),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run (whole s)")
    parser.add_argument("--sink-votes", type=int, default=SINK_VOTES, help="votes the sink drains")
    parser.add_argument("--quick", action="store_true", help="3 s runs and 5,000 sink votes")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)"
    )
    parser.add_argument(
        "--worker-class",
        choices=["gevent", "gthread"],
        default=servers.WORKER_CLASS,
        help="gunicorn worker class of every server",
    )
    parser.add_argument(
        "--workers", type=int, default=servers.WORKERS, help="gunicorn workers of every server"
    )
    parser.add_argument(
        "--threads", type=int, default=servers.THREADS, help="gunicorn threads per gthread worker"
    )
    parser.add_argument(
        "--report-only", type=Path, metavar="JSON", help="rewrite the docs from a results file"
    )
    args = parser.parse_args()
    if args.report_only:
        result = json.loads(args.report_only.read_text())
        for path in report.write(result):
            print(f"wrote {path.relative_to(report.ROOT)}")
        report.print_targets(result["results"])
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: `make bench` installs it (apt-get install wrk)")
    servers.use_mix(args.worker_class, args.workers, args.threads)
    seconds = 3 if args.quick else args.seconds
    sink_votes = 5_000 if args.quick else args.sink_votes
    sections = set(args.only or SECTIONS)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # A partial run neither replaces the docs nor looks like a benchmark to `make soak`.
    partial = sections != set(SECTIONS)
    began, load_at_start = time.monotonic(), os.getloadavg()[0]
    found, versions = run(seconds, sink_votes, sections)
    result = {
        "file": f"partial-{stamp}.json" if partial else f"{stamp}.json",
        "machine": describe_machine(),
        "versions": describe_versions(versions),
        "load": f"{load_at_start:.2f} and {os.getloadavg()[0]:.2f}",
        "minutes": round((time.monotonic() - began) / 60, 1),
        "seconds": seconds,
        "sections": sorted(sections),
        "commands": commands(seconds, sys.argv[1:]),
        "gunicorn": servers.shown_argv("APP"),
        "results": found,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / result["file"]
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(report.ROOT)}")
    if not partial:
        for path in report.write(result):
            print(f"wrote {path.relative_to(report.ROOT)}")
    report.print_targets(found)


if __name__ == "__main__":
    main()
