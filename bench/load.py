"""The load generator: wrk (C, epoll) with bench/load.lua, so that no Python client competes
for the cores it measures; every request is a different voter."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench import cpu

HERE = Path(__file__).resolve().parent
CHOICES = ["pizza", "sushi", "tacos"]
THREADS = 2
CONNECTIONS = 64


def vote_path(poll: str) -> str:
    return f"/api/v1/polls/{poll}/votes"


def write_bodies(path: Path, votes: Iterable[tuple[str, str, str]]) -> Path:
    """One request a line for load.lua: ``path<TAB>body``, from (poll, voter, token)."""
    with path.open("w") as out:
        for i, (poll, voter, token) in enumerate(votes):
            body = json.dumps({"voter": voter, "token": token, "choice": CHOICES[i % 3]})
            out.write(f"{vote_path(poll)}\t{body}\n")
    return path


def round_robin(
    tokens: Sequence[dict[str, str]], polls: Sequence[str]
) -> list[tuple[str, str, str]]:
    """(poll, voter, token) taking each poll in turn, every voter once."""
    voters = [sorted(t) for t in tokens]
    found = []
    for i in range(max((len(v) for v in voters), default=0)):
        for poll, names, known in zip(polls, voters, tokens, strict=True):
            if i < len(names):
                found.append((poll, names[i], known[names[i]]))
    return found


def wrk(
    base: str,
    bodies: Path,
    seconds: int,
    connections: int = CONNECTIONS,
    rate: float = 0,
    groups: cpu.Groups | None = None,
) -> dict[str, Any]:
    """One wrk run against ``base`` (http://host:port); rate 0 means as fast as answered.

    With ``groups``, the summary also says how much CPU each group of processes spent per
    request (``cpu_us_per_request``)."""
    env = {**os.environ, "BODIES": str(bodies), "THREADS": str(THREADS), "RATE": str(rate)}
    argv = [
        "wrk", f"-t{THREADS}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(HERE / "load.lua"), base,
    ]  # fmt: skip
    used: dict[str, float] = {}
    with cpu.split(groups or dict, used):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"^WRK_JSON (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    summary: dict[str, Any] = json.loads(found.group(1))
    accepted = summary["statuses"].get("202", 0)
    summary["connections"] = connections
    summary["accepted_per_s"] = round(accepted / summary["seconds"], 1)
    summary["requests_per_s"] = round(summary["requests"] / summary["seconds"], 1)
    if groups is not None:
        summary["cpu_us_per_request"] = cpu.per_request(used, summary["requests"])
    if rate:
        summary["offered_per_s"] = round(rate, 1)
        summary["achieved_per_s"] = summary["requests_per_s"]
    return summary


def command(seconds: int, connections: int = CONNECTIONS) -> str:
    """The wrk command line as the docs show it."""
    return (
        f"BODIES=FILE THREADS={THREADS} [RATE=N] wrk -t{THREADS} -c{connections} -d{seconds}s "
        "--timeout 10s -s bench/load.lua URL"
    )
