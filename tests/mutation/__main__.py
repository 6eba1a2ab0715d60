"""``make mutate``: mutation testing of the modules that keep votes private and whole.

mutmut (3.x) changes one thing at a time in the code (a ``<`` into ``<=``, a constant, a call
dropped...) and runs the tests that reach that code: a mutant that no test notices
("survived") is a protection whose loss would go unseen. mutmut looks for the package in
``src/``, while privpoll lives in ``services/``: the run works on a copy laid out its way in
``build/mutate`` (the work tree is never changed), and leaves its verdicts in
``build/mutate/mutants`` and a summary in ``docs/mutation.json``.

``python -m tests.mutation [GLOB ...]`` runs only the mutants whose names match (e.g.
``'privpoll.core.tokens.*'``); with none, every mutant of the modules below. A second run keeps
the verdicts of the mutants caught before and tries the others again (``rm -rf build/mutate``
starts afresh).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from privpoll.local.embedded import PostgresServer
from tests.integration.conftest import RUNNING_POSTGRES

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "build" / "mutate"
SUMMARY = ROOT / "docs" / "mutation.json"

# What is mutated: the privacy- and integrity-critical code, by mutant name (module, then
# function or class method). In storage.py the vote tables' writes, the transaction helper and
# the tallies (not the poll rows' bookkeeping); in remix.py all but the Watcher's loop; in
# workers/mixing.py the whole mixing rule; in sinks.py and ballot_box.py only what applies
# it and the reservation: the rest is NATS and
# process plumbing that the pipeline and fault suites cover through ``privpoll up``.
MUTANTS = [
    "privpoll.core.tokens.*",
    "privpoll.core.noise.*",
    "privpoll.core.envelope.*",
    "privpoll.core.results.*",
    "privpoll.db.storage.x_run_transaction*",
    "privpoll.db.storage.x__write*",
    "privpoll.db.storage.x__copy_*",
    "privpoll.db.storage.x_write_*",
    "privpoll.db.storage.x_tally*",
    "privpoll.db.storage.x_voted*",
    "privpoll.db.remix.x_*",
    "privpoll.db.remix.xǁRemixedǁ*",
    "privpoll.workers.sinks.xǁBatchǁ*",
    "privpoll.workers.sinks.xǁPollSinkǁcapacity*",
    "privpoll.workers.mixing.*",
    "privpoll.workers.sinks.xǁPollSinkǁ_take*",
    "privpoll.workers.sinks.xǁPollSinkǁ_consume*",
    "privpoll.bus.ballot_box.xǁBallotBoxǁ_reserve*",
    "privpoll.bus.ballot_box.xǁBallotBoxǁcast*",
    "privpoll.bus.ballot_box.xǁBallotBoxǁ_kv_write*",
    "privpoll.bus.ballot_box.xǁBallotBoxǁ_release*",
]
FILES = [
    "core/tokens",
    "core/noise",
    "core/envelope",
    "core/results",
    "db/storage",
    "db/remix",
    "workers/mixing",
    "workers/sinks",
    "bus/ballot_box",
]
# The tests that run against the mutants: the pure core's, and the fast integration tests
# that call the mutated code in the test's own process (real NATS and PostgreSQL).
TESTS = [
    "tests/unit/test_tokens.py",
    "tests/unit/test_noise.py",
    "tests/unit/test_draws.py",
    "tests/unit/test_envelope.py",
    "tests/unit/test_results.py",
    "tests/unit/test_margin.py",
    "tests/unit/test_remix.py",
    "tests/unit/test_remix_chunks.py",
    "tests/unit/test_mixing.py",
    "tests/integration/test_storage.py",
    "tests/integration/test_remix.py",
    "tests/integration/test_remix_chunks.py",
    "tests/integration/test_sink_mixing.py",
    "tests/integration/test_reservation.py",
]

# Statistical tests of thousands of simulated polls: 15 to 30 s each under mutmut, for every
# mutant of noise.py and results.py that the others let through. The known-answer tests hold
# the same formulas to exact values; these stay in make test.
SLOW = "not test_unbiased_with_honest_interval and not test_margin_predicts_the_spread"

CONFIG = f"""\
[tool.mutmut]
source_paths = ["src/privpoll"]
only_mutate = {json.dumps([f"src/privpoll/{name}.py" for name in FILES])}
pytest_add_cli_args_test_selection = {json.dumps(TESTS)}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q", "-k", {json.dumps(SLOW)}]
# The tests start servers and threads: fork each mutant's run from a clean server process.
process_isolation = "forkserver"
use_git_change_detection = false

[tool.pytest.ini_options]
testpaths = ["tests"]
timeout = 600
"""


def stage() -> None:
    """The copy mutmut works on: ``src/privpoll`` and ``tests`` (its verdicts are kept)."""
    STAGE.mkdir(parents=True, exist_ok=True)
    for name, source in (("src/privpoll", "services/privpoll"), ("tests", "tests")):
        target = STAGE / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(
            ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    (STAGE / "pyproject.toml").write_text(CONFIG)


# mutmut's exit codes of a mutant the tests caught (failed, or ran out of time).
CAUGHT = {1, 3, 24, -24, 36, 152, 255}


def recheck(globs: list[str]) -> None:
    """Forget the verdict of every selected mutant the tests did not catch, so that this run
    tries it against the tests as they are now (the caught ones stay caught while their
    function is unchanged; mutmut itself redoes a changed function's)."""
    for meta in (STAGE / "mutants").rglob("*.py.meta"):
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        for name, code in codes.items():
            if code not in CAUGHT and any(fnmatch.fnmatchcase(name, g) for g in globs):
                codes[name] = None
        meta.write_text(json.dumps(data))


# A survivor whose only change is the case of SQL outside quoted literals: SQL keywords and
# unquoted names ignore case, so the statement is the same one (mutmut changes the case of
# every string it finds).
SQL = re.compile(
    r"\b(select|insert|update|delete|vacuum|copy|from|where|returning|conflict)\b", re.I
)
QUOTED = re.compile(r"'[^']*'")


def sql_case_only(before: str, after: str) -> bool:
    return (
        before != after
        and before.lower() == after.lower()
        and QUOTED.findall(before) == QUOTED.findall(after)
        and SQL.search(before) is not None
    )


def change(name: str) -> tuple[str, str]:
    """The lines a mutant removes and adds, from ``mutmut show``."""
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name],
        cwd=STAGE,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.splitlines()
    removed = "\n".join(x[1:] for x in lines if x.startswith("-") and not x.startswith("---"))
    added = "\n".join(x[1:] for x in lines if x.startswith("+") and not x.startswith("+++"))
    return removed, added


def summarize(globs: list[str]) -> dict[str, object]:
    """The verdict of every mutant the run was asked for; each one not caught with its
    change, and marked equivalent when it is a case change of SQL."""
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=STAGE,
        capture_output=True,
        text=True,
        check=True,
    )
    verdicts: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name and any(fnmatch.fnmatchcase(name, g) for g in globs):
            verdicts[name] = status
    by_module: dict[str, Counter[str]] = {}
    left: dict[str, dict[str, str]] = {}
    for name, status in sorted(verdicts.items()):
        module = name.split(".")[-2]  # privpoll.PACKAGE.MODULE.FUNCTION__mutmut_N
        if status in ("survived", "no tests", "suspicious"):
            removed, added = change(name)
            if sql_case_only(removed, added):
                status = "equivalent (case of SQL)"
            else:
                left[name] = {"verdict": status, "removed": removed, "added": added}
        by_module.setdefault(module, Counter())[status] += 1
    return {
        "tool": "mutmut",
        "mutants": len(verdicts),
        "verdicts": dict(Counter(v for c in by_module.values() for v in c.elements())),
        "by_module": {m: dict(c) for m, c in sorted(by_module.items())},
        "left": left,
    }


def main(globs: list[str]) -> int:
    stage()
    recheck(globs or MUTANTS)
    # One PostgreSQL for every test run (each mutant's is a new pytest session, which would
    # otherwise make and start a cluster of its own).
    server = PostgresServer(STAGE / "postgres")
    server.start()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", "2", *(globs or MUTANTS)],
            cwd=STAGE,
            env={**os.environ, RUNNING_POSTGRES: str(server.data_dir)},
            check=False,
        )
    finally:
        server.stop()
    summary = summarize(globs or MUTANTS)
    SUMMARY.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "left"}, indent=2))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
