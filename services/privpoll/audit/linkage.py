"""The linkage attack: what a thief who copies the database learns about each voter's choice.

Pure: it takes what the thief saw, one or more snapshots of a poll's vote tables with the
hidden commit marker of every row (PostgreSQL ``xmin``, CockroachDB's MVCC timestamp), and
the poll's public noise spec, and returns every voter's posterior over the choices.

The thief knows how privpoll works (Kerckhoffs): both sinks read the same stream in the same
order and each commits a run of consecutive envelopes, so the k-th actor commit and the l-th
ballot commit overlap where their runs of the stream overlap. Rows that share a commit marker
across the two tables were written by one transaction and so hold the same envelopes (that is
how a LimeSurvey-style design falls). Rows are grouped into commits by their marker and by the
snapshot they first appeared in; the commits of each table are put in order; then the attacker
weighs every way the ballot commits can cut the stream (each envelope holds one real ballot and
K fake ones, K drawn from the public spec) and, within a commit, every way its ballots can be
real or fake. The result is the exact Bayesian posterior under that model; only commits of
more than ``EXACT_LIMIT`` ballots use a saddle-point approximation.

A voter is *exposed with certainty* when the posterior of one choice is at least ``CERTAIN``:
every reading of the data consistent with the mechanism gives that voter the same choice.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

from privpoll.core.results import estimate
from privpoll.core.spec import FakeVotes, PollRules

CERTAIN = 1 - 1e-9
# Commits of up to this many ballots get exact sums; larger ones the saddle-point formula.
EXACT_LIMIT = 400
# Ways to cut the stream less likely than e^-PRUNE times the likeliest are dropped.
PRUNE = 40.0
_NEG = -math.inf


@dataclass(frozen=True)
class Row:
    """One row as the thief reads it."""

    key: str
    value: str
    commit: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """One copy of a poll's rows: actors (value = voter) and ballots (value = choice).

    ``closed`` is what the polls table said: once a closed poll's sinks have drained, both
    tables hold the same envelopes, which pins where the last commits end.
    """

    actors: tuple[Row, ...]
    ballots: tuple[Row, ...]
    closed: bool = False


@dataclass(frozen=True)
class NoiseModel:
    """The public noise spec: fake-ballot count K, fake-choice weights, randomized response."""

    choices: tuple[str, ...]
    weights: tuple[float, ...]
    fake_votes: FakeVotes
    p: float = 0.0

    @classmethod
    def of(cls, rules: PollRules) -> NoiseModel:
        return cls(
            choices=tuple(rules.choices),
            weights=tuple(rules.fake_weights()),
            fake_votes=rules.noise.fake_votes,
            p=rules.replacement_probability(),
        )

    @classmethod
    def no_noise(cls, choices: Sequence[str]) -> NoiseModel:
        """A system that stores each vote as it is (the baselines)."""
        m = len(choices)
        return cls(
            choices=tuple(choices),
            weights=(1 / m,) * m,
            fake_votes=FakeVotes(distribution="fixed", count=0, min=0),
        )

    def log_fakes(self, envelopes: int, fakes: int) -> float:
        """log P(the ``envelopes`` envelopes of a commit hold ``fakes`` fake ballots in all)."""
        return _log_fake_total(self.fake_votes, envelopes, fakes)

    def max_fakes(self) -> int | None:
        spec = self.fake_votes
        if spec.distribution == "fixed":
            return spec.count
        if spec.distribution == "uniform":
            return spec.max
        return None


@dataclass(frozen=True)
class Finding:
    """The attacker's posterior over the choices for one vote (one actor row)."""

    voter: str
    posterior: tuple[float, ...]

    @property
    def largest(self) -> float:
        return max(self.posterior)

    @property
    def guess(self) -> int:
        return max(range(len(self.posterior)), key=self.posterior.__getitem__)


@dataclass(frozen=True)
class Inference:
    """What the attack concluded for one poll."""

    choices: tuple[str, ...]
    prior: tuple[float, ...]
    findings: tuple[Finding, ...]
    snapshots: int
    epoch: int
    actor_commits: int
    ballot_commits: int
    aligned: bool = True
    notes: tuple[str, ...] = field(default=())

    def per_voter(self) -> dict[str, Finding]:
        """The most revealing finding of each voter (a voter has several in ``detect`` mode)."""
        best: dict[str, Finding] = {}
        for finding in self.findings:
            if finding.voter not in best or finding.largest > best[finding.voter].largest:
                best[finding.voter] = finding
        return best

    @property
    def largest_posterior(self) -> float:
        return max((f.largest for f in self.findings), default=0.0)

    @property
    def exposed(self) -> int:
        """Voters whose choice the attacker knows with certainty."""
        return sum(1 for f in self.per_voter().values() if f.largest >= CERTAIN)

    @property
    def expected_accuracy(self) -> float:
        """How often the attacker's best guess is right, by its own (calibrated) posterior."""
        found = self.per_voter().values()
        return sum(f.largest for f in found) / len(found) if found else 0.0

    @property
    def prior_accuracy(self) -> float:
        """The same for a guess from the published results alone: the likeliest choice."""
        return max(self.prior, default=0.0)

    def accuracy(self, truth: Mapping[str, str]) -> float:
        """Share of voters (of those in ``truth``) whose choice the best guess names."""
        found = [(f, truth[v]) for v, f in self.per_voter().items() if v in truth]
        if not found:
            return 0.0
        return sum(1 for f, c in found if self.choices[f.guess] == c) / len(found)

    def posterior_on(self, truth: Mapping[str, str]) -> float:
        """Mean probability the attacker gives each voter's true choice."""
        index = {c: i for i, c in enumerate(self.choices)}
        found = [f.posterior[index[truth[v]]] for v, f in self.per_voter().items() if v in truth]
        return sum(found) / len(found) if found else 0.0

    def prior_accuracy_on(self, truth: Mapping[str, str]) -> float:
        """Share of those voters who picked the choice the published results make likeliest."""
        top = self.choices[max(range(len(self.prior)), key=self.prior.__getitem__)]
        voters = [v for v in self.per_voter() if v in truth]
        return sum(1 for v in voters if truth[v] == top) / len(voters) if voters else 0.0


def attack(
    snapshots: Sequence[Snapshot], model: NoiseModel, prior: Sequence[float] | None = None
) -> Inference:
    """Every voter's posterior, from the most revealing stretch of the snapshots.

    Snapshots are in the order they were taken. A stretch (an *epoch*) ends where rows vanish,
    as the re-mixer makes them do; each epoch is attacked on its own, since the rows after a
    rewrite are a fresh shuffle of the same votes, and the epoch whose commits the attacker
    told apart best is kept. The prior is what the latest snapshot lets anyone publish.
    """
    if not snapshots:
        raise ValueError("the attack needs at least one snapshot")
    pi = tuple(prior) if prior is not None else public_prior(model, snapshots[-1])
    best: Inference | None = None
    for number, epoch in enumerate(_epochs(snapshots)):
        found = _attack_epoch(epoch, model, pi, number, len(snapshots))
        told_apart = found.actor_commits + found.ballot_commits
        if best is None or told_apart >= best.actor_commits + best.ballot_commits:
            best = found
    assert best is not None
    return best


def public_prior(model: NoiseModel, final: Snapshot) -> tuple[float, ...]:
    """What anyone learns from the published results: the estimated share of each choice.

    Floored at half a vote, so that no choice is ruled out for anybody by the prior alone.
    """
    stored: dict[str, int] = defaultdict(int)
    for row in final.ballots:
        stored[row.value] += 1
    votes = len(final.actors)
    if votes == 0:
        return tuple(1 / len(model.choices) for _ in model.choices)
    rows = estimate(stored, model.choices, model.weights, votes, model.p)
    shares = [max(r.estimate, 0.5) for r in rows]
    total = sum(shares)
    return tuple(s / total for s in shares)


def _epochs(snapshots: Sequence[Snapshot]) -> list[list[Snapshot]]:
    epochs: list[list[Snapshot]] = [[snapshots[0]]]
    for before, after in itertools.pairwise(snapshots):
        kept = {r.key for r in after.actors} | {r.key for r in after.ballots}
        vanished = any(r.key not in kept for r in (*before.actors, *before.ballots))
        if vanished:
            epochs.append([after])
        else:
            epochs[-1].append(after)
    return epochs


@dataclass
class _Commit:
    order: tuple[int, int]
    marked: bool
    rows: list[Row]


def _commits(epoch: Sequence[Snapshot], table: str) -> list[_Commit]:
    """A table's rows grouped by (snapshot of first sight, commit marker), in that order."""
    first: dict[str, int] = {}
    for index, snapshot in enumerate(epoch):
        for row in getattr(snapshot, table):
            first.setdefault(row.key, index)
    groups: dict[tuple[int, int], list[Row]] = defaultdict(list)
    marked: dict[tuple[int, int], bool] = {}
    for row in getattr(epoch[-1], table):
        order = (first[row.key], row.commit if row.commit is not None else -1)
        groups[order].append(row)
        marked[order] = row.commit is not None
    return [_Commit(order, marked[order], rows) for order, rows in sorted(groups.items())]


def _attack_epoch(
    epoch: Sequence[Snapshot],
    model: NoiseModel,
    pi: tuple[float, ...],
    number: int,
    snapshots: int,
) -> Inference:
    m = len(model.choices)
    index = {c: i for i, c in enumerate(model.choices)}
    final = epoch[-1]
    actors = _commits(epoch, "actors")
    ballots = _commits(epoch, "ballots")
    counts = []
    for commit in ballots:
        c = [0] * m
        for row in commit.rows:
            c[index[row.value]] += 1
        counts.append(tuple(c))
    sizes = [len(c.rows) for c in actors]
    channel = _Channel(model, pi)
    # A ballot commit that shares its marker with an actor commit was the same transaction.
    actor_at = {c.order: i for i, c in enumerate(actors) if c.marked}
    joint = [actor_at.get(c.order) if c.marked else None for c in ballots]
    notes: list[str] = []
    groups = None
    for complete in (True, False) if final.closed else (False,):
        groups = _align(sizes, counts, joint, channel, complete=complete)
        if groups is not None:
            break
    aligned = groups is not None
    if groups is None:
        notes.append(
            "the commits do not fit one run of the stream each (a sink restarted mid-batch, "
            "or snapshots are missing rows); every vote was treated as one group"
        )
        total = tuple(sum(c[j] for c in counts) for j in range(m))
        single = _Cell(total, channel)
        post = single.true_posterior(sum(sizes))
        groups = [post] * len(actors)
    findings = tuple(
        Finding(row.value, groups[g]) for g, commit in enumerate(actors) for row in commit.rows
    )
    return Inference(
        choices=model.choices,
        prior=pi,
        findings=findings,
        snapshots=snapshots,
        epoch=number,
        actor_commits=len(actors),
        ballot_commits=len(ballots),
        aligned=aligned,
        notes=tuple(notes),
    )


class _Channel:
    """The voter's true choice → the reported (real) ballot → what the commit shows."""

    def __init__(self, model: NoiseModel, prior: Sequence[float]) -> None:
        m = len(model.choices)
        self.model = model
        self.m = m
        self.prior = list(prior)
        self.reported = [(1 - model.p) * pj + model.p / m for pj in prior]
        # P(true = j | reported = r), for turning a posterior on the real ballot into one on
        # the voter's choice under randomized response.
        self.back = [
            [
                prior[j] * ((1 - model.p) * (j == r) + model.p / m) / self.reported[r]
                for j in range(m)
            ]
            for r in range(m)
        ]

    def to_true(self, reported: Sequence[float]) -> tuple[float, ...]:
        if self.model.p == 0:
            return tuple(reported)
        return tuple(
            sum(reported[r] * self.back[r][j] for r in range(self.m)) for j in range(self.m)
        )


class _Cell:
    """One ballot commit: its composition, and what it says for any envelope count E."""

    def __init__(self, counts: tuple[int, ...], channel: _Channel) -> None:
        self.counts = counts
        self.n = sum(counts)
        self.channel = channel
        w = channel.model.weights
        r = channel.reported
        # A ballot of choice k is real with odds r_k : w_k (per real vs fake ballot drawn).
        self.q = [r[k] / (r[k] + w[k]) for k in range(channel.m)]
        self.sum = _BinomialSum(counts, self.q)
        self.without = [
            _BinomialSum(tuple(c - (k == j) for k, c in enumerate(counts)), self.q)
            if counts[j] > 0
            else None
            for j in range(channel.m)
        ]
        self._post: dict[int, tuple[float, ...]] = {}

    def envelopes(self) -> range:
        """Envelope counts E the commit can hold at all."""
        model = self.channel.model
        low_k = model.fake_votes.lowest
        high_k = model.max_fakes()
        hi = self.n // (1 + low_k)
        lo = 1 if high_k is None else -(-self.n // (1 + high_k))
        return range(max(lo, 1), hi + 1)

    def loglik(self, e: int) -> float:
        """log P(this commit's ballot count and composition | it holds e envelopes), up to
        a term that does not depend on e."""
        if e < 1 or e > self.n:
            return _NEG
        fakes = self.n - e
        lf = self.channel.model.log_fakes(e, fakes)
        if lf == _NEG:
            return _NEG
        ls = self.sum.logpmf(e)
        if ls == _NEG:
            return _NEG
        return lf + math.lgamma(e + 1) + math.lgamma(fakes + 1) + ls

    def reported_posterior(self, e: int) -> tuple[float, ...]:
        """P(an envelope's real ballot shows choice j | it is one of the e in this commit)."""
        logs = []
        for j in range(self.channel.m):
            rest = self.without[j]
            if rest is None:
                logs.append(_NEG)
                continue
            r = self.channel.reported[j]
            w = self.channel.model.weights[j]
            ls = rest.logpmf(e - 1)
            logs.append(_NEG if ls == _NEG else math.log(r * self.counts[j] / (r + w)) + ls)
        return _normalize(logs)

    def true_posterior(self, e: int) -> tuple[float, ...]:
        found = self._post.get(e)
        if found is None:
            found = self._post[e] = self.channel.to_true(self.reported_posterior(e))
        return found


def _align(
    sizes: Sequence[int],
    counts: Sequence[tuple[int, ...]],
    joint: Sequence[int | None],
    channel: _Channel,
    *,
    complete: bool,
) -> list[tuple[float, ...]] | None:
    """Posterior per actor commit, over every way the ballot commits can cut the stream.

    Envelope positions 1..N; actor commit g covers (starts[g], starts[g+1]]; ballot commit l
    covers (B[l-1], B[l]] with E_l = B[l] - B[l-1] unknown. A forward-backward pass over the
    cut points B weighs each cut by how likely the commits' ballot counts and compositions are.
    ``complete`` says both tables end at the same envelope; otherwise either sink may be ahead.
    """
    total = sum(sizes)
    if total == 0:
        return []
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    cells = [_Cell(c, channel) for c in counts]
    options: list[list[tuple[int, float]]] = []
    for cell, tied in zip(cells, joint, strict=True):
        choices = [sizes[tied]] if tied is not None else list(cell.envelopes())
        found = [(e, cell.loglik(e)) for e in choices]
        options.append([(e, ll) for e, ll in found if ll != _NEG])
    end = total if complete else None
    for prune in (PRUNE, math.inf):
        result = _forward_backward(end, starts, cells, options, joint, channel, prune)
        if result is not None:
            return result
    return None


def _forward_backward(
    end: int | None,
    starts: Sequence[int],
    cells: Sequence[_Cell],
    options: Sequence[Sequence[tuple[int, float]]],
    joint: Sequence[int | None],
    channel: _Channel,
    prune: float,
) -> list[tuple[float, ...]] | None:
    layers = len(cells)
    forward: list[dict[int, float]] = [{0: 0.0}]
    for layer in range(layers):
        tied = joint[layer]
        step: dict[int, float] = {}
        for b, lb in forward[-1].items():
            if tied is not None and b != starts[tied]:
                continue
            for e, ll in options[layer]:
                cut = b + e
                if end is not None and cut > end:
                    continue
                step[cut] = _logadd(step.get(cut, _NEG), lb + ll)
        if not step:
            return None
        top = max(step.values())
        forward.append({b: v for b, v in step.items() if v >= top - prune})
    if end is not None and end not in forward[-1]:
        return None
    backward: list[dict[int, float]] = [{} for _ in range(layers + 1)]
    backward[layers] = {end: 0.0} if end is not None else dict.fromkeys(forward[-1], 0.0)
    for layer in range(layers - 1, -1, -1):
        tied = joint[layer]
        for b in forward[layer]:
            if tied is not None and b != starts[tied]:
                continue
            rest = _NEG
            for e, ll in options[layer]:
                tail = backward[layer + 1].get(b + e)
                if tail is not None:
                    rest = _logadd(rest, ll + tail)
            if rest != _NEG:
                backward[layer][b] = rest
    log_z = backward[0].get(0)
    if log_z is None:
        return None
    m = channel.m
    groups = len(starts) - 1
    sums = [[0.0] * m for _ in range(groups)]
    for layer in range(layers):
        cell = cells[layer]
        for b, lb in forward[layer].items():
            if b not in backward[layer]:
                continue
            for e, ll in options[layer]:
                tail = backward[layer + 1].get(b + e)
                if tail is None:
                    continue
                weight = math.exp(lb + ll + tail - log_z)
                if weight == 0.0:
                    continue
                post = cell.true_posterior(e)
                for g in _overlapping(starts, b, b + e):
                    share = (min(b + e, starts[g + 1]) - max(b, starts[g])) / (
                        starts[g + 1] - starts[g]
                    )
                    row = sums[g]
                    for j in range(m):
                        row[j] += weight * share * post[j]
    out = []
    for row in sums:
        # What is left is the chance that the voter's ballots are not stored yet.
        rest = max(1.0 - sum(row), 0.0)
        full = [v + rest * pj for v, pj in zip(row, channel.prior, strict=True)]
        mass = sum(full)
        out.append(tuple(v / mass for v in full))
    return out


def _overlapping(starts: Sequence[int], lo: int, hi: int) -> Iterable[int]:
    """Actor commits whose positions (starts[g], starts[g+1]] meet (lo, hi]."""
    g = bisect.bisect_right(starts, lo) - 1
    while g < len(starts) - 1 and starts[g] < hi:
        if starts[g + 1] > lo:
            yield g
        g += 1


class _BinomialSum:
    """S = Σ_k Binomial(c_k, q_k): how many of a commit's ballots are real, in a sense.

    P(S = s) carries the composition's likelihood: Σ over real counts R (R_k ≤ c_k, ΣR = s) of
    Π_k C(c_k, R_k) q_k^R_k (1-q_k)^(c_k-R_k).
    """

    def __init__(self, counts: Sequence[int], q: Sequence[float]) -> None:
        self.counts = tuple(counts)
        self.q = tuple(q)
        self.n = sum(counts)
        self._table: list[float] | None = None
        if self.n <= EXACT_LIMIT:
            self._table = self._exact()

    def _exact(self) -> list[float]:
        table = [0.0]
        for c, q in zip(self.counts, self.q, strict=True):
            if c == 0:
                continue
            binom = [
                _log_binom(c, k) + k * math.log(q) + (c - k) * math.log1p(-q) for k in range(c + 1)
            ]
            merged = [_NEG] * (len(table) + c)
            for i, a in enumerate(table):
                if a == _NEG:
                    continue
                for k, b in enumerate(binom):
                    merged[i + k] = _logadd(merged[i + k], a + b)
            table = merged
        return table

    def logpmf(self, s: int) -> float:
        if s < 0 or s > self.n:
            return _NEG
        if self._table is not None:
            return self._table[s]
        return self._saddle(s)

    def _saddle(self, s: int) -> float:
        pairs = [(c, q) for c, q in zip(self.counts, self.q, strict=True) if c > 0]
        if s == 0:
            return sum(c * math.log1p(-q) for c, q in pairs)
        if s == self.n:
            return sum(c * math.log(q) for c, q in pairs)

        def tilted(theta: float) -> list[float]:
            return [q * math.exp(theta) / (1 - q + q * math.exp(theta)) for _, q in pairs]

        lo, hi = -60.0, 60.0
        for _ in range(200):
            mid = (lo + hi) / 2
            mean = sum(c * r for (c, _), r in zip(pairs, tilted(mid), strict=True))
            if mean < s:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-12:
                break
        theta = (lo + hi) / 2
        rs = tilted(theta)
        variance = sum(c * r * (1 - r) for (c, _), r in zip(pairs, rs, strict=True))
        cgf = sum(c * math.log(1 - q + q * math.exp(theta)) for c, q in pairs)
        return cgf - theta * s - 0.5 * math.log(2 * math.pi * variance)


def _log_fake_total(spec: FakeVotes, envelopes: int, fakes: int) -> float:
    if fakes < 0:
        return _NEG
    if spec.distribution == "fixed":
        return 0.0 if fakes == envelopes * (spec.count or 0) else _NEG
    if spec.distribution == "poisson":
        extra = fakes - envelopes * spec.min
        rate = envelopes * ((spec.mean or 0) - spec.min)
        if extra < 0:
            return _NEG
        if rate <= 0:
            return 0.0 if extra == 0 else _NEG
        return -rate + extra * math.log(rate) - math.lgamma(extra + 1)
    assert spec.max is not None
    return _uniform_sum(spec.min, spec.max, envelopes, fakes)


@cache
def _uniform_table(width: int, envelopes: int) -> tuple[float, ...]:
    """log P(sum of ``envelopes`` uniform draws from 0..width = t), t = 0..width·envelopes."""
    if envelopes == 0:
        return (0.0,)
    before = _uniform_table(width, envelopes - 1)
    step = -math.log(width + 1)
    out = [_NEG] * (len(before) + width)
    for i, a in enumerate(before):
        for k in range(width + 1):
            out[i + k] = _logadd(out[i + k], a + step)
    return tuple(out)


def _uniform_sum(low: int, high: int, envelopes: int, fakes: int) -> float:
    extra = fakes - envelopes * low
    width = high - low
    if extra < 0 or extra > envelopes * width:
        return _NEG
    if width == 0:
        return 0.0
    if envelopes <= 64:
        return _uniform_table(width, envelopes)[extra]
    # Beyond that, the normal approximation (the exact support is kept above).
    mean = envelopes * width / 2
    variance = envelopes * ((width + 1) ** 2 - 1) / 12
    return -((extra - mean) ** 2) / (2 * variance) - 0.5 * math.log(2 * math.pi * variance)


def _log_binom(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _logadd(a: float, b: float) -> float:
    if a == _NEG:
        return b
    if b == _NEG:
        return a
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a))


def _normalize(logs: Sequence[float]) -> tuple[float, ...]:
    top = max(logs)
    if top == _NEG:
        return tuple(1 / len(logs) for _ in logs)
    weights = [math.exp(v - top) if v != _NEG else 0.0 for v in logs]
    total = sum(weights)
    return tuple(w / total for w in weights)
