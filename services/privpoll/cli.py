"""The ``privpoll`` command: run the system, manage polls, read results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import click
import yaml

from privpoll.bus import naming
from privpoll.client import ApiClient, Part, Unreachable, problem
from privpoll.settings import Settings

# Creating a poll of a million voters takes tens of seconds.
CALL_TIMEOUT = 120.0


def _settings() -> Settings:
    return Settings.from_env()


def _admin_token(settings: Settings) -> str:
    if settings.admin_token:
        return settings.admin_token
    path = settings.data_dir / "secrets.json"
    if path.exists():
        return str(json.loads(path.read_text()).get("admin_token", ""))
    return ""


def _call(method: str, path: str, body: Any = None, *, admin: bool = True) -> Any:
    return _answer(lambda client: client.call(method, path, body, admin=admin), admin=admin)


def _upload(path: str, parts: list[Part]) -> Any:
    return _answer(lambda client: client.upload(path, parts, admin=True), admin=True)


def _answer(send: Callable[[ApiClient], tuple[int, Any]], *, admin: bool) -> Any:
    settings = _settings()
    base = os.environ.get("PRIVPOLL_URL", settings.base_url)
    token = ""
    if admin:
        token = _admin_token(settings)
        if not token:
            raise click.ClickException(
                "no admin token: set PRIVPOLL_ADMIN_TOKEN (privpoll up printed it)"
            )
    try:
        status, answer = send(ApiClient(base, token, timeout=CALL_TIMEOUT))
    except Unreachable as error:
        raise click.ClickException(f"{error}; is `privpoll up` running?") from error
    if status >= 400:
        raise click.ClickException(problem(status, answer))
    return answer


def _serve(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived role until SIGTERM or SIGINT, then stop it and exit 0.

    As a container's PID 1 a process gets no default action for SIGTERM: without a handler
    every stop, rollout and scale-down would wait out the grace period and end in SIGKILL.
    Cancelling the role is safe at any point: a batch committed but not acked comes back as
    a redelivery that changes nothing, one not yet committed comes back whole.
    """

    async def until_stopped() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await main

    asyncio.run(until_stopped())


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log more")
def main(verbose: bool) -> None:
    """Reasonably private polling."""
    level = logging.DEBUG if verbose else getattr(logging, _settings().log_level.upper(), 20)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
def up() -> None:
    """Start NATS, PostgreSQL, the ingest and the sinks on this machine."""
    from privpoll.local.runner import up as run_up

    run_up(_settings())


@main.command()
@click.argument("role", type=click.Choice(naming.ROLES))
@click.option("--poll", "polls", multiple=True, help="serve only these polls (default: all)")
def sink(role: naming.Role, polls: tuple[str, ...]) -> None:
    """Run the actor or ballot sink."""
    from privpoll.workers.sinks import Sink

    settings = _settings()
    if not settings.nats_url or not settings.database_url:
        raise click.ClickException("set PRIVPOLL_NATS_URL and PRIVPOLL_DATABASE_URL")
    runner = Sink(role, settings.nats_url, settings.database_url, list(polls) or None)
    _serve(runner.run())


@main.command(hidden=True)
def remixer() -> None:
    """Remix every poll once it closed and drained (privpoll up runs this)."""
    from privpoll.workers.remixer import Watcher

    settings = _settings()
    if not settings.nats_url or not settings.database_url:
        raise click.ClickException("set PRIVPOLL_NATS_URL and PRIVPOLL_DATABASE_URL")
    watcher = Watcher(settings.nats_url, settings.database_url, replicas=settings.stream_replicas)
    _serve(watcher.run())


@main.group()
def poll() -> None:
    """Create, list, close, remix polls; hand out invitations."""


def _read_poll_file(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise click.ClickException(f"{path} is not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise click.ClickException(f"{path} must hold a Poll (a mapping with metadata and spec)")
    if "metadata" in document:
        return {"name": (document.get("metadata") or {}).get("name"), "spec": document.get("spec")}
    return document


@poll.command("create")
@click.option("-f", "--file", "path", type=click.Path(exists=True, path_type=Path), required=True)
@click.option(
    "--voters",
    "voters",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a text file with one voter id a line (up to 1,000,000), instead of spec.voters",
)
def poll_create(path: Path, voters: Path | None) -> None:
    """Create a poll from a Poll YAML file (the same file kubectl applies)."""
    document = _read_poll_file(path)
    if voters is None:
        created = _call("POST", "/api/v1/polls", document)
    else:
        spec = document.get("spec")
        if isinstance(spec, dict) and "voters" in spec:
            raise click.ClickException(
                f"{path} lists spec.voters and --voters gives a file: keep one of them"
            )
        parts = [
            Part("poll", json.dumps(document).encode(), "application/json"),
            Part("voters", voters.read_bytes(), "text/plain", voters.name),
        ]
        created = _upload("/api/v1/polls", parts)
    click.echo(f"poll {created['name']} created ({created['phase']})")


@poll.command("list")
def poll_list() -> None:
    for item in _call("GET", "/api/v1/polls"):
        turnout = item["turnout"]
        click.echo(
            f"{item['name']:<24} {item['phase']:<8} {turnout['voters']}/{turnout['eligible']} voted"
        )


@poll.command("invitations")
@click.argument("name")
def poll_invitations(name: str) -> None:
    """Print one invitation link per voter."""
    for item in _call("GET", f"/api/v1/polls/{name}/invitations"):
        click.echo(f"{item['voter']}\t{item['url']}")


@poll.command("close")
@click.argument("name")
def poll_close(name: str) -> None:
    closed = _call("POST", f"/api/v1/polls/{name}/close")
    click.echo(f"poll {closed['name']} is {closed['phase']}")


@poll.command("remix")
@click.argument("name")
def poll_remix(name: str) -> None:
    """Rewrite a closed poll's rows with fresh ids now (privpoll up does it at close)."""
    click.echo(_call("POST", f"/api/v1/polls/{name}/remix")["message"])


@main.command()
@click.argument("invitation")
@click.argument("choice")
def vote(invitation: str, choice: str) -> None:
    """Vote with an invitation link."""
    parts = urlsplit(invitation)
    query = parse_qs(parts.query)
    name = parts.path.rstrip("/").rsplit("/", 1)[-1]
    try:
        body = {"voter": query["voter"][0], "token": query["token"][0], "choice": choice}
    except KeyError as error:
        raise click.ClickException(
            "that is not an invitation link (voter/token missing)"
        ) from error
    _call("POST", f"/api/v1/polls/{name}/votes", body, admin=False)
    click.echo("vote queued")


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print the raw JSON")
def results(name: str, as_json: bool) -> None:
    """Show a poll's results: estimates with their 95% intervals."""
    found = cast(dict[str, Any], _call("GET", f"/api/v1/polls/{name}/results"))
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    votes = found["votes"]
    click.echo(f"{name}: {found['phase']}")
    click.echo(f"{'choice':<20} {'estimate':>9}   {'95% interval':<17} {'stored':>7}")
    for row in found["choices"]:
        lo, hi = row["ci95"]
        click.echo(
            f"{row['choice']:<20} {row['estimate']:>9.1f}   [{lo:>6.1f}, {hi:>6.1f}]  "
            f"{row['stored']:>7}"
        )
    click.echo(
        f"votes: {votes['total']} from {votes['uniqueVoters']} unique voters; "
        f"{votes['storedBallots']} ballots stored (real + fake)"
    )
    if found.get("epsilon") is not None:
        click.echo(f"randomized response: epsilon = {found['epsilon']:.2f}")
    click.echo(
        "The numbers are estimates: fake ballots are mixed in on purpose so no one can tell who "
        "voted how; the true count lies in the interval 95% of the time."
    )


def _database_url(settings: Settings) -> str:
    """PRIVPOLL_DATABASE_URL, else the PostgreSQL that `privpoll up` runs in the data folder."""
    if settings.database_url:
        return settings.database_url
    port = settings.data_dir / "postgres" / "postgres.port"
    if not port.exists():
        raise click.ClickException(
            f"no database: set PRIVPOLL_DATABASE_URL, or run in the folder of `privpoll up` "
            f"(its data folder {settings.data_dir} has no PostgreSQL)"
        )
    from privpoll.local.embedded import PostgresServer

    return PostgresServer(port.parent).dsn


@main.command()
@click.argument("name", required=False)
@click.option(
    "--record",
    "record_to",
    type=click.Path(file_okay=False, path_type=Path),
    help="copy the tables into DIR whenever they change, until Ctrl-C",
)
@click.option(
    "--snapshots",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="copies taken while voting went on (by --record)",
)
@click.option("--offline", is_flag=True, help="use the snapshots only, not the database now")
@click.option("--interval", default=0.05, show_default=True, help="seconds between copies")
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON {voter: choice} of a test run, to measure the attacker's real accuracy",
)
@click.option("--json", "as_json", is_flag=True, help="print the findings as JSON")
def audit(
    name: str | None,
    record_to: Path | None,
    snapshots: Path | None,
    offline: bool,
    interval: float,
    truth: Path | None,
    as_json: bool,
) -> None:
    """Attack a poll the way a database thief would, and say what it reveals.

    Reads the vote tables with their hidden columns (xmin and ctid, or CockroachDB's MVCC
    timestamp) and, with --snapshots, copies taken during voting; links voters to ballots by
    transaction and by what appeared between copies, and reports every voter's posterior over
    the choices in aggregate: the largest, how many are certain, the attacker's accuracy.
    """
    from privpoll.audit import thief as auditing

    settings = _settings()
    if record_to is not None:
        dsn = _database_url(settings)
        click.echo(f"recording snapshots into {record_to}; stop with Ctrl-C", err=True)
        kept = 0
        with contextlib.suppress(KeyboardInterrupt):
            kept = auditing.record(dsn, record_to, interval=interval, polls=[name] if name else [])
        click.echo(f"{kept} snapshots in {record_to}", err=True)
        return
    if name is None:
        raise click.ClickException("name the poll to audit (or give --record DIR)")
    dumps = auditing.load(snapshots) if snapshots else []
    if not offline:
        import psycopg

        try:
            with psycopg.connect(_database_url(settings), autocommit=True) as conn:
                dumps.append(auditing.read(conn))
        except psycopg.OperationalError as error:
            if not dumps:
                raise click.ClickException(f"cannot read the database: {error}") from error
            click.echo("the database is not reachable: auditing the snapshots only", err=True)
    if not dumps:
        raise click.ClickException("nothing to audit: give --snapshots or drop --offline")
    try:
        result, spec = auditing.inference(name, dumps)
    except LookupError as error:
        raise click.ClickException(str(error)) from error
    known = json.loads(truth.read_text()) if truth else None
    found = auditing.summarize(name, result, spec, known)
    if as_json:
        click.echo(found.model_dump_json(by_alias=True, indent=2))
    else:
        for line in auditing.describe(found):
            click.echo(line)


if __name__ == "__main__":
    sys.exit(main())
