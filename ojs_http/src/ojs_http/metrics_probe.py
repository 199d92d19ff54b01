"""Whether the ``metrics`` extra is installed, found without importing it."""

from __future__ import annotations

import importlib.util

__all__ = ["installed"]


def installed() -> bool:
    """Whether ``prometheus-client`` can be imported (``pip install 'ojs-http[metrics]'``)."""
    return importlib.util.find_spec("prometheus_client") is not None
