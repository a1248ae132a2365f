from decimal import Decimal

import pytest

from webhook.core.duration import parse_duration
from webhook.core.quantity import parse_quantity, same_quantity


@pytest.mark.parametrize(("text", "value"), [
    ("100m", Decimal("0.1")),
    ("1", Decimal(1)),
    ("1.5", Decimal("1.5")),
    ("60Mi", Decimal(60 * 1024 * 1024)),
    ("1Gi", Decimal(1024 ** 3)),
    ("10M", Decimal(10_000_000)),
    ("1e3", Decimal(1000)),
    ("5n", Decimal("5e-9")),
    (".5", Decimal("0.5")),
    (2, Decimal(2)),
    (0.25, Decimal("0.25")),
])
def test_quantities_parse_to_exact_values(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "10 Mi", "1.2.3", "Mi", "10MB", "--1", True, None, [], "1e"])
def test_malformed_quantities_do_not_parse(text):
    assert parse_quantity(text) is None


@pytest.mark.parametrize(("a", "b", "same"), [
    ("1000m", "1", True), ("1024Ki", "1Mi", True), ("10Mi", "10M", False), ("x", "x", False), (None, "1", False),
])
def test_quantities_compare_by_value(a, b, same):
    assert same_quantity(a, b) is same


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", Decimal(10)), ("1m30s", Decimal(90)), ("1.5h", Decimal(5400)), ("500ms", Decimal("0.5")),
    ("0", Decimal(0)), ("-5s", Decimal(-5)), ("2h45m", Decimal(9900)), ("100us", Decimal("0.0001")),
    ("1µs", Decimal("0.000001")),
])
def test_go_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "ten seconds", "10 s", "1d", "s", "10S", "1m30"])
def test_strings_go_would_refuse_are_not_durations(text):
    assert parse_duration(text) is None
