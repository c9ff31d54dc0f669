"""`/metrics` of a running proxy, parsed with prometheus_client's own text parser, and the
checks every histogram must pass."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from .proxy import ProxyProcess

TOKEN = "t0ken"
AUTH = [("Authorization", f"Bearer {TOKEN}")]


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample by name, each with its labels."""

    text: str
    samples: Mapping[str, list[tuple[dict[str, str], float]]]

    def names(self) -> set[str]:
        return set(self.samples)

    def value(self, name: str, **labels: str) -> float:
        """The one sample of ``name`` with exactly ``labels``; fails if there is none."""
        found = [v for got, v in self.samples.get(name, []) if got == labels]
        assert len(found) == 1, f"{name}{labels}: {found} in\n{self.text}"
        return found[0]

    def get(self, name: str, default: float = 0.0, **labels: str) -> float:
        found = [v for got, v in self.samples.get(name, []) if got == labels]
        return found[0] if found else default

    def total(self, name: str) -> float:
        return sum(value for _, value in self.samples.get(name, []))

    def labelled(self, name: str, label: str) -> dict[str, float]:
        """``name``'s samples by the value of ``label`` (summed over any other labels)."""
        by: dict[str, float] = {}
        for labels, value in self.samples.get(name, []):
            by[labels.get(label, "")] = by.get(labels.get(label, ""), 0.0) + value
        return by


def scrape(proxy: ProxyProcess) -> Scrape:
    reply = proxy.get("/_wsgi_proxy/metrics", AUTH)
    assert reply.status == 200, reply.describe()
    text = reply.body.decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return Scrape(text, samples)


def histogram_counts(found: Scrape, name: str, label: str) -> dict[str, float]:
    """Check ``name``'s histogram series and return their counts by ``label``: buckets in
    ascending bounds with cumulative (never decreasing) counts, ending with ``+Inf``, whose
    count equals ``_count``; a ``_sum`` for each; the sum not negative."""
    series: dict[str, list[tuple[float, float]]] = {}
    for labels, value in found.samples.get(f"{name}_bucket", []):
        bound = math.inf if labels["le"] == "+Inf" else float(labels["le"])
        series.setdefault(labels[label], []).append((bound, value))
    counts = {}
    for key, buckets in series.items():
        bounds = [bound for bound, _ in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf, (key, bounds)
        values = [value for _, value in buckets]
        assert values == sorted(values), f"{key}: buckets not cumulative: {buckets}"
        count = found.value(f"{name}_count", **{label: key})
        assert values[-1] == count, f"{key}: +Inf {values[-1]} != count {count}"
        assert found.value(f"{name}_sum", **{label: key}) >= 0
        counts[key] = count
    return counts
