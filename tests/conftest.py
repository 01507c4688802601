"""Shared test configuration. Area fixtures live in each tests/<area>/conftest.py."""

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_what_the_test_left() -> Iterator[None]:
    """Collect garbage at the end of every test, so that a subprocess or a socket a test forgot
    is reported (filterwarnings = error) by the test that forgot it, not by a later one."""
    yield
    gc.collect()
