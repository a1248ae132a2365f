"""Every rule has a stable id from one table, and the docs list exactly that table."""

from __future__ import annotations

import re

from tests.helpers import ROOT
from webhook.core.validation.context import Context
from webhook.core.validation.rules import RULES


def test_every_id_the_code_records_is_in_the_table_and_every_row_is_used():
    used = set()
    for path in (ROOT / "webhook").rglob("*.py"):
        used |= set(re.findall(r'rule="([a-z.-]+)"', path.read_text()))
    assert used - set(RULES) == set()
    assert set(RULES) - used == set()


def test_the_docs_table_is_the_table():
    documented = re.findall(r"^\| `([a-z.-]+)` \| (safety|policy) \| ([a-z_, -]+) \| (.+) \|$",
                            (ROOT / "docs/rules.md").read_text(), re.MULTILINE)
    assert documented == [(rid, rule.tier.value, ", ".join(rule.inputs) or "-", rule.summary)
                          for rid, rule in RULES.items()]


def test_every_error_of_the_validation_tables_carries_a_known_rule(monkeypatch):
    """Run the validation suites' objects and look at what they find."""
    from tests.helpers import cluster, seed, webhook_backend
    from webhook.core.validation.admission import check_admission

    objects = [
        cluster(audit={"enabled": "yes", "policyPreset": "loud"}),
        cluster(audit={"enabled": True, "sidecar": {"extraEnvs": [{"name": "LD_PRELOAD", "value": "x"}],
                                                    "resources": {"limits": {"cpu": "x"}},
                                                    "config": {"service": {"Daemon": "on"}, "filters": [
                                                        {"Name": "lua", "Match": "*", "code": "x"}], "outputs": [
                                                        {"Name": "http", "Host": "a\nb"}]}}}),
        cluster(audit={"webhookBackend": webhook_backend("wh", namespace="other", backoff="-1s")}),
        seed({"dc1": {"enforceAuditLogging": "yes"}}),
    ]
    errors = [e for obj in objects for e in check_admission(obj, None, Context(secrets={})).errors]
    assert len(errors) >= 8
    assert [e for e in errors if e.rule not in RULES] == []
    assert all(e.tier is RULES[e.rule].tier for e in errors)
