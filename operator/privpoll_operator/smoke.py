"""A smoke test of an installation, run by the chart's ``helm test`` pod: create a Poll, vote
through the HTTP API, close the poll, read its results, delete the Poll and wait until it
is gone.

    PRIVPOLL_URL=http://privpoll.NS.svc PRIVPOLL_ADMIN_TOKEN=... PRIVPOLL_NAMESPACE=NS \\
        python -m privpoll_operator.smoke

It needs to create, read and delete Polls in its namespace, and nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from privpoll import cluster
from privpoll.client import ApiClient, Unreachable
from privpoll.cluster import GROUP, KIND, PLURAL, VERSION

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
VOTES = {"ada": "yes", "grace": "no"}
ELIGIBLE = [*VOTES, "edsger"]
T = TypeVar("T")


class SmokeFailure(Exception):
    """What went wrong, in words that say where to look."""


def poll_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "test"}},
        "spec": {
            "title": "helm test: is privpoll working?",
            "choices": ["yes", "no"],
            "voters": {"ids": ELIGIBLE},
            "noise": {"fakeVotes": {"distribution": "fixed", "count": 1, "min": 1}},
            "mixing": {"minBatch": 1, "maxWait": "1s"},
        },
    }


class Api:
    """The few HTTP calls of the smoke test; an installation that does not answer fails it."""

    def __init__(self, base: str, admin_token: str) -> None:
        self.client = ApiClient(base, admin_token)

    def call(
        self, method: str, path: str, body: Any = None, *, admin: bool = False
    ) -> tuple[int, Any]:
        try:
            return self.client.call(method, path, body, admin=admin)
        except Unreachable as error:
            raise SmokeFailure(str(error)) from error


def wait_for(check: Callable[[], T | None], what: str, timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise SmokeFailure(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


def ready_condition(poll: dict[str, Any]) -> dict[str, Any] | None:
    for condition in poll.get("status", {}).get("conditions", []):
        if condition.get("type") == "Ready":
            found: dict[str, Any] = condition
            return found
    return None


def run(api: Api, namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    """The whole check; returns the results. Leaves the Poll behind (the caller deletes it)."""
    polls: Any = client.CustomObjectsApi()
    try:
        polls.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, poll_manifest(name)
        )
    except ApiException as error:
        raise SmokeFailure(f"cannot create Poll {name} in {namespace}: {error.reason}") from error
    print(f"created Poll {namespace}/{name}", flush=True)

    def ready() -> dict[str, Any] | None:
        poll = polls.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        condition = ready_condition(poll)
        if condition and condition["status"] == "False":
            raise SmokeFailure(f"the operator refused the Poll: {condition['message']}")
        return condition if condition and condition["status"] == "True" else None

    wait_for(ready, "the operator to provision the Poll (is the operator running?)", timeout)
    print("the operator provisioned it", flush=True)

    status, invitations = api.call("GET", f"/api/v1/polls/{name}/invitations", admin=True)
    if status != 200:
        raise SmokeFailure(f"invitations: {status} {invitations} (is the admin token right?)")
    tokens = {item["voter"]: item["token"] for item in invitations}
    if sorted(tokens) != sorted(ELIGIBLE):
        raise SmokeFailure(f"invitations for {sorted(tokens)}, expected {sorted(ELIGIBLE)}")
    for voter, choice in VOTES.items():
        body = {"voter": voter, "token": tokens[voter], "choice": choice}
        status, answer = api.call("POST", f"/api/v1/polls/{name}/votes", body)
        if status != 202:
            raise SmokeFailure(f"a vote was refused: {status} {answer}")
    print(f"{len(VOTES)} votes accepted", flush=True)

    status, answer = api.call("POST", f"/api/v1/polls/{name}/close", admin=True)
    if status != 200:
        raise SmokeFailure(f"closing: {status} {answer}")

    # The two sinks store at their own pace: wait for both. Each vote hides among exactly one
    # fake ballot (the manifest's noise), so the ballot sink is done at two ballots a vote.
    ballots = 2 * len(VOTES)
    seen: dict[str, Any] = {}

    def stored() -> dict[str, Any] | None:
        status, results = api.call("GET", f"/api/v1/polls/{name}/results", admin=True)
        if status != 200:
            raise SmokeFailure(f"results: {status} {results}")
        found: dict[str, Any] = results
        seen.update(found["votes"])
        done = found["votes"]["total"] >= len(VOTES) and found["votes"]["storedBallots"] >= ballots
        return found if done else None

    try:
        results = wait_for(stored, "the sinks to store the votes", timeout)
    except SmokeFailure as error:
        raise SmokeFailure(
            f"{error}: the voter sink stored {seen.get('total')} of {len(VOTES)} votes, the "
            f"ballot sink {seen.get('storedBallots')} of {ballots} ballots (are both sink pods "
            "running?)"
        ) from error
    if results["phase"] != "Closed":
        raise SmokeFailure(f"the poll is {results['phase']}, not Closed")
    if results["votes"] != {
        "total": len(VOTES),
        "uniqueVoters": len(VOTES),
        "storedBallots": ballots,
        "duplicates": 0,
    }:
        raise SmokeFailure(f"expected {len(VOTES)} votes in {ballots} ballots: {results['votes']}")
    print(f"results: {json.dumps(results['votes'])}", flush=True)
    return results


def namespace_from_env() -> str:
    if os.environ.get("PRIVPOLL_NAMESPACE"):
        return os.environ["PRIVPOLL_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return "default"


def remove(namespace: str, name: str, timeout: float = 60) -> SmokeFailure | None:
    """Delete the Poll and wait until the operator's finalizer let it go, so that the test
    leaves nothing behind; what went wrong, if anything."""
    polls: Any = client.CustomObjectsApi()

    def gone() -> bool | None:
        try:
            polls.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return True
            raise SmokeFailure(f"cannot read Poll {name}: {error.reason}") from error
        return None

    try:
        polls.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        wait_for(gone, f"the operator to remove Poll {name} (is the operator running?)", timeout)
    except ApiException as error:
        if error.status != 404:
            return SmokeFailure(f"could not delete Poll {name}: {error.reason}")
    except SmokeFailure as error:
        return error
    return None


def main() -> int:
    base = os.environ.get("PRIVPOLL_URL", "")
    token = os.environ.get("PRIVPOLL_ADMIN_TOKEN", "")
    if not base or not token:
        print("set PRIVPOLL_URL and PRIVPOLL_ADMIN_TOKEN", file=sys.stderr)
        return 2
    namespace = namespace_from_env()
    name = f"smoke-{secrets.token_hex(4)}"
    cluster.load_config()
    failure: SmokeFailure | None = None
    try:
        run(Api(base, token), namespace, name)
    except SmokeFailure as error:
        failure = error
    finally:
        left = remove(namespace, name)
    failure = failure or left
    if failure is not None:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    print("privpoll works: a poll was created, voted in, closed, counted and deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
