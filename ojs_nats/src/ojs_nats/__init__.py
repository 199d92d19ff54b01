"""ojs-nats: the production OJS backend on NATS JetStream and KV.

:class:`NatsBackend` implements :class:`ojs_core.backend.Backend`; ``ojs_nats.embedded`` starts
a local nats-server (extra ``ojs-nats[embedded]``). See ``docs/nats-design.md``.
"""

from .backend import NatsBackend

__all__ = ["NatsBackend"]
__version__ = "0.2.0"
