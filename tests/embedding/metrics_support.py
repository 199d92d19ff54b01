"""Reading a Prometheus exposition back (with prometheus-client's own parser)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, by (sample name, labels)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(text: str | bytes, name: str, **labels: str) -> float | None:
    """The value of one sample, or ``None`` when the exposition has no such sample."""
    if isinstance(text, bytes):
        text = text.decode()
    return samples(text).get((name, frozenset(labels.items())))
