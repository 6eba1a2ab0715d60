"""``make bench-big``: one poll of a million voters, end to end on this machine.

An embedded nats-server and PostgreSQL and ``privpoll up`` as in ``make bench``; then, timed:

1. creation: ``POST /api/v1/polls`` as multipart/form-data, the voters as a text file (what
   ``privpoll poll create --voters`` sends);
2. invitations: the API's JSON array and the admin pages' CSV, each read to the end as it is
   streamed, counted in rows/s, the ingest workers' peak memory after;
3. the votes: the voters a wrk run needs vote at one poll's rate (bench.voting). Every other
   voter's vote is written beforehand as the sinks write them, in shuffled batches of 10,000
   (an actor row and 1 + 2 ballot rows each), so that the poll closes with a million voter
   rows and their ballots;
4. the re-mix: once ``privpoll up``'s re-mixer has rewritten the poll at its close, the
   same re-mix again on demand (``db.remix.remix``, every row rewritten and vacuumed) in a
   process of its own, timed and with its peak memory;
5. results: ``GET /api/v1/polls/NAME/results`` of the million-row poll, the median of five;
6. peak memory (VmHWM) of every process: ingest workers, sinks, re-mixer, nats-server,
   PostgreSQL's processes, and the bench's own writer.

The figures go to bench/results/big-<time>.json and into docs/benchmarks.md (bench.report
adds the newest big-*.json), each target printed as measured / wanted / met.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import report, servers, voting
from bench.run import describe_machine, describe_versions
from privpoll.core import randomness
from privpoll.db import migrations, storage
from privpoll.local.embedded import NatsServer, PostgresServer

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "million"
VOTERS = 1_000_000
BATCH = 10_000
CHOICES = ("pizza", "sushi", "tacos")
# The invitations kept for the wrk run (the rest are only counted).
KEPT_TOKENS = 60_000
_INVITATION = re.compile(rb'\{"voter": "([^"]+)", "token": "([^"]+)"')


def _voter(i: int) -> str:
    return f"member-{i:07d}@example.org"


def _create(system: servers.Privpoll, work: Path, voters: int) -> float:
    path = work / "voters.txt"
    with path.open("w") as out:
        out.writelines(f"{_voter(i)}\n" for i in range(voters))
    spec = {"title": "A city's budget", "choices": list(CHOICES), "mixing": servers.MIXING}
    began = time.monotonic()
    with path.open("rb") as upload:
        answer = system.http.post(
            "/api/v1/polls",
            headers=system.admin,
            files={
                "poll": (None, json.dumps({"name": NAME, "spec": spec}), "application/json"),
                "voters": ("voters.txt", upload, "text/plain"),
            },
            timeout=600,
        )
    answer.raise_for_status()
    return time.monotonic() - began


def _invitations_json(system: servers.Privpoll) -> tuple[float, int, dict[str, str]]:
    rows = 0
    kept: dict[str, str] = {}
    tail = b""
    began = time.monotonic()
    path = f"/api/v1/polls/{NAME}/invitations"
    with system.http.stream("GET", path, headers=system.admin, timeout=600) as answer:
        answer.raise_for_status()
        for chunk in answer.iter_bytes():
            text = tail + chunk
            rows += chunk.count(b'{"voter": ')
            if len(kept) < KEPT_TOKENS:
                for voter, token in _INVITATION.findall(text):
                    kept[voter.decode()] = token.decode()
            tail = text[-300:]
    return time.monotonic() - began, rows, dict(list(kept.items())[:KEPT_TOKENS])


def _invitations_csv(system: servers.Privpoll) -> tuple[float, int]:
    browser = httpx.Client(base_url=system.url, timeout=600)
    page = browser.get("/signin").text
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "the sign-in page has its CSRF field"
    browser.post("/signin", data={"csrf": found[1], "token": servers.ADMIN})
    rows = -1  # the header
    began = time.monotonic()
    with browser.stream("GET", f"/polls/{NAME}/invitations.csv") as answer:
        answer.raise_for_status()
        for chunk in answer.iter_bytes():
            rows += chunk.count(b"\r\n")
    browser.close()
    return time.monotonic() - began, rows


def _preload(dsn: str, first: int, voters: int) -> float:
    """The votes of voters[first:], written as the sinks write theirs."""
    began = time.monotonic()
    with storage.connect(dsn) as conn:
        poll = storage.get_poll(conn, NAME)
        assert poll is not None
        for start in range(first, voters, BATCH):
            ids = range(start, min(start + BATCH, voters))
            storage.write_actors(conn, poll.uid, [(randomness.new_id(), _voter(i)) for i in ids])
            ballots = [
                (randomness.new_id(), CHOICES[randomness.system.randrange(3)])
                for _ in range(3 * len(ids))
            ]
            storage.write_ballots(conn, poll.uid, ballots)
    return time.monotonic() - began


def _wait_remixed(dsn: str, timeout: float = 1200) -> None:
    began = time.monotonic()
    with storage.connect(dsn) as conn:
        while time.monotonic() - began < timeout:
            row = conn.execute("SELECT remixed FROM polls WHERE name = %s", (NAME,)).fetchone()
            if row and row[0]:
                return
            time.sleep(0.5)
    raise RuntimeError(f"the re-mixer did not rewrite {NAME} within {timeout:.0f} s")


# The re-mix of every row of the poll, in a process of its own (its peak memory is its own):
# what `privpoll poll remix` asks of the database, timed from outside.
_REMIX = """
import json, resource, sys, time
from privpoll.db import remix, storage
with storage.connect(sys.argv[1]) as conn:
    poll = storage.get_poll(conn, sys.argv[2])
    began = time.monotonic()
    actors, ballots = remix.rewrite(conn, poll.uid)
    rewritten = time.monotonic()
    purge = remix.purge(conn)
    ended = time.monotonic()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": round(ended - began, 1),
                  "rewrite_seconds": round(rewritten - began, 1),
                  "purge_seconds": round(ended - rewritten, 1),
                  "actors": actors, "ballots": ballots, "purge": purge,
                  "peak_rss_mb": round(peak, 1)}))
"""


def _remix(dsn: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _REMIX, dsn, NAME],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def _results_seconds(system: servers.Privpoll) -> float:
    times = []
    for _ in range(5):
        began = time.monotonic()
        answer = system.http.get(f"/api/v1/polls/{NAME}/results", headers=system.admin)
        answer.raise_for_status()
        times.append(time.monotonic() - began)
    return statistics.median(times)


def _peaks(system: servers.Privpoll, remix_peak: float) -> dict[str, float]:
    found: dict[str, float] = {}
    for group, pids in system.groups().items():
        peaks = []
        for pid in pids:
            try:
                peaks.append(servers.peak_rss_mb(pid))
            except OSError:
                continue
        if peaks:
            found[group] = max(peaks)
    found.update(system.stopped_sinks_peak)
    found["re-mix (on demand)"] = remix_peak
    # The bench's own process wrote the preloaded rows.
    found["bench (writer)"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return found


def run(voters: int, seconds: int) -> tuple[dict[str, Any], dict[str, str]]:
    work = Path(tempfile.mkdtemp(prefix="privpoll-bench-big-"))
    nats, pg = NatsServer(work / "nats"), PostgresServer(work / "postgres")
    found: dict[str, Any] = {"voters": voters}
    try:
        nats.start()
        pg.start()
        with storage.connect(pg.dsn) as conn:
            migrations.migrate(conn)
            row = conn.execute("SHOW server_version").fetchone()
        versions = {"PostgreSQL": str(row[0]) if row else "?"}
        system = servers.Privpoll(work, nats, pg)
        try:
            print(f"creating a poll of {voters:,} voters ...", flush=True)
            found["create_seconds"] = round(_create(system, work, voters), 1)
            print("invitations ...", flush=True)
            took, rows, tokens = _invitations_json(system)
            found["invitations_json"] = {"rows": rows, "rows_per_s": round(rows / took)}
            took, rows = _invitations_csv(system)
            found["invitations_csv"] = {"rows": rows, "rows_per_s": round(rows / took)}
            found["ingest_workers_peak_after_invitations"] = system.memory()["ingest_workers_peak"]
            print("writing the other voters' votes as the sinks would ...", flush=True)
            found["preload_seconds"] = round(_preload(pg.dsn, len(tokens), voters), 1)
            print("voting at one poll's rate ...", flush=True)
            voted = voting.vote(system, [NAME], [tokens], work, seconds)
            found["votes"] = {
                key: voted[key]
                for key in ("accepted_per_s", "persisted_per_s", "p50_ms", "p99_ms", "lost")
            }
            print("the re-mix ...", flush=True)
            _wait_remixed(pg.dsn)
            found["remix"] = _remix(pg.dsn)
            found["remix_seconds"] = found["remix"]["seconds"]
            found["results_seconds"] = round(_results_seconds(system), 3)
            with storage.connect(pg.dsn) as conn:
                poll = storage.get_poll(conn, NAME)
                assert poll is not None
                votes, _, stored = storage.tally(conn, poll.uid)
            found["rows"] = {"actors": votes, "ballots": sum(stored.values())}
            found["peak_rss_mb"] = _peaks(system, found["remix"]["peak_rss_mb"])
        finally:
            system.stop()
    except BaseException:
        print(f"bench-big failed: its logs stay in {work}", flush=True)
        raise
    else:
        shutil.rmtree(work, ignore_errors=True)
    finally:
        nats.stop()
        pg.stop()
    return found, versions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--voters", type=int, default=VOTERS, help="voters of the poll")
    parser.add_argument("--seconds", type=int, default=10, help="length of the vote run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: `make bench` installs it (apt-get install wrk)")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    began, load_at_start = time.monotonic(), os.getloadavg()[0]
    found, versions = run(args.voters, args.seconds)
    given = [f"BIG_ARGS={' '.join(sys.argv[1:])}"] if sys.argv[1:] else []
    result: dict[str, Any] = {
        "file": f"big-{stamp}.json",
        "machine": describe_machine(),
        "versions": describe_versions(versions),
        "load": f"{load_at_start:.2f} and {os.getloadavg()[0]:.2f}",
        "minutes": round((time.monotonic() - began) / 60, 1),
        "commands": [shlex.join(["make", "bench-big", *given])],
        "results": found,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / result["file"]).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote bench/results/{result['file']}")
    latest = report.latest_full_run()
    if latest is not None:
        for path in report.write(latest):
            print(f"wrote {path.relative_to(report.ROOT)}")
    report.print_big_targets(found)


if __name__ == "__main__":
    main()
