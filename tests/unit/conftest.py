"""Unit-test settings: assertion rewriting for the tcpkit helpers, and Hypothesis
without a deadline or an on-disk example database (deterministic speed, no files)."""

import pytest
from hypothesis import settings

from tcpstack.core.segment import EMPTY_OPTIONS, Options

pytest.register_assert_rewrite("tests.unit.tcpkit")

settings.register_profile("unit", deadline=None, database=None)
settings.load_profile("unit")


@pytest.fixture(autouse=True)
def _empty_options_stay_empty():
    """Segments without options share one Options (tcpstack.core.segment.EMPTY_OPTIONS),
    immutable only by convention: a test or a code path that assigns to a field of
    it would change every such segment after it, so catch it where it happens."""
    yield
    assert Options() == EMPTY_OPTIONS, "something assigned to a field of EMPTY_OPTIONS"
