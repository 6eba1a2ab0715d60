"""`make run` runs `privpoll up`: everything embedded, the README tour, a clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from privpoll.local.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]


def privpoll(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "privpoll", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def start(env: dict[str, str], out: Path) -> tuple[subprocess.Popen[bytes], str]:
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "privpoll", "up"], env=env, stdout=sink, stderr=sink
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = out.read_text()
        assert process.poll() is None, text
        found = re.search(r"admin token: (\S+)", text)
        if found:
            return process, found.group(1)
        time.sleep(0.2)
    raise AssertionError(out.read_text())


def ready(url: str) -> bool:
    """The banner comes before gunicorn listens: a refused connection means not yet."""
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0


def test_privpoll_up_runs_the_readme_tour_and_keeps_data(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PRIVPOLL_")},
        "PRIVPOLL_DATA_DIR": str(tmp_path / "data"),
        "PRIVPOLL_HTTP_ADDR": f"127.0.0.1:{port}",
    }
    process, token = start(env, tmp_path / "up.out")
    try:
        banner = (tmp_path / "up.out").read_text()
        assert f"privpoll is up at http://127.0.0.1:{port}" in banner
        deadline = time.monotonic() + 30
        while not ready(f"http://127.0.0.1:{port}/readyz"):
            assert time.monotonic() < deadline
            time.sleep(0.2)

        env["PRIVPOLL_ADMIN_TOKEN"] = token
        assert "poll lunch created (Open)" in privpoll(
            env, "poll", "create", "-f", str(ROOT / "examples" / "poll.yaml")
        )
        links = dict(
            line.split("\t") for line in privpoll(env, "poll", "invitations", "lunch").splitlines()
        )
        assert sorted(links) == ["alice", "bob", "carol"]
        assert privpoll(env, "vote", links["alice"], "pizza").strip() == "vote queued"
        assert privpoll(env, "vote", links["bob"], "sushi").strip() == "vote queued"
        assert "poll lunch is Closed" in privpoll(env, "poll", "close", "lunch")
        deadline = time.monotonic() + 60
        while "votes: 2 from 2 unique voters" not in (table := privpoll(env, "results", "lunch")):
            assert time.monotonic() < deadline, table
            time.sleep(0.5)
        assert re.search(r"pizza\s+-?\d+\.\d\s+\[", table)
    finally:
        stop(process)

    # Data and the admin token survive a restart (the banner shows a token only when the
    # environment does not give one: privpoll up never echoes a secret the user chose).
    stored = {k: v for k, v in env.items() if k != "PRIVPOLL_ADMIN_TOKEN"}
    process, again = start(stored, tmp_path / "up2.out")
    try:
        assert again == token
        assert "votes: 2 from 2 unique voters" in privpoll(env, "results", "lunch")
    finally:
        stop(process)
