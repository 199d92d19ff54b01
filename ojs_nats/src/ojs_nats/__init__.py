"""ojs-nats: the OJS backend on NATS JetStream (work in progress; see the NATS issue)."""

__all__: list[str] = []
__version__ = "0.1.0"
