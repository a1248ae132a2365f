"""The security team's view: one row per cluster with its effective audit state and drift. Pure."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from webhook.core import names
from webhook.core.desired_pod import Injection, NoApiserverContainer, audit_flags, desired_pod, read_flags
from webhook.core.egress import POLICY_NAME, service_view
from webhook.core.manifests import MANAGED_BY, MANAGED_BY_LABEL
from webhook.core.mutation import Prepared, is_apiserver_pod, prepare
from webhook.core.objects import cluster_namespace, datacenter_of, dig, name_of
from webhook.core.operator_config import DEFAULT, OperatorConfig
from webhook.core.options import Options
from webhook.core.reconcile_plan import Mode, desired_state, egress_targets, services_needed, webhook_sources
from webhook.core.settings import EffectiveSettings
from webhook.core.snapshot import Snapshot
from webhook.core.validation.fluentbit_policy import plugin_name, record_changes
from webhook.core.validation.kubeconfig import server_of
from webhook.core.validation.webhook_backend import SecretRef

# Output keys that say where logs go; nothing else of a sidecar map is shown (it may hold secrets).
_DESTINATION_KEYS = ("host", "port")

AuditState = Literal["on", "off", "invalid"]
AUDIT_STATES: tuple[AuditState, ...] = get_args(AuditState)

# What kind of difference a drift is: a fixed set, so that it can label a metric
# (audit_webhook_cluster_drift{cluster,kind}); docs/metrics.md says what each means.
DriftKind = Literal[
    "settings_invalid",  # the Cluster's audit settings cannot be rendered: it is not reconciled
    "object_missing",  # an audit-config ConfigMap, fluent-bit Secret or webhook Secret the Pods mount
    "object_not_ours",  # standalone: an object of a name we keep is someone else's, left alone
    "pod_not_injected",  # an apiserver Pod without the sidecar or the settings hash
    "pod_outdated",  # an apiserver Pod injected with older settings: not rolled since the change
    "pod_flags",  # an audit flag of kube-apiserver differs from the settings
    "pod_injection",  # the sidecar, audit volumes or apiserver mounts differ from what injection gives
    "pod_ephemeral_mount",  # an ephemeral container mounts the audit volumes
    "pod_injected_while_off",  # still injected although audit logging and the webhook are off
    "egress_policy",  # the egress NetworkPolicy is missing, differs from the reconciler's or allows unneeded egress
    "namespace_contested",  # another Cluster claims the same namespace
    "seed_missing",  # no Seed defines the Cluster's datacenter
]
DRIFT_KINDS: tuple[DriftKind, ...] = get_args(DriftKind)


@dataclass(frozen=True)
class Drift:
    """One way reality differs from a cluster's settings: its kind, and the detail people read."""

    kind: DriftKind
    detail: str


@dataclass
class Row:
    """One cluster, as the report shows it."""

    cluster: str
    namespace: str
    datacenter: str
    audit: AuditState
    preset: str
    decided_by: str
    logs_to: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    # The sidecar's filters and outputs that drop, change or throw away records.
    record_loss: list[str] = field(default_factory=list)
    webhook_secret: str = ""
    webhook_server: str = ""
    webhook_backoff: str = ""
    webhook_decided_by: str = ""
    apiserver_pods: int = 0
    drift: list[Drift] = field(default_factory=list)

    def drift_counts(self) -> dict[DriftKind, int]:
        """How many problems of each kind the cluster has (kinds it has none of are left out)."""
        counts: dict[DriftKind, int] = {}
        for d in self.drift:
            counts[d.kind] = counts.get(d.kind, 0) + 1
        return counts


def _destination(output: Mapping[str, str]) -> str:
    lower = {k.lower(): v for k, v in output.items()}
    where = lower.get("host", "")
    if where and lower.get("port"):
        where += f":{lower['port']}"
    return f"{lower.get('name', '?')} {where}".strip()


def _pod_drift(pod: dict[str, Any], expected: dict[str, str], enabled: bool, prepared: Prepared) -> list[Drift]:
    label = f"Pod {name_of(pod) or '?'}"
    containers = dig(pod, "spec", "containers") or []
    sidecar = any(isinstance(c, dict) and c.get("name") == names.SIDECAR_CONTAINER for c in containers)
    problems = []
    if enabled and not sidecar:
        problems.append(Drift("pod_not_injected", f"{label}: no {names.SIDECAR_CONTAINER} sidecar"))
    seen_hash = dig(pod, "metadata", "annotations", names.SETTINGS_HASH_ANNOTATION)
    if seen_hash is None:
        problems.append(Drift("pod_not_injected", f"{label}: not injected (no settings hash)"))
    elif not prepared.is_current(seen_hash, pod):
        problems.append(Drift("pod_outdated",
                              f"{label}: stale settings hash {seen_hash}, want {prepared.pod_hash(pod)}"))
    apiserver = next((c for c in containers if isinstance(c, dict) and c.get("name") == names.APISERVER_CONTAINER), {})
    for flag, value in read_flags(apiserver, list(expected)).items():
        if value != expected[flag]:
            problems.append(Drift("pod_flags", f"{label}: {flag}={value if value is not None else '(missing)'}, "
                                               f"want {expected[flag]}"))
    return problems


def _short(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def _by_name(items: Any) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items or [] if isinstance(i, dict) and isinstance(i.get("name"), str)}


def _injection_drift(pod: dict[str, Any], injection: Injection) -> list[Drift]:
    """Where the running Pod's sidecar, audit volumes and mounts differ from what injection would
    produce for it now (the audit flags are compared on their own)."""
    label = f"Pod {name_of(pod) or '?'}"
    try:
        want = desired_pod(pod, injection)
    except NoApiserverContainer:
        return [Drift("pod_injection", f"{label}: no {names.APISERVER_CONTAINER} container")]
    problems = []
    have_c, want_c = _by_name(dig(pod, "spec", "containers")), _by_name(dig(want, "spec", "containers"))
    sidecar, wanted = have_c.get(names.SIDECAR_CONTAINER), want_c.get(names.SIDECAR_CONTAINER)
    if sidecar is not None and wanted is not None:
        for key in ("image", "command", "args", "volumeMounts"):
            if sidecar.get(key) != wanted.get(key):
                problems.append(Drift("pod_injection", f"{label}: {names.SIDECAR_CONTAINER} {key} "
                                      f"{_short(sidecar.get(key))}, injection gives {_short(wanted.get(key))}"))
    api, api_want = have_c.get(names.APISERVER_CONTAINER, {}), want_c.get(names.APISERVER_CONTAINER, {})
    if api.get("volumeMounts") != api_want.get("volumeMounts"):
        problems.append(Drift("pod_injection",
                              f"{label}: {names.APISERVER_CONTAINER} volumeMounts differ from what injection gives"))
    have_v, want_v = _by_name(dig(pod, "spec", "volumes")), _by_name(dig(want, "spec", "volumes"))
    ours = [v["name"] for v in injection.volumes]
    problems += [Drift("pod_injection", f"{label}: volume {name} {_short(have_v.get(name))}, "
                                        f"injection gives {_short(want_v.get(name))}")
                 for name in ours if have_v.get(name) != want_v.get(name)]
    for debug in dig(pod, "spec", "ephemeralContainers") or []:
        mounted = [m.get("name") for m in (debug.get("volumeMounts") or []) if isinstance(m, dict)]
        problems += [Drift("pod_ephemeral_mount", f"{label}: ephemeral container {debug.get('name')} mounts {name}")
                     for name in mounted if name in ours]
    return problems


def cluster_row(
    cluster: dict[str, Any],
    seed: dict[str, Any] | None,
    *,
    pods: list[dict[str, Any]],
    secrets: Mapping[SecretRef, Mapping[str, bytes] | None],
    configmaps: set[tuple[str, str]],
    options: Options,
    not_ours: AbstractSet[tuple[str, str, str]] = frozenset(),
    mode: Mode = "standalone",
    network_policies: Mapping[tuple[str, str], dict[str, Any]] | None = None,
    services: Mapping[tuple[str, str], dict[str, Any]] | None = None,
    operator_config: OperatorConfig = DEFAULT,
    webhook_namespace: str = "audit-webhook",
) -> Row:
    """The report row of one cluster, given what exists in its namespace (and its Secrets).

    `not_ours`: (kind, namespace, name) of objects there without our labels. Standalone, an
    object we should keep that is someone else's is drift: the reconciler leaves it alone.
    `network_policies` and `services` (None: not looked at) give the egress NetworkPolicy there is
    and the Services it is made from: in both modes one that differs from the reconciler's
    `desired_state` (with `operator_config`) is drift.
    """
    prepared = prepare(cluster, seed, options)
    apiserver_pods = [p for p in pods if is_apiserver_pod(p)]
    if prepared.settings is None:
        return Row(name_of(cluster), cluster_namespace(cluster), datacenter_of(cluster), "invalid", "", "",
                   apiserver_pods=len(apiserver_pods), drift=[Drift("settings_invalid", prepared.problem)])
    s = prepared.settings
    row = Row(cluster=s.cluster_id, namespace=s.namespace, datacenter=s.datacenter,
              audit="on" if s.enabled else "off", preset=s.preset or ("custom" if s.needs_injection else ""),
              decided_by=s.audit_origin.value, apiserver_pods=len(apiserver_pods))
    if s.enabled:
        config = s.sidecar.config
        default = ["stdout (sidecar log)"] if s.keeps_default_output or not config.outputs else []
        row.logs_to = default + [_destination(o) for o in config.outputs]
        row.filters = [plugin_name(f) for f in config.filters]
        row.record_loss = record_changes(list(config.filters), list(config.outputs))
    drift: list[Drift] = []
    if s.webhook is not None:
        row.webhook_secret = f"{s.webhook.secret_namespace}/{s.webhook.secret_name}"
        row.webhook_backoff = s.webhook.initial_backoff
        row.webhook_decided_by = s.webhook_origin.value if s.webhook_origin else ""
        source = secrets.get((s.webhook.secret_namespace, s.webhook.secret_name))
        copy = secrets.get((s.namespace, s.webhook.secret_name))
        if source is None:
            drift.append(Drift("object_missing", f"Secret {row.webhook_secret} missing"))
        if copy is None and (s.namespace, s.webhook.secret_name) != (s.webhook.secret_namespace, s.webhook.secret_name):
            drift.append(Drift("object_missing",
                               f"Secret {s.namespace}/{s.webhook.secret_name} (the copy the Pod mounts) missing"))
        config = (copy or source or {}).get(names.WEBHOOK_CONFIG_KEY)
        row.webhook_server = (server_of(bytes(config)) or "unusable webhook.yaml") if config is not None else ""
    if s.needs_injection:
        if (s.namespace, names.CONFIGMAP_AUDIT_CONFIG) not in configmaps:
            drift.append(Drift("object_missing", f"ConfigMap {names.CONFIGMAP_AUDIT_CONFIG} missing"))
        if s.enabled and secrets.get((s.namespace, names.SECRET_FLUENTBIT)) is None:
            drift.append(Drift("object_missing", f"Secret {names.SECRET_FLUENTBIT} missing"))
        if mode == "standalone":
            owned = [("Secret", s.namespace, names.SECRET_FLUENTBIT)] if s.enabled else []
            if s.preset:
                owned.append(("ConfigMap", s.namespace, names.CONFIGMAP_AUDIT_CONFIG))
            if s.webhook is not None and s.webhook.secret_namespace != s.namespace:
                owned.append(("Secret", s.namespace, s.webhook.secret_name))
            drift += [Drift("object_not_ours", f"{kind} {name} exists and is not managed by audit-webhook (left alone)")
                      for kind, ns, name in owned if (kind, ns, name) in not_ours]
        expected = audit_flags(s)
        for pod in apiserver_pods:
            drift.extend(_pod_drift(pod, expected, s.enabled, prepared))
            if prepared.injection is not None:
                drift.extend(_injection_drift(pod, prepared.injection))
    else:
        for pod in apiserver_pods:
            if dig(pod, "metadata", "annotations", names.SETTINGS_HASH_ANNOTATION) is not None:
                drift.append(Drift("pod_injected_while_off", f"Pod {name_of(pod)}: still injected although audit "
                                                             "logging and the webhook are off"))
    if network_policies is not None:
        drift += _egress_drift(s, secrets, network_policies, services or {}, operator_config, webhook_namespace)
    row.drift = drift
    return row


def _egress_drift(s: EffectiveSettings, secrets: Mapping[SecretRef, Mapping[str, bytes] | None],
                  network_policies: Mapping[tuple[str, str], dict[str, Any]],
                  services: Mapping[tuple[str, str], dict[str, Any]], config: OperatorConfig,
                  webhook_namespace: str) -> list[Drift]:
    """The egress NetworkPolicy against the one the reconciler keeps (the same decision, desired_state)."""
    webhook_config = _webhook_config(s, secrets)
    needed = {ref: (service_view(services[ref]) if ref in services else None)
              for ref in services_needed(egress_targets(s, webhook_config))}
    wanted = desired_state(s, Options.default(), webhook_source=None, webhook_config=webhook_config,
                           services=needed, config=config, webhook_namespace=webhook_namespace, mode="kkp")
    want = next((o for o in wanted.objects if o["kind"] == "NetworkPolicy"), None)
    have = network_policies.get((s.namespace, POLICY_NAME))
    label = f"NetworkPolicy {POLICY_NAME}"
    if want is None:
        return [Drift("egress_policy", f"{label} allows egress although none is needed")] if have is not None else []
    if have is None:
        return [Drift("egress_policy", f"{label} missing")]
    if have.get("spec") == want["spec"]:
        return []
    return [Drift("egress_policy", f"{label} differs from what the reconciler keeps")]


def _not_ours(snapshot: Snapshot) -> set[tuple[str, str, str]]:
    def ours(labels: Mapping[str, Any]) -> bool:
        return labels.get(MANAGED_BY_LABEL) == MANAGED_BY

    found = {("ConfigMap", ns, name) for (ns, name), cm in snapshot.configmaps.items()
             if not ours(dig(cm, "metadata", "labels") or {})}
    return found | {("Secret", ns, name) for (ns, name), labels in snapshot.secret_labels.items() if not ours(labels)}


def rows_of(snapshot: Snapshot, options: Options, mode: Mode = "standalone", config: OperatorConfig | None = None,
            webhook_namespace: str = "audit-webhook") -> list[Row]:
    """A row per Cluster of a snapshot (which also holds the Pods, Secrets and ConfigMaps it needs).

    With the operator's `config` the egress NetworkPolicies are compared too: without its
    allow-list what the reconciler keeps is unknown."""
    rows = []
    not_ours = _not_ours(snapshot)
    claimed = [(namespace, c, claimants) for namespace, claimants in snapshot.claims.items() for c in claimants]
    for namespace, cluster, claimants in sorted(claimed, key=lambda item: name_of(item[1])):
        seed = snapshot.seeds.get(datacenter_of(cluster))
        secrets = {ref: snapshot.secrets.get(ref) for ref in secrets_needed(cluster, seed, options)}
        row = cluster_row(cluster, seed, pods=snapshot.pods.get(namespace, []), secrets=secrets,
                          configmaps=set(snapshot.configmaps), options=options, not_ours=not_ours, mode=mode,
                          network_policies=snapshot.network_policies if config is not None else None,
                          services=snapshot.services, operator_config=config or DEFAULT,
                          webhook_namespace=webhook_namespace)
        if len(claimants) > 1:
            others = ", ".join(name_of(c) for c in claimants if c is not cluster)
            row.drift.append(Drift("namespace_contested", f"namespace {namespace} is also claimed by {others}"))
        if seed is None:
            # Its datacenter's enforcement is unknown: the row shows the Cluster's own settings only.
            row.drift.append(Drift("seed_missing", f'datacenter "{datacenter_of(cluster)}" is defined by no Seed'))
        rows.append(row)
    return rows


def secrets_needed(cluster: dict[str, Any], seed: dict[str, Any] | None, options: Options) -> list[SecretRef]:
    """The Secrets `cluster_row` looks at, for the shell to fetch."""
    settings = prepare(cluster, seed, options).settings
    if settings is None:
        return []
    refs = [(settings.namespace, names.SECRET_FLUENTBIT)]
    if settings.webhook is not None:
        refs += [(settings.webhook.secret_namespace, settings.webhook.secret_name),
                 (settings.namespace, settings.webhook.secret_name)]
    return sorted(set(refs))


def services_of(cluster: dict[str, Any], seed: dict[str, Any] | None,
                secrets: Mapping[SecretRef, Mapping[str, bytes] | None], options: Options) -> list[tuple[str, str]]:
    """The Services `cluster_row` looks at for the egress policy, for the shell to fetch."""
    settings = prepare(cluster, seed, options).settings
    if settings is None:
        return []
    return services_needed(egress_targets(settings, _webhook_config(settings, secrets)))


def _webhook_config(s: EffectiveSettings, secrets: Mapping[SecretRef, Mapping[str, bytes] | None]) -> bytes | None:
    """The webhook.yaml the reconciler reads: the datacenter's Secret it copies, else the namespace's."""
    copy_ref, own_ref = webhook_sources(s)
    data = (secrets.get(copy_ref) if copy_ref else None) or (secrets.get(own_ref) if own_ref else None) or {}
    return data.get(names.WEBHOOK_CONFIG_KEY)


COLUMNS = ("cluster", "namespace", "datacenter", "audit", "preset", "decided_by", "logs_to", "filters", "record_loss",
           "webhook_secret",
           "webhook_server", "webhook_backoff", "webhook_decided_by", "apiserver_pods", "drift")


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(v.detail if isinstance(v, Drift) else str(v) for v in value)
    return str(value)


def _webhook_cell(r: Row) -> str:
    if not r.webhook_secret:
        return "-"
    return f"{r.webhook_server or '?'} ({r.webhook_secret}, {r.webhook_backoff}, by {r.webhook_decided_by})"


def render_table(rows: list[Row]) -> str:
    """A fixed-width table for people; drift as `-` or the problems."""
    headers = ["CLUSTER", "DC", "AUDIT", "PRESET", "DECIDED BY", "LOGS TO", "FILTERS", "LOSES RECORDS", "WEBHOOK",
               "PODS", "DRIFT"]
    cells = [[r.cluster, r.datacenter, r.audit, r.preset or "-", r.decided_by, _cell(r.logs_to) or "-",
              ", ".join(r.filters) or "-", _cell(r.record_loss) or "-",
              _webhook_cell(r), str(r.apiserver_pods), _cell(r.drift) or "-"] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip() for cell in cells]
    return "\n".join(lines) + "\n"


def render_json(rows: list[Row]) -> str:
    """Every row as a JSON object; each drift as its kind and detail."""
    return json.dumps([asdict(r) for r in rows], indent=2) + "\n"


def render_csv(rows: list[Row]) -> str:
    """One CSV line per cluster; lists joined with '; '."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([_cell(getattr(r, c)) for c in COLUMNS])
    return out.getvalue()
