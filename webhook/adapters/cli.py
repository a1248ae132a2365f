"""`audit-webhook`: serve · reconcile · render · files · check · explain · report · certs · version."""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import logging
import math
import os
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

from webhook.adapters import decision_log, logs
from webhook.adapters.build_info import build_info, describe
from webhook.adapters.certs import ServiceName, ca_bundle, ensure_certs
from webhook.adapters.config_file import ConfigFile
from webhook.adapters.metrics import Metrics
from webhook.adapters.store import MemoryStore, Store
from webhook.adapters.store.files import FileStore, load_snapshot, manifest_files, read_manifests
from webhook.core import names, report, yamlio
from webhook.core.decide import PreparedCache, validate_object
from webhook.core.egress import service_view
from webhook.core.explain import explain, explain_preset, group_of, policy_from_document, request_problem
from webhook.core.images import with_registry
from webhook.core.lookup import Lookup
from webhook.core.mutation import decide_mutation, prepare
from webhook.core.names import WEBHOOK_CONFIG_KEY
from webhook.core.objects import datacenter_of, kind_of, name_of, namespace_of
from webhook.core.operator_config import ConfigError, OperatorConfig
from webhook.core.options import Options
from webhook.core.patch import apply_patch
from webhook.core.policy_eval import AuditRequest
from webhook.core.presets import PRESETS
from webhook.core.reconcile_plan import MODES, Owner, desired_state, egress_targets, services_needed, webhook_sources
from webhook.core.settings import effective_settings
from webhook.core.snapshot import LoadError, Snapshot
from webhook.core.validation.admission import CLUSTER, CONFIGMAP, SEED, kind_key, qualified_kind, secret_refs
from webhook.core.validation.errors import Path as ValidationPath
from webhook.core.validation.policy import check_policy

log = logging.getLogger("audit_webhook")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class UsageError(Exception):
    """A command line or input file problem, printed without a traceback."""


def bundled_examples() -> Path:
    """The examples shipped beside the package (a checkout or the container image)."""
    beside = Path(__file__).resolve().parents[2] / "examples"
    return beside if beside.is_dir() else Path("examples")


def _options(args: argparse.Namespace) -> Options:
    base = Options.default()
    return base.model_copy(update={
        "sidecar_image": with_registry(args.sidecar_image or base.sidecar_image, args.sidecar_registry or ""),
        "fluentbit_format": args.fluent_bit_format or base.fluentbit_format,
        "cluster_id_record": not args.no_cluster_id_record,
    })


def _config_file(args: argparse.Namespace) -> ConfigFile:
    try:
        return ConfigFile(Path(args.config) if args.config else None)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _config(args: argparse.Namespace) -> OperatorConfig:
    return _config_file(args).current


def _port(text: str) -> int:
    """A TCP port for argparse: its error names the flag."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def _positive(text: str) -> float:
    """A finite number above 0 (seconds, or a rate), for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < math.inf:  # also NaN
        raise argparse.ArgumentTypeError(f"{text} is not a finite number above 0")
    return value


def _at_least_one(text: str) -> int:
    """A count of 1 or more, for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def _host(text: str) -> str:
    """An address to listen on, for argparse: a name that does not resolve is refused before anything starts."""
    try:
        socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address of this machine: "
                                         f"{getattr(exc, 'strerror', None) or exc}") from None
    return text


def _ensure_certs(cert_dir: Path, service: ServiceName, renew: bool = False) -> bool:
    if cert_dir.exists() and not cert_dir.is_dir():
        raise UsageError(f"--cert-dir {cert_dir}: is a file, not a directory")
    try:
        return ensure_certs(cert_dir, service, renew=renew)
    except OSError as exc:
        raise UsageError(f"--cert-dir {cert_dir}: cannot keep the certificates there: "
                         f"{exc.strerror or exc}") from None


def _client_ca(path: str | None) -> Path | None:
    """The client CA file, loaded once here so that a wrong one is named before the server starts."""
    if path is None:
        return None
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--client-ca {path}: cannot load the CA: {getattr(exc, 'strerror', None) or exc}") from None
    return Path(path)


def _add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="the operator's configuration (egress allow-list, ...; docs/configuration.md; '-': "
                        "standard input, read once); "
                        "serve and reconcile reload it when it changes")


def _add_mode_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=MODES, default="kkp",
                   help="kkp: KKP's controllers own the apiserver Deployment, audit-config, audit-logs-fluentbit "
                        "and the copied webhook Secret, and the reconciler keeps only the egress NetworkPolicy; "
                        "standalone: the reconciler keeps all of them (default: kkp)")


def _add_reconciler_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resync-period", type=_positive, default=600.0, metavar="SECONDS",
                   help="the reconciler works on watch events; every this many seconds it also goes over every "
                        "Cluster again, from its caches (default: 600)")
    p.add_argument("--workers", type=_at_least_one, default=2, metavar="N",
                   help="Clusters reconciled at the same time (default: 2)")
    p.add_argument("--api-qps", type=_positive, default=50.0, metavar="N",
                   help="the reconciler's API requests per second at most, after --api-burst (default: 50)")
    p.add_argument("--api-burst", type=_at_least_one, default=100, metavar="N",
                   help="the reconciler's API requests in a burst at most (default: 100)")


def _add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sidecar-image", help="fluent-bit image of the sidecar (default: webhook/data/defaults.yaml)")
    p.add_argument("--sidecar-registry", metavar="REGISTRY",
                   help="pull new sidecars' image from this registry instead (like KKP's overwriteRegistry); "
                        "an existing sidecar's fluent-bit image keeps its registry and tag")
    p.add_argument("--fluent-bit-format", choices=("classic", "yaml"),
                   help="fluent-bit configuration format (default: classic)")
    p.add_argument("--no-cluster-id-record", action="store_true",
                   help="do not add the cluster_id field to every audit record")


def _objects(path: Path) -> list[dict[str, Any]]:
    try:
        return read_manifests(path)
    except LoadError as exc:
        raise UsageError(str(exc)) from None


def _one(path: Path, kind: str) -> dict[str, Any]:
    for obj in _objects(path):
        if kind_key(obj) == kind:
            return obj
    raise UsageError(f"{path}: no kubermatic.k8c.io/v1 {kind} in this file")


def _cluster_and_seed(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The Cluster and the Seed of its datacenter: an answer without that Seed would be a guess, since
    its enforcement and settings can change the outcome."""
    cluster = _one(Path(args.cluster), CLUSTER)
    dc = datacenter_of(cluster)
    if not dc:  # no datacenter, no Seed: as the server finds none either
        return cluster, None
    if not args.seed:
        raise UsageError(f'Cluster "{name_of(cluster)}" is in datacenter "{dc}", whose Seed can enforce audit '
                         f'logging or replace its settings: give the Seed that defines "{dc}" with --seed')
    try:
        seed = Snapshot.of(o for o in _objects(Path(args.seed)) if kind_key(o) == SEED).seeds.get(dc)
    except LoadError as exc:
        raise UsageError(f"{args.seed}: {exc}") from None
    if seed is None:
        raise UsageError(f'no Seed defines datacenter "{dc}" (of Cluster "{name_of(cluster)}") in {args.seed}')
    return cluster, seed


# Why `render` has nothing to inject, by the decision's reason.
_NOTHING_TO_INJECT = {
    "not-apiserver": "the Pod is not a KKP kube-apiserver Pod (no apiserver container), so the webhook leaves it be",
    "audit-off": "the cluster has audit logging and the webhook backend off",
    "injected": "the Pod already runs with the audit sidecar, volumes and flags",
}


def _print_objects(obj: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(obj, indent=2))
    else:
        yamlio.dump(obj, sys.stdout)


def _add_output_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="output format (default: yaml)")


def cmd_render(args: argparse.Namespace) -> int:
    """Print the Pod as the webhook would admit it."""
    cluster, seed = _cluster_and_seed(args)
    pods = [o for o in _objects(Path(args.pod)) if kind_of(o) == ("v1", "Pod")]
    if not pods:
        raise UsageError(f"{args.pod}: no v1 Pod in this file")
    pod = pods[0]
    namespace = namespace_of(pod) or effective_settings(cluster, seed).namespace
    if namespace_of(pod) and namespace != effective_settings(cluster, seed).namespace:
        print(f"warning: the Pod is in {namespace}, not in the cluster's namespace; rendering it anyway",
              file=sys.stderr)
    answer = decide_mutation("CREATE", pod, cluster, seed, _options(args))
    for warning in answer.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    if not answer.allowed:
        print(f"Error: {answer.message}", file=sys.stderr)
        return 1
    if not answer.patch:
        print(f"note: nothing to inject: {_NOTHING_TO_INJECT.get(answer.reason, answer.reason)}", file=sys.stderr)
    _print_objects(apply_patch(pod, answer.patch or []), args.output)
    return 0


def _source_objects(sources: list[str] | None) -> list[dict[str, Any]]:
    try:
        return [o for root in sources or [] for path in manifest_files(Path(root)) for o in read_manifests(path)]
    except LoadError as exc:
        raise UsageError(str(exc)) from None


def _webhook_namespace(args: argparse.Namespace) -> str:
    return args.webhook_namespace or os.environ.get("POD_NAMESPACE") or "audit-webhook"


def cmd_files(args: argparse.Namespace) -> int:
    """Print the objects the reconciler keeps for the cluster: `desired_state`, with the reconciler's inputs."""
    cluster, seed = _cluster_and_seed(args)
    options = _options(args)
    prepared = prepare(cluster, seed, options)
    if prepared.settings is None:
        # The same rules as /validate and render: nothing is printed for settings they refuse.
        print(f"Error: {prepared.problem}", file=sys.stderr)
        return 1
    settings = prepared.settings
    given = _source_objects(args.source)
    snap = Snapshot.of(o for o in given if kind_of(o) == ("v1", "Secret"))
    service_objects = {(namespace_of(o), name_of(o)): o for o in given if kind_of(o) == ("v1", "Service")}
    copy_ref, own_ref = webhook_sources(settings)
    source = snap.secrets.get(copy_ref) if copy_ref else None
    config_data = source or (snap.secrets.get(own_ref) if own_ref else None)
    webhook_config = (config_data or {}).get(WEBHOOK_CONFIG_KEY)
    if settings.webhook is not None and webhook_config is None:
        where = "/".join(copy_ref or own_ref or ("", ""))
        print(f"note: the webhook backend's server is in Secret {where}, which was not given (--source): its "
              "egress is not part of this policy", file=sys.stderr)
    services: dict[tuple[str, str], dict[str, Any] | None] = {}
    for ref in services_needed(egress_targets(settings, webhook_config)):
        found = service_objects.get(ref)
        services[ref] = service_view(found) if found is not None else None
        if found is None:
            print(f"note: Service {ref[0]}/{ref[1]} was not given (--source): the policy allows its namespace on "
                  "the Service port, as the reconciler does for a Service that does not exist; with the Service, "
                  "its pods (selector) on the targetPort", file=sys.stderr)
    wanted = desired_state(settings, options, webhook_source=source, webhook_config=webhook_config,
                           services=services, config=_config(args), webhook_namespace=_webhook_namespace(args),
                           mode=args.mode, owner=Owner.of(cluster))
    for destination, why in wanted.refused:
        print(f"note: egress to {destination} not opened: {why}", file=sys.stderr)
    items = []
    for obj in wanted.objects:
        if copy_ref and obj["kind"] == "Secret" and name_of(obj) == copy_ref[1]:
            print(f"note: the reconciler also copies Secret {copy_ref[0]}/{copy_ref[1]} into {settings.namespace}: "
                  "not printed, it holds the datacenter's credentials", file=sys.stderr)
            continue
        items.append(obj)
    if copy_ref and source is None:
        print(f"note: Secret {copy_ref[0]}/{copy_ref[1]} was not given (--source): the reconciler copies it into "
              f"{settings.namespace} where it needs to", file=sys.stderr)
    if not items:
        print(f'note: cluster "{settings.cluster_id}" needs none of these objects in {args.mode} mode',
              file=sys.stderr)
    _print_objects({"apiVersion": "v1", "kind": "List", "items": items}, args.output)
    return 0


def _identity(obj: dict[str, Any]) -> tuple[str, str, str]:
    return kind_key(obj), namespace_of(obj), name_of(obj)


def missing_input(obj: dict[str, Any], store: Lookup, seeds_given: bool) -> str:
    """Why `check` cannot judge `obj` from the given files ("" when it can): what /validate would
    look up (the Seed of a Cluster's datacenter, the owner of an `audit-config` and the owner's Seed)
    and the files do not hold. Pure."""
    def no_seed(dc: str, whose: str) -> str:
        if seeds_given:
            return f'no Seed defines datacenter "{dc}" ({whose}): its enforcement can change the outcome'
        return (f'datacenter "{dc}" ({whose}) needs its Seed, whose enforcement can change the outcome: pass the '
                "Seeds with --source or among the files")

    kind = kind_key(obj)
    if kind == CLUSTER:
        dc = datacenter_of(obj)
        return no_seed(dc, f'of Cluster "{name_of(obj)}"') if dc and store.seed_for_datacenter(dc) is None else ""
    if kind != CONFIGMAP or name_of(obj) != names.CONFIGMAP_AUDIT_CONFIG:
        return ""
    namespace = namespace_of(obj)
    if not namespace:
        return ("it has no metadata.namespace, so the Cluster owning it (whose preset may own its policy) is "
                "unknown: give the namespace (cluster-<name>)")
    owner = store.cluster_for_namespace(namespace)
    if owner is None:
        return (f'no Cluster among the files owns namespace "{namespace}" (its preset may own this policy): pass '
                "the Cluster with --source")
    dc = datacenter_of(owner)
    if dc and store.seed_for_datacenter(dc) is None:
        return no_seed(dc, f'of Cluster "{name_of(owner)}", which owns namespace "{namespace}"')
    return ""


def cmd_check(args: argparse.Namespace) -> int:
    """Validate manifests offline with the rules and messages of /validate: a CREATE, or an UPDATE of
    the object of the same kind, namespace and name in --source (as `kubectl apply` would send)."""
    sources: list[tuple[Path, dict[str, Any]]] = []
    targets: list[tuple[Path, dict[str, Any]]] = []
    try:
        for file in args.files:
            targets += [(path, obj) for path in manifest_files(Path(file)) for obj in read_manifests(path)]
        # A file both checked and under --source (`check x.yaml --source .`) is not its own stored version.
        checked = {path.resolve() for path, _ in targets}
        for root in [Path(s) for s in args.source or []]:
            sources += [(path, obj) for path in manifest_files(root) if path.resolve() not in checked
                        for obj in read_manifests(path)]
        snap = Snapshot()
        for path, obj in [*sources, *targets]:  # the files' objects replace stored ones, as applying them would
            snap.add(obj, str(path))
    except LoadError as exc:
        raise UsageError(str(exc)) from None
    stored = {_identity(obj): obj for _, obj in sources if kind_key(obj)}
    store = MemoryStore(snap)
    config, options, cache = _config(args), Options.default(), PreparedCache()
    results = []
    for path, obj in targets:
        if not kind_key(obj):
            continue
        old = stored.get(_identity(obj))
        result = {"file": str(path), "kind": qualified_kind(obj), "name": name_of(obj),
                  "operation": "CREATE" if old is None else "UPDATE"}
        secrets = {ref: snap.secrets.get(ref) for ref in sorted({*secret_refs(obj), *secret_refs(old)})}
        answer = validate_object(obj, old, store, secrets, options, cache, config)
        missing = missing_input(obj, store, bool(snap.seed_objects))
        # What is missing can only add refusals to an audit-config (its owner's preset), so a refusal
        # without it stands; for a Cluster the Seed may replace the very settings judged.
        if missing and (answer.allowed or kind_key(obj) == CLUSTER):
            results.append({**result, "allowed": None, "message": f"cannot judge: {missing}", "rules": [],
                            "warnings": [], "warning_rules": []})
            continue
        results.append({**result, "allowed": answer.allowed, "message": "" if answer.allowed else answer.message,
                        "rules": answer.rules, "warnings": answer.warnings,
                        "warning_rules": sorted(set(answer.warning_rules))})
    if not results:
        raise UsageError("no Cluster, Seed or ConfigMap found in " + ", ".join(args.files))
    if args.output != "text":
        _print_objects(results, args.output)
    for r in results if args.output == "text" else []:
        for warning in r["warnings"]:
            print(f"Warning: {warning}")
        label = f"{r['file']}: {r['kind']} {r['name'] or '<unnamed>'} ({r['operation']})"
        verdict = {True: "ok", False: f"rejected: {r['message']}", None: r["message"]}[r["allowed"]]
        print(f"{label}: {verdict}")
    if any(r["allowed"] is None for r in results):
        return 2  # as other input problems: the answer needs files that were not given
    return 0 if all(r["allowed"] for r in results) else 1


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the audit level a policy gives a request, and the rule that decided it."""
    resource, _, sub = args.resource.partition("/")
    if bool(resource) == bool(args.path):
        raise UsageError("give either --resource (a resource request) or --path (a non-resource URL)")
    if sub and args.subresource and sub != args.subresource:
        raise UsageError(f'--resource {args.resource} and --subresource {args.subresource}: give the subresource once')
    subresource = sub or args.subresource
    problem = request_problem(args.verb, resource, args.group, args.path, subresource, args.custom_resource)
    if problem:
        raise UsageError(problem)
    group = args.group if args.group is not None or args.path else group_of(resource)
    request = AuditRequest(verb=args.verb, resource=resource, subresource=subresource, group=group or "",
                           namespace=args.namespace, name=args.name, path=args.path, user=args.user,
                           groups=tuple(g for g in args.groups.split(",") if g))
    if args.preset:
        result = explain_preset(args.preset, request)
    else:
        docs = _objects(Path(args.policy))
        try:
            policy = policy_from_document(docs[0] if docs else None)
        except ValueError as exc:
            raise UsageError(f"{args.policy}: {exc}") from None
        problems = check_policy(policy, ValidationPath("")).errors
        if problems:
            listed = "; ".join(map(str, problems))
            raise UsageError(f"{args.policy}: kube-apiserver would refuse this policy: {listed}")
        result = explain(policy, request, args.policy)
    if args.output == "text":
        print(result.text().rstrip())
    else:
        _print_objects(result.as_dict(), args.output)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """One row per Cluster: effective audit state, where logs go, webhook backend, drift."""
    options = _options(args)
    # Without the operator's configuration the egress allow-list, and so the policy, is unknown.
    config = _config(args) if args.config else None
    if args.source == "kube":
        from webhook.adapters.store.kube import load_api_client
        from webhook.adapters.store.kube_inventory import kube_lookup, kube_rows

        try:
            api = load_api_client(args.kubeconfig)
            rows = kube_rows(api, kube_lookup(api), options, args.mode, config, _webhook_namespace(args))
        except Exception as exc:
            raise UsageError(f"cannot read from the Kubernetes API: {type(exc).__name__}: {exc}") from None
    else:
        try:
            snapshot = load_snapshot(Path(args.source) if args.source else bundled_examples())
        except LoadError as exc:
            raise UsageError(str(exc)) from None
        rows = report.rows_of(snapshot, options, args.mode, config, _webhook_namespace(args))
    if args.output == "yaml":
        _print_objects(json.loads(report.render_json(rows)), "yaml")
    else:
        render = {"table": report.render_table, "json": report.render_json, "csv": report.render_csv}[args.output]
        sys.stdout.write(render(rows))
    drifting = [r.cluster for r in rows if r.drift]
    if drifting:
        print(f"{len(drifting)} of {len(rows)} clusters drift: {', '.join(drifting)}", file=sys.stderr)
    return 1 if args.fail_on_drift and drifting else 0


def cmd_certs(args: argparse.Namespace) -> int:
    """Create or renew the certificates and print the caBundle."""
    cert_dir = Path(args.cert_dir)
    written = _ensure_certs(cert_dir, ServiceName(args.service, args.namespace), renew=args.renew)
    print(f"{'wrote' if written else 'kept'} certificates in {cert_dir}", file=sys.stderr)
    print(base64.b64encode(ca_bundle(cert_dir)).decode())
    return 0


def _in_background(job: Any) -> Callable[[], Awaitable[None]]:
    """A poller that runs `job.sync()` off the event loop whenever `job.due()`."""

    async def poll() -> None:
        if job.due():
            await asyncio.to_thread(job.sync)

    return poll


def _certificates(args: argparse.Namespace, api: Any, cert_dir: Path, pollers: list[Any]) -> None:
    """Make sure the certificates exist: shared through a Secret (`--tls-secret`) or local files."""
    service = ServiceName(args.service, args.namespace)
    if args.tls_secret and api is not None:
        from webhook.adapters.tls_secret import TLSSecret

        shared = TLSSecret(api, os.environ.get("POD_NAMESPACE") or args.namespace, args.tls_secret, cert_dir, service)
        shared.sync()
        pollers.append(_in_background(shared))
    elif _ensure_certs(cert_dir, service):
        log.info("created certificates in %s (CA: %s)", cert_dir, cert_dir / "ca.crt")


def _kube_store(args: argparse.Namespace, api: Any, cert_dir: Path, pollers: list[Any],
                stops: list[Callable[[], None]], config: ConfigFile) -> Store:
    """The API store, the caBundle sync and (with --reconcile) the reconciler; `stops` gets what
    must be stopped, in order, after the server."""
    from webhook.adapters.cabundle import CABundleSync
    from webhook.adapters.store.kube import KubeStore

    store = KubeStore(api)
    store.start()
    if args.webhook_config_name:
        pollers.append(_in_background(CABundleSync(api, args.webhook_config_name, cert_dir)))
    if args.reconcile:
        reconciler = _reconciler(args, api, store, config)
        reconciler.start()
        stops.append(reconciler.stop)
    stops.append(store.stop)
    log.info("watching Clusters and Seeds through the Kubernetes API")
    return store


def _reconciler(args: argparse.Namespace, api: Any, store: Any, config: ConfigFile) -> Any:
    from webhook.adapters.leader import LeaderElector
    from webhook.adapters.reconciler import Reconciler

    own_namespace = os.environ.get("POD_NAMESPACE") or args.namespace
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    elector = LeaderElector(api, own_namespace, "audit-webhook-reconciler", identity)
    log.info("reconciling in %s mode", args.mode)
    return Reconciler(api, store, _options(args), elector, resync_period=args.resync_period, workers=args.workers,
                      qps=args.api_qps, burst=args.api_burst, mode=args.mode,
                      webhook_configs=tuple(n for n in args.audited_namespaces_config or ["audit-webhook"]
                                            if n != "none"),
                      own_namespace=own_namespace, config=config)


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Run the reconciler alone, as its own identity: the half of the webhook that writes."""
    from webhook.adapters.cluster_report import ClusterReporter
    from webhook.adapters.reconciler import run_until_stopped
    from webhook.adapters.store.kube import KubeStore, load_api_client

    if args.mode == "kkp" and args.fluent_bit_format == "yaml":
        raise UsageError("--fluent-bit-format yaml needs --mode standalone")
    try:
        api = load_api_client(args.kubeconfig)
    except Exception as exc:
        raise UsageError(f"cannot load a Kubernetes configuration: {exc}") from None
    store = KubeStore(api)
    store.start()
    reconciler = _reconciler(args, api, store, _config_file(args))
    reporter = ClusterReporter(reconciler.api, store, _options(args), args.mode, reconciler.metrics,
                               lambda: reconciler.elector.leading, config=reconciler.config,
                               webhook_namespace=reconciler.own_namespace, interval=args.report_interval,
                               watched=reconciler.watches)
    reconciler.on_change = reporter.changed
    reporter.start()
    try:
        asyncio.run(run_until_stopped(reconciler, store, host=args.health_host, port=args.health_port))
    finally:
        reporter.stop()
    return 0


def _file_store(args: argparse.Namespace) -> Store:
    source = Path(args.source) if args.source else bundled_examples()
    try:
        store = FileStore(source)
    except LoadError as exc:
        raise UsageError(str(exc)) from None
    log.info("serving %d clusters and %d seeds from %s", len(store.snapshot.all_clusters()),
             len(store.snapshot.seed_objects), source)
    # The loaded objects live as long as the process: keep the collector from rescanning them,
    # which would otherwise show up as latency spikes with a large fleet.
    gc.freeze()
    return store


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTPS server."""
    from webhook.adapters.server import Limits, ListenError, Webhook

    if args.reconcile and args.source != "kube":
        # The reconciler writes through the Kubernetes API: over files it would do nothing, silently.
        raise UsageError("--reconcile needs --source kube (or run `audit-webhook reconcile`)")
    cert_dir = Path(args.cert_dir)
    client_ca = _client_ca(args.client_ca)
    names = args.webhook_config_name or ["audit-webhook"]
    args.webhook_config_name = [] if names == ["none"] else names
    args.audited_namespaces_config = args.audited_namespaces_config or ["audit-webhook"]
    if args.mode == "kkp" and args.fluent_bit_format == "yaml":
        # KKP's audit-logs-fluentbit Secret holds fluent-bit.conf only: the sidecar would crash-loop.
        raise UsageError("--fluent-bit-format yaml needs --mode standalone: on a KKP seed the sidecar's "
                         "configuration is KKP's fluent-bit.conf")
    api = None
    if args.source == "kube" or args.tls_secret:
        from webhook.adapters.store.kube import load_api_client

        try:
            api = load_api_client(args.kubeconfig)
        except Exception as exc:
            raise UsageError(f"cannot load a Kubernetes configuration: {exc}") from None
    pollers: list[Any] = []
    _certificates(args, api, cert_dir, pollers)
    stops: list[Callable[[], None]] = []
    # One configuration for the server and, with --reconcile, the reconciler: read once, seen alike.
    config = _config_file(args)
    store = _kube_store(args, api, cert_dir, pollers, stops, config) if args.source == "kube" else _file_store(args)
    if args.client_name and not args.client_ca:
        raise UsageError("--client-name needs --client-ca: names are read from verified client certificates")
    webhook = Webhook(store=store, options=_options(args), metrics=Metrics(),
                      allowed_clients=frozenset(args.client_name or ()), metrics_port=args.metrics_port,
                      config=config)
    limits = Limits(max_connections=args.max_connections, idle_timeout=args.idle_timeout)
    try:
        _serve_until_stopped(webhook, args, cert_dir, pollers, limits, client_ca)
    except ListenError as exc:  # the port is taken, or the address is not ours: the operator's to fix
        raise UsageError(str(exc)) from None
    for stop in stops:  # the reconciler finishes its pass and hands its Lease over; the watches end
        stop()
    return 0


def _serve_until_stopped(webhook: Any, args: argparse.Namespace, cert_dir: Path, pollers: list[Any],
                         limits: Any, client_ca: Path | None) -> None:
    from webhook.adapters.server import serve

    asyncio.run(serve(webhook, host=args.host, port=args.port, cert_dir=cert_dir, poll_interval=args.reload_interval,
                      pollers=pollers, client_ca=client_ca, limits=limits, metrics_host=args.host))


def cmd_version(args: argparse.Namespace) -> int:
    """The build, told as audit_webhook_build_info tells it."""
    if args.output == "text":
        print(describe())
    elif args.output == "json":
        print(json.dumps(build_info(), sort_keys=True))
    else:
        _print_objects(dict(sorted(build_info().items())), "yaml")
    return 0


def _asks_for_json_logs(argv: list[str]) -> bool:
    """Whether the command line asks for JSON logs, read before it is parsed (a usage error stops the
    parse before `--log-format` is known); the last occurrence wins, as argparse has it."""
    wanted = None
    for i, arg in enumerate(argv):
        if arg == "--log-format" and i + 1 < len(argv):
            wanted = argv[i + 1]
        elif arg.startswith("--log-format="):
            wanted = arg.partition("=")[2]
    return wanted == "json"


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are one JSON log line when the command line asks for JSON logs:
    a typo in a Deployment's arguments must not be the one line Loki cannot read."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            logs.configure("INFO", "json")
            log.error("%s: %s (see %s --help)", self.prog, message, self.prog)
            sys.exit(2)
        super().error(message)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = _Parser(prog="audit-webhook", description=__doc__)
    p.add_argument("--version", action="version", version=describe())
    p.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, help="log level on stderr (default: INFO)")
    # The same flag after the subcommand (`serve --log-level DEBUG`); it wins when both are given.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--version", action="version", version=describe(), help="print the version and exit")
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS,
                        help="log level on stderr (default: INFO)")
    p.add_argument("--log-format", default="text", choices=logs.FORMATS,
                   help="text, or json: one JSON object per line with time, level, logger, msg (default: text)")
    common.add_argument("--log-format", default=argparse.SUPPRESS, choices=logs.FORMATS,
                        help="text, or json: one JSON object per line with time, level, logger, msg (default: text)")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the admission webhook over HTTPS")
    serve.add_argument("--source", help="directory of YAML manifests, or 'kube' (default: the bundled examples)")
    serve.add_argument("--kubeconfig", help="with --source kube: a kubeconfig (default: in-cluster, then $KUBECONFIG)")
    serve.add_argument("--reconcile", action="store_true",
                       help="with --source kube: keep each cluster's audit-config ConfigMap, fluent-bit Secret and "
                            "copied webhook Secret, and roll its apiserver Deployment when settings change "
                            "(one replica at a time, by Lease)")
    _add_reconciler_options(serve)
    serve.add_argument("--audited-namespaces-config", action="append", metavar="NAME",
                       help="with --reconcile: webhook configurations whose namespace lists the reconciler keeps "
                            "equal to the audited clusters (repeatable; default: audit-webhook; 'none' to disable). "
                            "Independent of --webhook-config-name, so cert-manager setups keep them too")
    _add_mode_option(serve)
    _add_config_option(serve)
    serve.add_argument("--tls-secret", help="keep the CA and serving certificate in this Secret of the webhook's "
                                            "namespace ($POD_NAMESPACE or --namespace), shared by all replicas")
    serve.add_argument("--webhook-config-name", action="append",
                       help="with --source kube: webhook configurations whose caBundle to keep in step with the CA "
                            "(repeatable; default: audit-webhook; 'none' to disable)")
    serve.add_argument("--host", type=_host, default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    serve.add_argument("--port", type=_port, default=8443, help="HTTPS port (default: 8443; 0: any free port)")
    serve.add_argument("--cert-dir", default="certs", help="ca.crt, tls.crt, tls.key; created if missing")
    serve.add_argument("--metrics-port", type=_port, metavar="PORT",
                       help="serve /metrics over plain HTTP on this port instead of the HTTPS port (deploy/: 9090)")
    serve.add_argument("--max-connections", type=_at_least_one, default=512, metavar="N",
                       help="open connections at most; past it the oldest idle one is closed (default: 512)")
    serve.add_argument("--idle-timeout", type=_positive, default=30.0, metavar="SECONDS",
                       help="close a connection that sends no complete request headers for this long (default: 30)")
    serve.add_argument("--client-ca", metavar="FILE", help="require client certificates signed by this CA (mutual TLS "
                                                          "with kube-apiserver's admission client certificate)")
    serve.add_argument("--client-name", action="append", metavar="NAME",
                       help="with --client-ca: a client certificate name (subject CN or DNS SAN) allowed to call "
                            "the admission paths and /metrics (repeatable; default: any certificate of the CA)")
    serve.add_argument("--service", default="audit-webhook", help="Service name in the certificate")
    serve.add_argument("--namespace", default="audit-webhook", help="Service namespace in the certificate")
    serve.add_argument("--decision-log", choices=("off", "debug", "info", "warning"), default="info",
                       help="log level of the one JSON line per admission (off: none; shown when --log-level allows)")
    serve.add_argument("--reload-interval", type=_positive, default=2.0, metavar="SECONDS",
                       help="how often to look for replaced certificates and changed source files")
    _add_render_options(serve)
    serve.set_defaults(func=cmd_serve)

    rec = sub.add_parser("reconcile", parents=[common],
                         help="run the reconciler alone, as its own ServiceAccount (the writing half "
                                           "of the webhook: deploy/ runs it beside `serve`)")
    rec.add_argument("--kubeconfig", help="a kubeconfig (default: in-cluster, then $KUBECONFIG)")
    _add_reconciler_options(rec)
    rec.add_argument("--audited-namespaces-config", action="append", metavar="NAME",
                     help="webhook configurations whose namespace lists are kept equal to the audited clusters "
                          "(repeatable; default: audit-webhook; 'none' to disable)")
    rec.add_argument("--namespace", default="audit-webhook",
                     help="the webhook's namespace, where the Lease lives (default: $POD_NAMESPACE, then this)")
    rec.add_argument("--health-host", type=_host, default="0.0.0.0", help="address of the plain-HTTP probes")
    rec.add_argument("--health-port", type=_port, default=8081,
                     help="port of /healthz, /readyz and /metrics (plain HTTP)")
    rec.add_argument("--report-interval", type=_positive, default=21600.0, metavar="SECONDS",
                     help="the period of the slow sweep that reads every cluster namespace again for the "
                          "Clusters' audit state and drift on /metrics, spread evenly over it (default: 6 hours); "
                          "a namespace where a watch sees a change is read again at once")
    _add_mode_option(rec)
    _add_config_option(rec)
    _add_render_options(rec)
    rec.set_defaults(func=cmd_reconcile)

    render = sub.add_parser("render", parents=[common], help="print a Pod as the webhook would admit it")
    render.add_argument("--cluster", required=True, help="file with the Cluster ('-': standard input)")
    render.add_argument("--seed", help="file with the Seed of the cluster's datacenter")
    render.add_argument("pod", help="file with the Pod ('-': standard input)")
    _add_output_option(render)
    _add_render_options(render)
    render.set_defaults(func=cmd_render)

    files = sub.add_parser("files", parents=[common],
                           help="print the objects a cluster's apiserver needs (what the reconciler keeps)")
    files.add_argument("--cluster", required=True, help="file with the Cluster ('-': standard input)")
    files.add_argument("--seed", help="file with the Seed of the cluster's datacenter")
    files.add_argument("--source", action="append", metavar="PATH",
                       help="files or directories of manifests to look up the webhook backend's Secret and the "
                            "sinks' Services in, as the reconciler reads them (repeatable)")
    files.add_argument("--webhook-namespace", metavar="NAMESPACE",
                       help="the webhook's namespace, which the egress policy never opens "
                            "(default: $POD_NAMESPACE, then audit-webhook)")
    _add_mode_option(files)
    _add_output_option(files)
    _add_config_option(files)
    _add_render_options(files)
    files.set_defaults(func=cmd_files)

    check = sub.add_parser("check", parents=[common], help="validate Cluster, Seed and ConfigMap manifests offline")
    check.add_argument("files", nargs="+", help="files or directories of manifests, '-' for standard input "
                                                "(Secrets and Seeds in them are used)")
    check.add_argument("--source", action="append", help="more manifests to look Secrets and Seeds up in")
    check.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text",
                       help="text: a line per object; json, yaml: a list of results (default: text)")
    _add_config_option(check)
    check.set_defaults(func=cmd_check)

    report_cmd = sub.add_parser("report", parents=[common],
                                help="which clusters are audited, how, where logs go, and drift")
    report_cmd.add_argument("--source", help="directory or file of YAML manifests (Pods included), '-' for "
                                             "standard input, or 'kube' (default: the bundled examples)")
    report_cmd.add_argument("--kubeconfig", help="with --source kube: a kubeconfig (default: in-cluster, $KUBECONFIG)")
    report_cmd.add_argument("-o", "--output", choices=("table", "json", "csv", "yaml"), default="table",
                            help="output format (default: table)")
    report_cmd.add_argument("--fail-on-drift", action="store_true", help="exit 1 when any cluster drifts")
    report_cmd.add_argument("--webhook-namespace", metavar="NAMESPACE",
                            help="the webhook's namespace, which the egress policy never opens "
                                 "(default: $POD_NAMESPACE, then audit-webhook)")
    _add_mode_option(report_cmd)
    report_cmd.add_argument("--config", metavar="FILE",
                            help="the operator's configuration (docs/configuration.md): with it, the egress "
                                 "NetworkPolicy of each cluster is compared with the one the reconciler keeps")
    _add_render_options(report_cmd)
    report_cmd.set_defaults(func=cmd_report)

    explain_cmd = sub.add_parser("explain", parents=[common],
                                 help="which audit level a preset or policy gives a request, and why")
    policy_choice = explain_cmd.add_mutually_exclusive_group(required=True)
    policy_choice.add_argument("--preset", choices=PRESETS, help="one of the bundled presets")
    policy_choice.add_argument("--policy", help="a policy file, or an audit-config ConfigMap manifest")
    explain_cmd.add_argument("--verb", required=True, help="get, list, watch, create, update, patch, delete, ...")
    explain_cmd.add_argument("--group", help='API group ("" is the core group; default: the group of a '
                                                 'well-known --resource)')
    explain_cmd.add_argument("--custom-resource", action="store_true",
                             help="--resource is a custom resource of --group (a group with a dot in it), which "
                                  "explain's list of API resources does not hold; its subresources: status, scale")
    explain_cmd.add_argument("--resource", default="", help="e.g. pods, or pods/exec with its subresource")
    explain_cmd.add_argument("--subresource", default="", help="e.g. exec (or write pods/exec in --resource)")
    explain_cmd.add_argument("--namespace", default="", help="namespace of the request (none: cluster-scoped)")
    explain_cmd.add_argument("--name", default="", help="name of the object requested")
    explain_cmd.add_argument("--user", default="", help="user making the request")
    explain_cmd.add_argument("--groups", default="", help="the user's groups, comma-separated")
    explain_cmd.add_argument("--path", default="", help="a non-resource URL such as /healthz, instead of --resource")
    explain_cmd.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text",
                             help="output format (default: text)")
    explain_cmd.set_defaults(func=cmd_explain)

    version = sub.add_parser("version", parents=[common],
                             help="print the version, revision and Python (as audit_webhook_build_info has them)")
    version.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text",
                         help="output format (default: text)")
    version.set_defaults(func=cmd_version)

    certs = sub.add_parser("certs", parents=[common],
                           help="create or renew the CA and serving certificate, print the caBundle")
    certs.add_argument("--cert-dir", default="certs", help="where ca.crt, tls.crt and tls.key live (default: certs)")
    certs.add_argument("--service", default="audit-webhook", help="Service name in the certificate")
    certs.add_argument("--namespace", default="audit-webhook", help="Service namespace in the certificate")
    certs.add_argument("--renew", action="store_true", help="issue a new serving certificate now")
    certs.set_defaults(func=cmd_certs)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `audit-webhook` and `python -m webhook`."""
    _Parser.json_errors = _asks_for_json_logs(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    decision_log.set_level(getattr(args, "decision_log", "info"))
    try:
        return int(args.func(args))
    except UsageError as exc:
        if args.log_format == "json":
            log.error("%s", exc)
        else:
            print(f"audit-webhook: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as a Unix tool killed by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
