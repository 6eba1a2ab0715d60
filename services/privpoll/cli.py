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
from urllib.parse import parse_qs, quote, urlsplit

import click
import yaml

from privpoll import __version__
from privpoll.bus import naming
from privpoll.client import ApiClient, Part, Unreachable, problem
from privpoll.local import secrets
from privpoll.settings import Settings
from privpoll.text_table import polls_table, results_table

# Creating a poll of a million voters takes tens of seconds.
CALL_TIMEOUT = 120.0


def _settings() -> Settings:
    return Settings.from_env()


def _admin_token(settings: Settings) -> str:
    if settings.admin_token:
        return settings.admin_token
    return secrets.stored(settings).get("admin_token", "")


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
@click.version_option(
    __version__, "--version", prog_name="privpoll", message="%(prog)s %(version)s"
)
def main(verbose: bool) -> None:
    """Reasonably private polling.

    Start everything on this machine with `privpoll up`; then create polls with
    `privpoll poll create -f poll.yaml` or in the browser, and read results with
    `privpoll results NAME`. Commands that talk to a running privpoll find it through
    PRIVPOLL_URL and PRIVPOLL_ADMIN_TOKEN (or the data folder of `privpoll up`).
    """
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
    if settings.sink_metrics_addr:
        from privpoll.workers import sink_metrics

        sink_metrics.serve(settings.sink_metrics_addr)
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
    kind = document.get("kind")
    if kind is not None and kind != "Poll":
        raise click.ClickException(f"{path}: this is not a Poll (kind: {kind})")
    if "metadata" in document:
        return {"name": (document.get("metadata") or {}).get("name"), "spec": document.get("spec")}
    return document


@poll.command("create")
@click.option(
    "-f",
    "--file",
    "path",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="the Poll YAML file",
)
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
    """List the polls: name, phase, how many voted of how many, title."""
    found = _call("GET", "/api/v1/polls")
    if not found:
        click.echo("no polls yet: create one with `privpoll poll create -f poll.yaml`")
        return
    click.echo(polls_table(found))


@poll.command("invitations")
@click.argument("name")
def poll_invitations(name: str) -> None:
    """Print one invitation link per voter: the voter id, a tab, the link."""
    for item in _call("GET", f"/api/v1/polls/{name}/invitations"):
        click.echo(f"{item['voter']}\t{item['url']}")


@poll.command("close")
@click.argument("name")
def poll_close(name: str) -> None:
    """Close a poll now: no more votes; the results stay."""
    closed = _call("POST", f"/api/v1/polls/{name}/close")
    click.echo(f"poll {closed['name']} is {closed['phase']}")


def _follow_mail(name: str, kind: str, wait: bool) -> None:
    """Print the progress of the poll's e-mail of ``kind`` until it is all out."""
    import time

    shown = None
    while True:
        found = _call("GET", f"/api/v1/polls/{name}/mail")[kind]
        line = (
            f"{found['sent']} sent, {found['queued'] + found['sending']} waiting, "
            f"{found['failed']} failed"
        )
        if line != shown:
            click.echo(line)
            shown = line
        if found["done"] or not wait:
            break
        time.sleep(1)
    for failure in found["failures"]:
        click.echo(f"not delivered to {failure['voter']}: {failure['problem']}", err=True)


@poll.command("invite")
@click.argument("name")
@click.option("--again", is_flag=True, help="also mail the voters who got their invitation")
@click.option("--no-wait", is_flag=True, help="return at once; the server keeps sending")
def poll_invite(name: str, again: bool, no_wait: bool) -> None:
    """E-mail every voter whose id is an address their own link.

    Nobody is mailed twice unless --again; messages that failed before are tried again.
    Needs PRIVPOLL_SMTP_URL and PRIVPOLL_MAIL_FROM where privpoll runs.
    """
    path = f"/api/v1/polls/{name}/invitations/send" + ("?again=true" if again else "")
    found = _call("POST", path)
    click.echo(f"{found['queued']} invitations queued; {found['alreadySent']} had theirs already")
    if found["skipped"]:
        click.echo(
            f"not e-mail addresses (send these links yourself): {', '.join(found['skipped'])}"
        )
    _follow_mail(name, "invitations", not no_wait)


@poll.command("remind")
@click.argument("name")
@click.option("--no-wait", is_flag=True, help="return at once; the server keeps sending")
def poll_remind(name: str, no_wait: bool) -> None:
    """E-mail a reminder to every voter with an address who has not voted yet."""
    found = _call("POST", f"/api/v1/polls/{name}/reminders")
    click.echo(f"{found['queued']} reminders queued")
    _follow_mail(name, "reminders", not no_wait)


@poll.command("reissue")
@click.argument("name")
@click.argument("voter")
def poll_reissue(name: str, voter: str) -> None:
    """Print a new invitation link for VOTER; their old link stops working at once.

    A voter who already voted still cannot vote again with the new link.
    """
    found = _call("POST", f"/api/v1/polls/{name}/voters/{quote(voter, safe='')}/reissue")
    click.echo(f"{found['voter']}\t{found['url']}")


@poll.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def poll_delete(name: str, yes: bool) -> None:
    """Delete a poll for good: its votes, results and invitation links."""
    if not yes:
        click.confirm(
            f"Erase poll {name}: its stored votes, its results and every invitation link?",
            abort=True,
        )
    click.echo(_call("DELETE", f"/api/v1/polls/{name}")["message"])


@poll.command("remix")
@click.argument("name")
def poll_remix(name: str) -> None:
    """Rewrite a closed poll's rows with fresh ids now (privpoll up does it at close)."""
    click.echo(_call("POST", f"/api/v1/polls/{name}/remix")["message"])


@main.command()
@click.argument("invitation")
@click.argument("choice")
def vote(invitation: str, choice: str) -> None:
    """Vote with an invitation link.

    INVITATION is the whole link the voter received (in quotes: it holds '&'), e.g.
    "https://polls.example/vote/lunch?voter=ada&token=..."; CHOICE is one of the poll's
    choices, spelt as the poll spells it.
    """
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
    click.echo(results_table(found["choices"]))
    click.echo(
        f"votes: {votes['total']} from {votes['uniqueVoters']} unique voters; "
        f"{votes['storedBallots']} ballots stored (real + fake)"
    )
    pending = found.get("pending")
    if pending:
        click.echo(
            f"{pending} more {'vote is' if pending == 1 else 'votes are'} accepted but not yet "
            "stored, and not counted above: run this again in a few seconds"
        )
    elif pending is None and "pending" in found:
        click.echo("the queue cannot say now whether more votes are still being stored")
    if votes["total"] and found.get("verdict"):
        click.echo(found["verdict"]["message"])
    if found.get("epsilon") is not None:
        click.echo(f"randomized response: epsilon = {found['epsilon']:.2f}")
    click.echo(
        "The numbers are estimates: fake ballots are mixed in on purpose so no one can tell who "
        "voted how; the true count lies in the interval 95% of the time."
    )


@main.command()
@click.option("--wait", default=120.0, show_default=True, help="seconds to wait for the database")
def migrate(wait: float) -> None:
    """Apply the database schema (safe beside other migrators; the operator runs this)."""
    import time

    import psycopg

    from privpoll.db import migrations, storage

    dsn = _database_url(_settings())
    deadline = time.monotonic() + wait
    while True:
        try:
            with storage.connect(dsn) as conn:
                version = migrations.migrate(conn)
            break
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                raise click.ClickException(f"the database did not answer: {error}") from error
            time.sleep(1)
    click.echo(f"schema version {version} (of {migrations.LATEST})")


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
@click.option(
    "--files",
    "files_of",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="a copy of a privpoll up data folder: read its files as a thief would, every poll",
)
@click.option(
    "--settings",
    "settings_only",
    is_flag=True,
    help="check what the database is configured to keep beyond a purge (WAL, slots, GC)",
)
@click.option("--json", "as_json", is_flag=True, help="print the findings as JSON")
def audit(
    name: str | None,
    record_to: Path | None,
    files_of: Path | None,
    settings_only: bool,
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

    if files_of is not None:
        _audit_files(files_of, as_json)
        return
    settings = _settings()
    if settings_only:
        _audit_settings(_database_url(settings), as_json)
        return
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


def _audit_settings(dsn: str, as_json: bool) -> None:
    """``privpoll audit --settings``: what the database keeps beyond a purge, and what no
    query can tell (privpoll.db.forget)."""
    import psycopg

    from privpoll.db import forget

    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            found = forget.check_settings(conn)
    except psycopg.OperationalError as error:
        raise click.ClickException(f"cannot read the database: {error}") from error
    if as_json:
        document = {
            "settings": [f.to_json() for f in found],
            "cannotCheck": list(forget.CANNOT_CHECK),
        }
        click.echo(json.dumps(document, indent=2))
        return
    for finding in found:
        verdict = {True: "ok", False: "KEEPS OLD BATCHES", None: "unknown"}[finding.safe]
        click.echo(f"{finding.name} = {finding.value}: {verdict}")
        if finding.safe is not True:
            click.echo(f"    {finding.advice}")
    click.echo("privpoll cannot check:")
    for what in forget.CANNOT_CHECK:
        click.echo(f"    {what}")


def _audit_files(folder: Path, as_json: bool) -> None:
    """``privpoll audit --files DIR``: privpoll.audit.files on a copied data folder."""
    import psycopg

    from privpoll.audit import files
    from privpoll.local import embedded

    cluster = files.cluster_of(folder)
    if not (cluster / "PG_VERSION").exists():
        raise click.ClickException(
            f"{folder} holds no PostgreSQL cluster (postgres/cluster in it): give a copy of "
            "the data folder of privpoll up"
        )
    try:
        with embedded.running_copy(cluster) as dsn, psycopg.connect(dsn) as conn:
            catalog = files.read_catalog(conn, cluster)
    except RuntimeError as error:
        raise click.ClickException(f"cannot read the copy's catalog: {error}") from error
    report = files.audit(folder, catalog, embedded.postgres_bin() / "pg_waldump")
    if as_json:
        click.echo(report.model_dump_json(by_alias=True, indent=2))
    else:
        for line in files.describe(report):
            click.echo(line)


if __name__ == "__main__":
    sys.exit(main())
