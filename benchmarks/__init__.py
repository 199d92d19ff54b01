"""Reproducible benchmarks of ojs-python against the raw NATS and HTTP baselines (see README)."""
