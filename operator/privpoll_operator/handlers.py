"""The operator's reactions to Poll resources. Run with ``kopf run --standalone -m
privpoll_operator.handlers``.

Each handler is thin: it turns the resource into a PollSpec, calls the provisioning code that
``privpoll up`` uses too, and reports in the Poll's status.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import psycopg
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import Error as JetStreamError
from pydantic import ValidationError

from privpoll import cluster
from privpoll.bus import activity, naming
from privpoll.core.poll import Phase
from privpoll.core.results import summarize
from privpoll.core.spec import PollSpec, describe, parse_voter_list, problems
from privpoll.db import migrations, storage
from privpoll.service import lifecycle
from privpoll.settings import Settings
from privpoll_operator import deployments, idle, kube
from privpoll_operator.conditions import set_condition
from privpoll_operator.crd import GROUP, PLURAL, VERSION

TRANSIENT = (psycopg.OperationalError, NatsError, JetStreamError, OSError, TimeoutError)
TIMER_INTERVAL = 3.0


class Operator:
    """What the handlers share: settings and one NATS connection, opened on demand."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._lock = asyncio.Lock()
        # What the idle scaler last saw of each sink consumer: (namespace, poll, role).
        self.idle: dict[tuple[str, str, naming.Role], idle.Seen] = {}

    async def jetstream(self) -> JetStreamContext:
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                try:
                    self._nc = await naming.connect(self.settings.nats_url, "privpoll-operator")
                # nats-py raises many kinds for "not reachable"; kopf retries the handler.
                except Exception as error:
                    raise kopf.TemporaryError(
                        f"NATS is not reachable: {error}", delay=10
                    ) from error
        if not self._nc.is_connected:
            raise kopf.TemporaryError("NATS is reconnecting", delay=5)
        return self._nc.jetstream()

    def database(self) -> psycopg.Connection[Any]:
        try:
            return storage.connect(self.settings.database_url)
        except psycopg.OperationalError as error:
            raise kopf.TemporaryError(
                f"the database is not reachable: {error}", delay=10
            ) from error

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


def operator_of(memo: Any) -> Operator:
    found: Operator = memo["operator"]
    return found


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/cleanup"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    # Least privilege: the chart's Role grants no cluster-wide reads, so kopf must not watch
    # CRDs or namespaces. The CRD is in place before the operator starts (helm's crds/).
    settings.scanning.disabled = True
    config = Settings.from_env()
    if not config.nats_url or not config.database_url:
        raise kopf.PermanentError("set PRIVPOLL_NATS_URL and PRIVPOLL_DATABASE_URL")
    await asyncio.to_thread(cluster.load_config)
    await asyncio.to_thread(_migrate, config)
    memo["operator"] = Operator(config)


def _migrate(config: Settings) -> None:
    with storage.connect(config.database_url) as conn:
        migrations.migrate(conn)


@kopf.on.cleanup()
async def disconnect(memo: Any, **_: Any) -> None:
    if "operator" in memo:
        await operator_of(memo).close()


def _fail(patch: kopf.Patch, status: kopf.Status, reason: str, message: str) -> None:
    patch.status["phase"] = "Failed"
    patch.status["conditions"] = set_condition(
        status.get("conditions"), "Ready", False, reason, message
    )


async def _spec_of(spec: kopf.Spec, namespace: str) -> PollSpec:
    """The resource's spec as the model, with a ConfigMap/Secret voter list read in."""
    document = _plain(spec)
    try:
        parsed = PollSpec.model_validate(document)
    except ValidationError as error:
        raise kopf.PermanentError(describe(problems(error, "spec."))) from error
    voters = parsed.voters
    if voters.config_map_refs:
        refs = [(ref, "ConfigMap") for ref in voters.config_map_refs]
    elif voters.config_map_ref:
        refs = [(voters.config_map_ref, "ConfigMap")]
    elif voters.secret_ref:
        refs = [(voters.secret_ref, "Secret")]
    else:
        return parsed
    ids: list[str] = []
    for ref, kind in refs:
        text = await asyncio.to_thread(kube.read_key, namespace, kind, ref.name, ref.key)
        if text is None:
            raise kopf.TemporaryError(
                f"voters: {kind} {ref.name!r} with key {ref.key!r} not found in {namespace}",
                delay=15,
            )
        ids.extend(parse_voter_list(text))
    try:
        return parsed.with_voters(ids)
    except ValidationError as error:
        names = ", ".join(f"{kind} {ref.name}" for ref, kind in refs)
        raise kopf.PermanentError(
            f"voters in {names}: {describe(problems(error, 'spec.'))}"
        ) from error


def _plain(value: Any) -> Any:
    if isinstance(value, dict | kopf.Spec) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(
    spec: kopf.Spec,
    name: str,
    namespace: str | None,
    body: kopf.Body,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Provision the poll and its sinks; apply safe spec changes, refuse unsafe ones."""
    op = operator_of(memo)
    namespace = namespace or "default"
    try:
        wanted = await _spec_of(spec, namespace)
    except kopf.PermanentError as error:
        _fail(patch, status, "InvalidSpec", str(error))
        raise
    try:
        js = await op.jetstream()
        with op.database() as conn:
            try:
                stored = await lifecycle.apply(js, conn, name, wanted, owner=status.get("pollUid"))
            except lifecycle.Refused as refused:
                if refused.reason == "Gone":
                    raise kopf.TemporaryError(str(refused), delay=5) from refused
                if refused.reason == "UnsafeChange":  # the poll goes on with its old spec
                    patch.status["conditions"] = set_condition(
                        status.get("conditions"), "Ready", False, refused.reason, str(refused)
                    )
                else:
                    _fail(patch, status, refused.reason, str(refused))
                raise kopf.PermanentError(str(refused)) from refused
            # The sinks first: once the poll is in the registry the ingest takes votes for
            # it, and whoever sees it there finds its sink Deployments in place too.
            for role in naming.ROLES:
                manifest = deployments.sink(name, role, op.settings)
                kopf.adopt(manifest, owner=body)
                await asyncio.to_thread(kube.apply_deployment, namespace, manifest)
                # At one replica again: the idle scaler starts over.
                op.idle.pop((namespace, name, role), None)
            await lifecycle.reprovision(js, conn, stored, replicas=op.settings.stream_replicas)
    except TRANSIENT as error:
        raise kopf.TemporaryError(f"{type(error).__name__}: {error}", delay=10) from error

    conditions = status.get("conditions")
    conditions = set_condition(
        conditions,
        "Provisioned",
        True,
        "Provisioned",
        "stream, consumers, KV bucket and rows exist",
    )
    phase = stored.phase()
    conditions = set_condition(
        conditions, "Open", phase is Phase.OPEN, phase.value, f"the poll is {phase.value.lower()}"
    )
    conditions = set_condition(
        conditions, "Ready", True, "SinksDeployed", "both sink Deployments are in place"
    )
    patch.status["pollUid"] = str(stored.uid)
    patch.status["phase"] = phase.value
    patch.status["conditions"] = conditions
    patch.status["observedGeneration"] = meta.get("generation")
    logger.info("poll %s reconciled (%s)", name, phase.value)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TIMER_INTERVAL, initial_delay=TIMER_INTERVAL)
async def follow(
    name: str,
    namespace: str | None,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: Any,
    **_: Any,
) -> None:
    """Open and close on schedule, report turnout; after close: drain, remix, stop the sinks."""
    if not status.get("pollUid") or status.get("sinks") == "Stopped":
        return
    op = operator_of(memo)
    namespace = namespace or "default"
    try:
        js = await op.jetstream()
        with op.database() as conn:
            poll = await asyncio.to_thread(storage.get_poll, conn, name)
            if poll is None:
                return
            replicas = op.settings.stream_replicas
            poll = await lifecycle.close_if_due(js, conn, poll, replicas=replicas)
            progress = await lifecycle.advance(js, conn, poll, replicas=replicas)
            votes, voters, stored = await asyncio.to_thread(storage.tally, conn, poll.uid)
    except TRANSIENT as error:
        raise kopf.TemporaryError(f"{type(error).__name__}: {error}", delay=10) from error

    phase = poll.phase()
    patch.status["phase"] = phase.value
    patch.status["turnout"] = {"eligible": poll.eligible, "voters": voters, "votes": votes}
    patch.status["conditions"] = set_condition(
        status.get("conditions"),
        "Open",
        phase is Phase.OPEN,
        phase.value,
        f"the poll is {phase.value.lower()}",
    )
    if progress is None or not progress.remixed:
        return
    # Written once drained: every accepted vote is stored, none pending.
    patch.status["results"] = summarize(poll.rules, phase.value, votes, voters, stored, 0)
    # A merge patch: the message of the re-mix stays while later rounds update "purged".
    patch.status["remix"] = progress.to_json()
    patch.status["remixedAt"] = progress.to_json()["remixedAt"]
    patch.status["purgedAt"] = progress.to_json()["purgedAt"]
    for role in naming.ROLES:
        await asyncio.to_thread(
            kube.scale_deployment, namespace, deployments.name_of(name, role), 0
        )
    # Until the old row versions are gone the timer keeps vacuuming; then it has nothing left.
    patch.status["sinks"] = "Stopped" if progress.purged else "Drained"


@kopf.timer(GROUP, VERSION, PLURAL, interval=TIMER_INTERVAL, initial_delay=TIMER_INTERVAL)
async def scale_idle_sinks(
    name: str, namespace: str | None, status: kopf.Status, memo: Any, **_: Any
) -> None:
    """A sink Deployment to zero while its consumer has had nothing new for
    ``sink_idle_seconds``, back to one once an envelope waits (privpoll_operator.idle)."""
    op = operator_of(memo)
    if not status.get("pollUid") or status.get("sinks") in ("Drained", "Stopped"):
        return
    if op.settings.sink_idle_seconds <= 0:
        return
    namespace = namespace or "default"
    try:
        now = await activity.activity(await op.jetstream(), name)
    except TRANSIENT as error:
        raise kopf.TemporaryError(f"{type(error).__name__}: {error}", delay=10) from error
    if now is None:
        return
    clock = asyncio.get_running_loop().time()
    for role, consumer in now.consumers.items():
        key = (namespace, name, role)
        seen, replicas = idle.step(
            op.idle.get(key),
            clock,
            consumer,
            open_poll=now.taking_votes,
            idle_after=op.settings.sink_idle_seconds,
        )
        if replicas is not None:
            await asyncio.to_thread(
                kube.scale_deployment, namespace, deployments.name_of(name, role), replicas
            )
        op.idle[key] = seen


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def remove(
    spec: kopf.Spec, name: str, namespace: str | None, status: kopf.Status, memo: Any, **_: Any
) -> None:
    """Delete the sinks, the stream and KV bucket; the vote rows too if retention says so."""
    op = operator_of(memo)
    namespace = namespace or "default"
    for role in naming.ROLES:
        await asyncio.to_thread(kube.delete_deployment, namespace, deployments.name_of(name, role))
    if not status.get("pollUid"):
        return
    try:
        js = await op.jetstream()
        if spec.get("retention") == "delete":
            with op.database() as conn:
                await lifecycle.delete(js, conn, name, uid=status.get("pollUid"))
        else:
            await lifecycle.delete(js, None, name)
    except TRANSIENT as error:
        raise kopf.TemporaryError(f"{type(error).__name__}: {error}", delay=10) from error
