"""Log lines: the text format's time is worked out once a second and reads as logging's own."""

from __future__ import annotations

import logging

import pytest

from webhook.adapters.logs import TEXT_FORMAT, TextFormatter


def record(created: float) -> logging.LogRecord:
    line = logging.LogRecord("audit_webhook.decisions", logging.INFO, "", 0, "decided", None, None)
    line.created, line.msecs = created, (created - int(created)) * 1000
    return line


@pytest.mark.parametrize("times", [
    [1796000000.001, 1796000000.999],  # within one second
    [1796000000.999, 1796000001.0, 1796000001.5],  # across a second
    [1796000001.5, 1796000000.5, 1796003600.25],  # backwards (another thread's older record), an hour on
])
def test_text_lines_read_as_loggings_own(times):
    ours, theirs = TextFormatter(), logging.Formatter(TEXT_FORMAT)
    assert [ours.format(record(t)) for t in times] == [theirs.format(record(t)) for t in times]
