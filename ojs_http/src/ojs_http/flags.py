"""Command-line flags that take their default from an environment variable.

Every ``ojs-server`` flag is declared with :func:`env_flag`, which reads the variable, and
writes both the variable's name and the built-in default into ``--help``. The help shows the
built-in default, never the environment's value: a secret passed in the environment must not
reach a terminal or a CI log through ``--help``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

__all__ = ["env_bool", "env_flag"]

_TRUE = ("1", "true", "yes", "on")


def env_bool(name: str) -> bool:
    """Whether the variable ``name`` is set to ``1``, ``true``, ``yes`` or ``on``."""
    return os.environ.get(name, "").strip().lower() in _TRUE


def env_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *flags: str,
    env: str | tuple[str, ...],
    help: str,
    default: Any = None,
    type: Callable[[str], Any] = str,
    **kwargs: Any,
) -> argparse.Action:
    """``parser.add_argument(*flags, ...)`` whose default is ``$env`` when set, else
    ``default``; ``--help`` says ``[$ENV; default: ...]``.

    ``env`` may name several variables, the first one set wins. ``action="store_true"`` flags
    are on when the variable is truthy (:func:`env_bool`). A variable that ``type`` refuses
    exits with the variable's name, as a bad flag would.
    """
    names = (env,) if isinstance(env, str) else env
    if kwargs.get("action") == "store_true":
        value: Any = any(env_bool(name) for name in names) or bool(default)
        shown = "on" if default else "off"
    else:
        name, raw = next(
            ((n, os.environ[n]) for n in names if os.environ.get(n, "").strip()), ("", "")
        )
        try:
            value = type(raw) if raw else default
        except ValueError:
            raise SystemExit(f"ojs-server: ${name}: invalid value {raw!r}") from None
        kwargs["type"] = type
        shown = str(default) if default not in (None, "", []) else "none"
    variables = " or ".join(f"${name}" for name in names)
    text = f"{help} [{variables}; default: {shown}]"
    return parser.add_argument(*flags, default=value, help=text, **kwargs)
