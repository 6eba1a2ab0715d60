"""Per-process counters in the Prometheus text format. Labels never name a voter or choice."""

from __future__ import annotations

import threading
from collections import Counter


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    def count(self, name: str, amount: int = 1, **labels: str) -> None:
        with self._lock:
            self._counts[(name, tuple(sorted(labels.items())))] += amount

    def render(self) -> str:
        with self._lock:
            items = sorted(self._counts.items())
        lines = []
        for (name, labels), value in items:
            tags = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{tags}}} {value}" if tags else f"{name} {value}")
        return "\n".join(lines) + "\n"
