"""``make mutate``: mutation testing of the modules that keep votes private and whole.

mutmut (3.x) changes one thing at a time in the code (a ``<`` into ``<=``, a constant, a call
dropped...) and runs the tests that reach that code: a mutant that no test notices
("survived") is a protection whose loss would go unseen. mutmut looks for the package in
``src/``, while privpoll lives in ``services/``: the run works on a copy laid out its way in
``build/mutate`` (the work tree is never changed), and leaves its verdicts in
``build/mutate/mutants`` and a summary in ``docs/mutation.json``.

``python -m tests.mutation [GLOB ...]`` runs only the mutants whose names match (e.g.
``'privpoll.tokens.*'``); with none, every mutant of the modules below.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "build" / "mutate"
SUMMARY = ROOT / "docs" / "mutation.json"

# What is mutated: the privacy- and integrity-critical code, by mutant name (module, then
# function or class method). In sinks.py and ballot_box.py only the mixing rule and the
# reservation: the rest is NATS plumbing that the fault suite covers.
MUTANTS = [
    "privpoll.tokens.*",
    "privpoll.noise.*",
    "privpoll.envelope.*",
    "privpoll.results.*",
    "privpoll.storage.*",
    "privpoll.remix.*",
    "privpoll.sinks.xǁBatchǁ*",
    "privpoll.sinks.xǁPollSinkǁcapacity*",
    "privpoll.sinks.xǁPollSinkǁ_due*",
    "privpoll.sinks.xǁPollSinkǁ_take*",
    "privpoll.sinks.xǁPollSinkǁ_consume*",
    "privpoll.ballot_box.xǁBallotBoxǁ_reserve*",
    "privpoll.ballot_box.xǁBallotBoxǁcast*",
]
FILES = ["tokens", "noise", "envelope", "results", "storage", "remix", "sinks", "ballot_box"]
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
    "tests/integration/test_storage.py",
    "tests/integration/test_remix.py",
    "tests/integration/test_sink_mixing.py",
    "tests/integration/test_reservation.py",
]

CONFIG = f"""\
[tool.mutmut]
source_paths = ["src/privpoll"]
only_mutate = {json.dumps([f"src/privpoll/{name}.py" for name in FILES])}
pytest_add_cli_args_test_selection = {json.dumps(TESTS)}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]
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


def summarize() -> dict[str, object]:
    """Every mutant's verdict, and the survivors by name (``mutmut show NAME`` in STAGE)."""
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
        if name:
            verdicts[name] = status
    by_module: dict[str, Counter[str]] = {}
    for name, status in verdicts.items():
        module = name.split(".")[1]
        by_module.setdefault(module, Counter())[status] += 1
    return {
        "tool": "mutmut",
        "mutants": len(verdicts),
        "verdicts": dict(Counter(verdicts.values())),
        "by_module": {m: dict(c) for m, c in sorted(by_module.items())},
        "survived": sorted(n for n, s in verdicts.items() if s != "killed"),
    }


def main(globs: list[str]) -> int:
    stage()
    run = subprocess.run(
        [sys.executable, "-m", "mutmut", "run", "--max-children", "1", *(globs or MUTANTS)],
        cwd=STAGE,
        check=False,
    )
    summary = summarize()
    SUMMARY.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "survived"}, indent=2))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
