"""Unit-test settings: assertion rewriting for the tcpkit helpers, and Hypothesis
without a deadline or an on-disk example database (deterministic speed, no files)."""

import pytest
from hypothesis import settings

pytest.register_assert_rewrite("tests.unit.tcpkit")

settings.register_profile("unit", deadline=None, database=None)
settings.load_profile("unit")
