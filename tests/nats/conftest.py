"""The NATS suite's fixtures and per-phase deadlines (shared with tests/grpc): see
``tests/support/nats_fixtures.py``."""

from nats_fixtures import *  # noqa: F403
