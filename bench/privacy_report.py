"""``make privacy-report``: what a database thief learns, measured, beside what it costs.

One run on this machine: an embedded nats-server and PostgreSQL under ``privpoll up``; 1,000
voters and 3 choices (half, three tenths and a fifth of the votes), cast over HTTP into one poll
per noise setting at once, while a recorder per poll (``privpoll audit --record``) copies the
poll's rows after every commit. After the close and the re-mixer, the linkage attacker
(``privpoll.linkage``) reads each series of copies; the same workload runs through two
baselines (``bench.baselines``) against the same PostgreSQL, with a copy after every commit.

Writes docs/privacy.json (every figure), docs/privacy.png (attacker accuracy against the
error of the results) and the table between the markers of docs/privacy.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import baselines
from privpoll.audit import files, linkage, thief
from privpoll.audit.linkage import NoiseModel
from privpoll.core import noise
from privpoll.core.spec import PollRules
from privpoll.db import storage
from privpoll.local.embedded import PostgresServer, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs"
ADMIN = "privacy-report-admin"
CHOICES = ["pizza", "sushi", "tacos"]
BEGIN, END = "<!-- privacy-report:begin -->", "<!-- privacy-report:end -->"
THIEVES = ("<!-- privacy-thieves:begin -->", "<!-- privacy-thieves:end -->")


@dataclass(frozen=True)
class Setting:
    name: str
    noise: dict[str, Any]
    mixing: dict[str, Any]
    note: str = ""

    def rules(self) -> PollRules:
        body: dict[str, Any] = {"title": self.name, "choices": CHOICES, "mixing": self.mixing}
        if self.noise:
            body["noise"] = self.noise
        return PollRules.model_validate(body)

    @property
    def label(self) -> str:
        rules = self.rules()
        fakes = rules.noise.fake_votes
        if fakes.distribution == "fixed":
            parts = ["no fake ballots" if not fakes.count else f"K = {fakes.count}"]
        elif fakes.distribution == "poisson":
            parts = [f"K ~ {fakes.min}+Poisson({(fakes.mean or 0) - fakes.min:g})"]
        else:
            parts = [f"K ~ uniform {fakes.min}..{fakes.max}"]
        rr = rules.noise.randomized_response
        if rr is not None:
            eps = noise.epsilon(rules.replacement_probability(), len(CHOICES)) or 0.0
            parts.append(f"ε = {eps:.2g}")
        if rules.mixing.min_batch == 1:
            parts.append("no mixing (minBatch 1)")
        if self.note:
            parts.append(self.note)
        prefix = "privpoll defaults" if self.name == "default" else "privpoll"
        return f"{prefix}: {', '.join(parts)}"


MIXING = {"minBatch": 10, "maxWait": "1s"}
SETTINGS = [
    Setting("default", {}, MIXING),
    Setting(
        "fakes",
        {"fakeVotes": {"distribution": "poisson", "mean": 2, "min": 1}},
        MIXING,
        "no randomized response (the earlier default)",
    ),
    Setting("fakes-3", {"fakeVotes": {"distribution": "poisson", "mean": 3, "min": 1}}, MIXING),
    Setting(
        "fake-rr",
        {
            "fakeVotes": {"distribution": "fixed", "count": 1},
            "randomizedResponse": {"epsilon": 2.0},
        },
        MIXING,
    ),
    Setting(
        "rr",
        {
            "fakeVotes": {"distribution": "fixed", "count": 0, "min": 0},
            "randomizedResponse": {"epsilon": 1.4},
        },
        MIXING,
    ),
    Setting(
        "unmixed",
        {"fakeVotes": {"distribution": "poisson", "mean": 2, "min": 1}},
        {"minBatch": 1, "maxWait": "100ms"},
    ),
]


def workload(voters: int, seed: int) -> list[tuple[str, str]]:
    """(voter, true choice) in the order they vote: 50% / 30% / 20%."""
    rng = random.Random(seed)
    names = [f"voter-{i:04d}" for i in range(voters)]
    shares = [
        CHOICES[0] if i % 10 < 5 else CHOICES[1] if i % 10 < 8 else CHOICES[2]
        for i in range(voters)
    ]
    rng.shuffle(shares)
    return list(zip(names, shares, strict=True))


@contextlib.contextmanager
def running(root: Path) -> Iterator[tuple[str, str]]:
    """``privpoll up`` with its own nats-server and PostgreSQL under ``root / "data"``, as a
    user runs it (the file-level thief copies that folder); yields (base url, database url)."""
    port = free_port()
    env = {
        **os.environ,
        "PRIVPOLL_DATA_DIR": str(root / "data"),
        "PRIVPOLL_HTTP_ADDR": f"127.0.0.1:{port}",
        "PRIVPOLL_ADMIN_TOKEN": ADMIN,
        "PRIVPOLL_LOG_LEVEL": "WARNING",
    }
    with (root / "up.log").open("ab") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "privpoll", "up"], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            if up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((root / "up.log").read_text())
            time.sleep(0.2)
        yield url, PostgresServer(root / "data" / "postgres").dsn
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)


def steal_files(folder: Path) -> dict[str, Any]:
    """``privpoll audit --files`` on a copied data folder, as JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "privpoll", "audit", "--files", str(folder), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    found: dict[str, Any] = json.loads(done.stdout)
    found.pop("folder", None)  # a temporary folder of this machine: nothing to keep
    return found


def recorder(dsn: str, directory: Path, poll: str) -> subprocess.Popen[bytes]:
    """``privpoll audit --record`` for one poll, in its own process (a thief's replica)."""
    env = {**os.environ, "PRIVPOLL_DATABASE_URL": dsn}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privpoll",
            "audit",
            poll,
            "--record",
            str(directory),
            "--interval",
            "0.02",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def vote_all(url: str, poll: str, votes: Sequence[tuple[str, str]], per_second: float) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        tokens = {
            i["voter"]: i["token"]
            for i in http.get(f"/api/v1/polls/{poll}/invitations", headers=admin).json()
        }
        start = time.monotonic()
        for n, (voter, choice) in enumerate(votes):
            body = {"voter": voter, "token": tokens[voter], "choice": choice}
            while http.post(f"/api/v1/polls/{poll}/votes", json=body).status_code != 202:
                time.sleep(0.5)
            pause = start + (n + 1) / per_second - time.monotonic()
            if pause > 0:
                time.sleep(pause)


def wait_purged(dsn: str, polls: Sequence[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    with storage.connect(dsn) as conn:
        while True:
            rows = conn.execute("SELECT name FROM polls WHERE purged").fetchall()
            if set(polls) <= {r[0] for r in rows}:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all polls were remixed in {timeout:.0f}s")
            time.sleep(0.5)


def error_of(results: dict[str, Any], truth: Counter[str], voters: int) -> tuple[float, float]:
    """(largest 95% half-width, largest actual error), both as a share of the voters."""
    half = max((c["ci95"][1] - c["ci95"][0]) / 2 for c in results["choices"])
    off = max(abs(c["estimate"] - truth[c["choice"]]) for c in results["choices"])
    return half / voters, off / voters


def measure(found: linkage.Inference, truth: dict[str, str]) -> dict[str, Any]:
    return {
        "actorCommits": found.actor_commits,
        "ballotCommits": found.ballot_commits,
        "snapshots": found.snapshots,
        "largestPosterior": round(found.largest_posterior, 4),
        "exposed": found.exposed,
        "accuracy": round(found.accuracy(truth), 4),
        "posteriorOnTruth": round(found.posterior_on(truth), 4),
        "expectedAccuracy": round(found.expected_accuracy, 4),
        "priorAccuracy": round(found.prior_accuracy_on(truth), 4),
    }


def run(voters: int, per_second: float, seed: int) -> dict[str, Any]:
    votes = workload(voters, seed)
    truth = dict(votes)
    counts = Counter(truth.values())
    started = time.monotonic()
    figures: dict[str, Any] = {
        "voters": voters,
        "choices": CHOICES,
        "truth": {c: counts[c] for c in CHOICES},
        "votesPerSecond": per_second,
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="privpoll-privacy-") as tmp:
        root = Path(tmp)
        with running(root) as (url, dsn):
            admin = {"Authorization": f"Bearer {ADMIN}"}
            names = [v for v, _ in votes]
            for setting in SETTINGS:
                spec: dict[str, Any] = {
                    "title": setting.label,
                    "choices": CHOICES,
                    "voters": {"ids": names},
                    "mixing": setting.mixing,
                }
                if setting.noise:
                    spec["noise"] = setting.noise
                created = httpx.post(
                    f"{url}/api/v1/polls",
                    json={"name": setting.name, "spec": spec},
                    headers=admin,
                    timeout=30,
                )
                created.raise_for_status()
            recorders = [recorder(dsn, root / "snapshots" / s.name, s.name) for s in SETTINGS]
            threads = [
                threading.Thread(target=vote_all, args=(url, s.name, votes, per_second))
                for s in SETTINGS
            ]
            for thread in threads:
                thread.start()
            # A thief copies the whole data folder halfway through the voting.
            time.sleep(voters / per_second / 2)
            copied_during = files.copy_running(root / "data", root / "stolen-during")
            for thread in threads:
                thread.join()
            for setting in SETTINGS:
                httpx.post(
                    f"{url}/api/v1/polls/{setting.name}/close", headers=admin, timeout=30
                ).raise_for_status()
            wait_purged(dsn, [s.name for s in SETTINGS])
            copied_after = files.copy_running(root / "data", root / "stolen-after")
            time.sleep(1)  # the recorders see the rewrite too
            for process in recorders:
                process.send_signal(signal.SIGINT)
                process.wait(300)  # a loaded machine: the last copy may take long
            figures["votingSeconds"] = round(time.monotonic() - started, 1)
            for setting in SETTINGS:
                dumps = thief.load(root / "snapshots" / setting.name, setting.name)
                during, spec_model = thief.inference(setting.name, dumps)
                after, _ = thief.inference(setting.name, dumps[-1:])
                results = httpx.get(f"{url}/api/v1/polls/{setting.name}/results", timeout=30).json()
                half, off = error_of(results, counts, voters)
                rules = spec_model
                p = rules.replacement_probability()
                odds = 1 + len(CHOICES) * (1 - p) / p if p else math.inf
                figures["rows"].append(
                    {
                        "design": "privpoll",
                        "setting": setting.name,
                        "label": setting.label,
                        "fakeBallotsPerVote": rules.noise.fake_votes.expected,
                        "epsilon": results["epsilon"],
                        "bound": None if p == 0 else round(odds / (odds + len(CHOICES) - 1), 4),
                        "minBatch": rules.mixing.min_batch,
                        "ci95HalfWidth": round(half, 4),
                        "error": round(off, 4),
                        "snapshotsDuringVoting": measure(during, truth),
                        "afterRemixOnly": measure(after, truth),
                    }
                )
            with storage.connect(dsn) as conn:
                designs: list[tuple[baselines.Design, str]] = [
                    ("single", "(a) one table (voter, choice)"),
                    ("limesurvey", "(b) LimeSurvey-style split, auto-increment ids"),
                ]
                for design, label in designs:
                    snapshots = baselines.run(conn, design, f"baseline_{design}", names, votes)
                    found = linkage.attack(snapshots, NoiseModel.no_noise(CHOICES))
                    figures["rows"].append(
                        {
                            "design": design,
                            "setting": design,
                            "label": label,
                            "fakeBallotsPerVote": 0,
                            "epsilon": None,
                            "bound": None,
                            "minBatch": 1,
                            "ci95HalfWidth": 0.0,
                            "error": 0.0,
                            "snapshotsDuringVoting": measure(found, truth),
                            "afterRemixOnly": None,
                        }
                    )
        figures["files"] = {
            "during": steal_files(copied_during),
            "afterPurge": steal_files(copied_after),
        }
    figures["seconds"] = round(time.monotonic() - started, 1)
    figures["generated"] = datetime.now(UTC).strftime("%Y-%m-%d")
    return figures


def table(figures: dict[str, Any]) -> str:
    lines = [
        "| design, noise | ε | 95% interval ± | actual error | commits told apart "
        "| largest posterior | exposed with certainty | attacker accuracy "
        "| after the re-mixer: largest posterior |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in figures["rows"]:
        seen = row["snapshotsDuringVoting"]
        after = row["afterRemixOnly"]
        eps = "—" if row["epsilon"] is None else f"{row['epsilon']:.2f}"
        if row["bound"] is not None:
            eps += f" (≤ {row['bound']:.2f})"
        lines.append(
            f"| {row['label']} | {eps} "
            f"| {row['ci95HalfWidth']:.1%} | {row['error']:.1%} "
            f"| {seen['actorCommits']} + {seen['ballotCommits']} "
            f"| {seen['largestPosterior']:.3f} | {seen['exposed']} | {seen['accuracy']:.1%} "
            f"| {'—' if after is None else format(after['largestPosterior'], '.3f')} |"
        )
    prior = figures["rows"][0]["snapshotsDuringVoting"]["priorAccuracy"]
    shares = ", ".join(f"{c} {n}" for c, n in figures["truth"].items())
    lines.append("")
    lines.append(
        f"{figures['voters']:,} voters, 3 choices ({shares}), {figures['votesPerSecond']:g} "
        f"votes a second into each poll, minBatch 10 and maxWait 1s unless said otherwise; "
        f"a copy of the tables after every commit. Guessing every voter's choice from the "
        f"published results alone is right {prior:.0%} of the time. Interval and error: the "
        f"largest over the choices, as a share of the voters. ε (≤ bound): the largest "
        f"posterior randomized response allows under a uniform prior. Measured "
        f"{figures['generated']} by `make privacy-report` in {figures['seconds']:.0f} s."
    )
    return "\n".join(lines)


def _sum(report: dict[str, Any], field: str) -> int:
    return sum(int(p[field]) for p in report["polls"])


def _any(report: dict[str, Any], field: str) -> int:
    return sum(1 for p in report["polls"] if p[field])


def thieves(figures: dict[str, Any]) -> str:
    """The table of thieves: who holds what, and what each learned in this run."""
    default = figures["rows"][0]["snapshotsDuringVoting"]
    after_remix = figures["rows"][0]["afterRemixOnly"]
    during, after = figures["files"]["during"], figures["files"]["afterPurge"]
    polls = len(during["polls"])
    lines = [
        "| thief | holds | learns (measured in this run) |",
        "| --- | --- | --- |",
        f"| SQL snapshots | the vote tables with `xmin`/`ctid`, a copy after every commit "
        f"| nobody exposed with certainty ({default['exposed']}); best guess right "
        f"{default['accuracy']:.1%} against {default['priorAccuracy']:.1%} from the results "
        f"alone (defaults); after the re-mix: one `xmin`, largest posterior "
        f"{after_remix['largestPosterior']:.3f} |",
        f"| the database's files with WAL, copied during voting | heap, free space, indexes, "
        f"`pg_wal` | {during['walVoteTransactions']} sink transactions with "
        f"{during['walCommitTimes']} commit times and {_sum(during, 'walRows')} row ids of "
        f"{polls} polls in the WAL: what a snapshot after every commit gives (the row above) |",
        f"| the database's files with WAL, copied after `purgedAt` | the same "
        f"| {after['walVoteTransactions']} sink transactions in the WAL; "
        f"{_sum(after, 'oldHeapVersions')} old row versions, "
        f"{_sum(after, 'oldFreeSpaceTuples')} old tuples in free space, "
        f"{_sum(after, 'oldIndexEntries')} old index entries, "
        f"{_sum(after, 'oldWalRows')} old rows in the WAL: the re-mixed rows only |",
        f"| the whole data folder with the queue, copied during voting | the above and the "
        f"NATS store (encrypted; its key is in the secrets folder) "
        f"| {_sum(during, 'readableEnvelopes')} readable envelopes, "
        f"{_sum(during, 'readableVoterKeys')} readable voter keys; that {_any(during, 'stream')}"
        f" of {polls} polls have a stream |",
        f"| the whole data folder with the queue, copied after `purgedAt` | the same "
        f"| {_any(after, 'stream')} streams, {_any(after, 'votersBucket')} voters buckets; "
        f"nothing of the polls beyond their re-mixed rows |",
        "| the whole data folder with the secrets folder, before the purge | everything "
        "above and the keys | the envelopes still waiting, and acknowledged ones whose "
        "block files were not yet compacted, whole (the voter beside its ballots); can forge "
        "invitations of open polls. Not measured: the secrets folder is what to protect |",
        "| backups taken before the purge | what the copy held when it was taken "
        "| as the matching row above; privpoll cannot reach them (not measured) |",
        "| whoever runs the ingest, NATS or the database server | the processes | every "
        "vote as it arrives: no promise holds (not measured) |",
    ]
    return "\n".join(lines)


def plot(figures: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 6.2), dpi=100)
    prior = figures["rows"][0]["snapshotsDuringVoting"]["priorAccuracy"]
    colors = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#d62728",
        "#7f7f7f",
    ]
    for number, row in enumerate(figures["rows"]):
        seen = row["snapshotsDuringVoting"]
        x = row["ci95HalfWidth"] * 100
        baseline = row["design"] != "privpoll"
        style = {
            "s": 60,
            "marker": ("s", "D")[number % 2] if baseline else "o",
            "color": colors[number % len(colors)],
            "edgecolor": "black" if row["setting"] == "default" else "none",
        }
        left.scatter([x], [seen["accuracy"] * 100], label=row["label"], **style)
        right.scatter([x], [seen["largestPosterior"]], **style)
        after = row["afterRemixOnly"]
        if after is not None:
            left.scatter([x], [after["accuracy"] * 100], s=22, marker="x", color=style["color"])
            right.scatter([x], [after["largestPosterior"]], s=22, marker="x", color=style["color"])
    left.axhline(prior * 100, ls="--", lw=1, color="#7f7f7f")
    left.text(0.1, prior * 100 + 1.2, "guessing from the published results", fontsize=8)
    left.set_ylabel("attacker accuracy, % of voters")
    left.set_ylim(min(prior * 100, 40) - 5, 104)
    right.axhline(1.0, ls="--", lw=1, color="#c0392b")
    right.text(0.1, 0.975, "certain", fontsize=8, color="#c0392b")
    right.set_ylabel("largest posterior of any voter")
    right.set_ylim(0.3, 1.04)
    for ax in (left, right):
        ax.axvline(6, ls=":", lw=1, color="#999999")
        ax.set_xlabel("error of the results: 95% interval ±, % of voters")
        ax.set_xlim(-0.5, max(9.0, max(r["ci95HalfWidth"] * 100 for r in figures["rows"]) + 2))
        ax.grid(alpha=0.25)
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(
        f"What a database thief learns with a copy after every commit: {figures['voters']:,} "
        "voters, 3 choices (dots: copies during voting; crosses: the database after the "
        "re-mixer alone)",
        fontsize=9.5,
    )
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def write_doc(figures: dict[str, Any], path: Path) -> None:
    text = path.read_text()
    for (begin, end), made in ((THIEVES, thieves(figures)), ((BEGIN, END), table(figures))):
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{made}\n{end}{tail}"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--voters", type=int, default=1000)
    parser.add_argument("--per-second", type=float, default=20.0, help="votes per second per poll")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=DOCS)
    parser.add_argument("--plot-only", action="store_true", help="redraw from privacy.json")
    args = parser.parse_args()
    if args.plot_only:
        figures = json.loads((args.out / "privacy.json").read_text())
        plot(figures, args.out / "privacy.png")
        return
    figures = run(args.voters, args.per_second, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "privacy.json").write_text(json.dumps(figures, indent=2) + "\n")
    plot(figures, args.out / "privacy.png")
    write_doc(figures, args.out / "privacy.md")
    print(thieves(figures))
    print(table(figures))
    print(f"wrote {args.out / 'privacy.json'}, privacy.png and the table in privacy.md")


if __name__ == "__main__":
    main()
