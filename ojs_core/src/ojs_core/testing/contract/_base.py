"""What every contract test class shares."""

from __future__ import annotations

import pytest

__all__ = ["KitTest"]


class KitTest:
    """Base of the kit's test classes: every test is a coroutine run by pytest-asyncio.

    The ``asyncio`` mark travels with the class, so the tests also run under pytest-asyncio's
    strict mode in the module that imports them.
    """

    pytestmark = [pytest.mark.asyncio]
