"""`audit-webhook`: serve · reconcile · render · files · check · explain · report · certs · version."""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from webhook import __version__, decisions, logs, report, yamlio
from webhook.certs import ServiceName, ca_bundle, ensure_certs
from webhook.decide import PreparedCache, validate_object
from webhook.egress import classify, destinations, network_policy, refusal
from webhook.explain import explain, explain_preset, group_of, policy_from_document, request_problem
from webhook.images import with_registry
from webhook.manifests import needed_files
from webhook.metrics import Metrics
from webhook.mutation import decide_mutation, prepare
from webhook.objects import datacenter_of, kind_of, name_of, namespace_of
from webhook.operator_config import ConfigError, ConfigFile, OperatorConfig
from webhook.options import Options
from webhook.patch import apply_patch
from webhook.policy_eval import AuditRequest
from webhook.presets import PRESETS
from webhook.reconcile import MODES
from webhook.settings import effective_settings
from webhook.store import LoadError, MemoryStore, Snapshot, Store
from webhook.store.files import FileStore, load_snapshot, manifest_files, read_manifests
from webhook.validation.admission import CLUSTER, SEED, kind_key, qualified_kind, secret_refs
from webhook.validation.errors import Path as ValidationPath
from webhook.validation.policy import check_policy

log = logging.getLogger("audit_webhook")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class UsageError(Exception):
    """A command line or input file problem, printed without a traceback."""


def bundled_examples() -> Path:
    """The examples shipped beside the package (a checkout or the container image)."""
    beside = Path(__file__).resolve().parent.parent / "examples"
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


def _add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="the operator's configuration (egress allow-list, ...; docs/configuration.md); "
                        "serve and reconcile reload it when it changes")


def _add_mode_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=MODES, default="kkp",
                   help="kkp: KKP's controllers own the apiserver Deployment, audit-config, audit-logs-fluentbit "
                        "and the copied webhook Secret, and the reconciler keeps only the egress NetworkPolicy; "
                        "standalone: the reconciler keeps all of them (default: kkp)")


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
    cluster = _one(Path(args.cluster), CLUSTER)
    seed = None
    if args.seed:
        seeds = Snapshot.of(o for o in _objects(Path(args.seed)) if kind_key(o) == SEED).seeds
        seed = seeds.get(datacenter_of(cluster))
        if seed is None:
            raise UsageError(f'no Seed in {args.seed} defines datacenter "{datacenter_of(cluster)}" of Cluster '
                             f'"{name_of(cluster)}": its enforcement decides the settings')
    return cluster, seed


def _nothing_without_seed(args: argparse.Namespace, cluster: dict[str, Any]) -> None:
    """"Nothing to do" is an answer only with the Seed: its datacenter may enforce audit logging."""
    if not args.seed:
        raise UsageError(f'Cluster "{name_of(cluster)}" has audit logging and the webhook backend off by its own '
                         f'settings, but datacenter "{datacenter_of(cluster)}" may enforce them: give its Seed '
                         "with --seed")


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
        _nothing_without_seed(args, cluster)
        print(f"note: nothing to inject ({answer.reason})", file=sys.stderr)
    _print_objects(apply_patch(pod, answer.patch or []), args.output)
    return 0


def cmd_files(args: argparse.Namespace) -> int:
    """Print the ConfigMap and Secret the cluster's apiserver mounts."""
    cluster, seed = _cluster_and_seed(args)
    prepared = prepare(cluster, seed, _options(args))
    if prepared.settings is None:
        # The same rules as /validate and render: nothing is printed for settings they refuse.
        print(f"Error: {prepared.problem}", file=sys.stderr)
        return 1
    settings = prepared.settings
    items = needed_files(settings, _options(args))
    # Offline, neither the webhook backend's server (in its Secret) nor Services' selectors are known:
    # the policy covers the sidecar outputs, allowing a named Service's whole namespace.
    config = _config(args)
    targets = [classify(d, settings.namespace) for d in destinations(settings, None)]
    for target in targets:
        why = refusal(target, config)
        if why:
            print(f"note: egress to {target.destination.source} not opened: {why}", file=sys.stderr)
    if settings.webhook is not None:
        print("note: the webhook backend's server is in its Secret, which is not read offline: its egress is "
              "not part of this policy", file=sys.stderr)
        hook = settings.webhook
        if hook.secret_namespace != settings.namespace:
            print(f"note: copy Secret {hook.secret_namespace}/{hook.secret_name} into {settings.namespace} as well "
                  "(the reconciler does): not printed, it holds the datacenter's credentials", file=sys.stderr)
    egress = network_policy(settings, targets, {}, config)
    if egress is not None:
        items.append(egress)
    if not items:
        if not settings.needs_injection:
            _nothing_without_seed(args, cluster)
        print(f'note: cluster "{settings.cluster_id}" needs none of these objects', file=sys.stderr)
    _print_objects({"apiVersion": "v1", "kind": "List", "items": items}, args.output)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate manifests offline with the rules and messages of /validate."""
    snap = Snapshot()
    targets: list[tuple[Path, dict[str, Any]]] = []
    try:
        for root in [Path(s) for s in args.source or []]:
            for path in manifest_files(root):
                for obj in read_manifests(path):
                    snap.add(obj, str(path))
        for file in args.files:
            for path in manifest_files(Path(file)):
                for obj in read_manifests(path):
                    snap.add(obj, str(path))
                    targets.append((path, obj))
    except LoadError as exc:
        raise UsageError(str(exc)) from None
    store = MemoryStore(snap)
    config, options, cache = _config(args), Options.default(), PreparedCache()
    results = []
    for path, obj in targets:
        if not kind_key(obj):
            continue
        secrets = {ref: snap.secrets.get(ref) for ref in secret_refs(obj)}
        answer = validate_object(obj, None, store, secrets, options, cache, config)
        message = "" if answer.allowed else answer.message
        if kind_key(obj) == CLUSTER and store.seed_for_datacenter(datacenter_of(obj)) is None:
            # Its datacenter's enforcement decides its settings: "ok" without it would be a guess.
            missing = (f'datacenter "{datacenter_of(obj)}" is defined by no Seed given (add the Seeds with '
                       "--source)")
            message = f"{message}; {missing}" if message else missing
        results.append({"file": str(path), "kind": qualified_kind(obj), "name": name_of(obj),
                        "allowed": not message, "message": message, "warnings": answer.warnings})
    if not results:
        raise UsageError("no Cluster, Seed or ConfigMap found in " + ", ".join(args.files))
    if args.output != "text":
        _print_objects(results, args.output)
    for r in results if args.output == "text" else []:
        for warning in r["warnings"]:
            print(f"Warning: {warning}")
        label = f"{r['file']}: {r['kind']} {r['name'] or '<unnamed>'}"
        print(f"{label}: rejected: {r['message']}" if r["message"] else f"{label}: ok")
    return 0 if all(r["allowed"] for r in results) else 1


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the audit level a policy gives a request, and the rule that decided it."""
    resource, _, sub = args.resource.partition("/")
    if bool(resource) == bool(args.path):
        raise UsageError("give either --resource (a resource request) or --path (a non-resource URL)")
    problem = request_problem(args.verb, resource, args.group, args.path)
    if problem:
        raise UsageError(problem)
    group = args.group if args.group is not None or args.path else group_of(resource)
    request = AuditRequest(verb=args.verb, resource=resource, subresource=args.subresource or sub, group=group or "",
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
    print(json.dumps(result.as_dict(), indent=2) if args.output == "json" else result.text().rstrip())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """One row per Cluster: effective audit state, where logs go, webhook backend, drift."""
    options = _options(args)
    if args.source == "kube":
        from webhook.store.kube import load_api_client
        from webhook.store.kube_inventory import kube_lookup, kube_rows

        try:
            api = load_api_client(args.kubeconfig)
            rows = kube_rows(api, kube_lookup(api), options, args.mode)
        except Exception as exc:
            raise UsageError(f"cannot read from the Kubernetes API: {type(exc).__name__}: {exc}") from None
    else:
        try:
            snapshot = load_snapshot(Path(args.source) if args.source else bundled_examples())
        except LoadError as exc:
            raise UsageError(str(exc)) from None
        rows = report.rows_of(snapshot, options, args.mode)
    render = {"table": report.render_table, "json": report.render_json, "csv": report.render_csv}[args.output]
    sys.stdout.write(render(rows))
    drifting = [r.cluster for r in rows if r.drift]
    if drifting:
        print(f"{len(drifting)} of {len(rows)} clusters drift: {', '.join(drifting)}", file=sys.stderr)
    return 1 if args.fail_on_drift and drifting else 0


def cmd_certs(args: argparse.Namespace) -> int:
    """Create or renew the certificates and print the caBundle."""
    cert_dir = Path(args.cert_dir)
    written = ensure_certs(cert_dir, ServiceName(args.service, args.namespace), renew=args.renew)
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
        from webhook.tls_secret import TLSSecret

        shared = TLSSecret(api, os.environ.get("POD_NAMESPACE") or args.namespace, args.tls_secret, cert_dir, service)
        shared.sync()
        pollers.append(_in_background(shared))
    elif ensure_certs(cert_dir, service):
        log.info("created certificates in %s (CA: %s)", cert_dir, cert_dir / "ca.crt")


def _kube_store(args: argparse.Namespace, api: Any, cert_dir: Path, pollers: list[Any],
                stops: list[Callable[[], None]], config: ConfigFile) -> Store:
    """The API store, the caBundle sync and (with --reconcile) the reconciler; `stops` gets what
    must be stopped, in order, after the server."""
    from webhook.cabundle import CABundleSync
    from webhook.store.kube import KubeStore

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
    from webhook.leader import LeaderElector
    from webhook.reconciler import Reconciler

    own_namespace = os.environ.get("POD_NAMESPACE") or args.namespace
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    elector = LeaderElector(api, own_namespace, "audit-webhook-reconciler", identity)
    log.info("reconciling in %s mode", args.mode)
    return Reconciler(api, store, _options(args), elector, interval=args.reconcile_interval, mode=args.mode,
                      webhook_configs=tuple(n for n in args.audited_namespaces_config or ["audit-webhook"]
                                            if n != "none"),
                      own_namespace=own_namespace, config=config)


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Run the reconciler alone, as its own identity: the half of the webhook that writes."""
    from webhook.cluster_report import ClusterReporter
    from webhook.reconciler import run_until_stopped
    from webhook.store.kube import KubeStore, load_api_client

    if args.mode == "kkp" and args.fluent_bit_format == "yaml":
        raise UsageError("--fluent-bit-format yaml needs --mode standalone")
    try:
        api = load_api_client(args.kubeconfig)
    except Exception as exc:
        raise UsageError(f"cannot load a Kubernetes configuration: {exc}") from None
    store = KubeStore(api)
    store.start()
    reconciler = _reconciler(args, api, store, _config_file(args))
    reporter = ClusterReporter(api, store, _options(args), args.mode, reconciler.metrics,
                               lambda: reconciler.elector.leading, interval=args.report_interval)
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
    from webhook.server import Limits, Webhook

    cert_dir = Path(args.cert_dir)
    names = args.webhook_config_name or ["audit-webhook"]
    args.webhook_config_name = [] if names == ["none"] else names
    args.audited_namespaces_config = args.audited_namespaces_config or ["audit-webhook"]
    if args.mode == "kkp" and args.fluent_bit_format == "yaml":
        # KKP's audit-logs-fluentbit Secret holds fluent-bit.conf only: the sidecar would crash-loop.
        raise UsageError("--fluent-bit-format yaml needs --mode standalone: on a KKP seed the sidecar's "
                         "configuration is KKP's fluent-bit.conf")
    api = None
    if args.source == "kube" or args.tls_secret:
        from webhook.store.kube import load_api_client

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
        _serve_until_stopped(webhook, args, cert_dir, pollers, limits)
    except OSError as exc:  # the port is taken, or the address is not ours: the operator's to fix
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    for stop in stops:  # the reconciler finishes its pass and hands its Lease over; the watches end
        stop()
    return 0


def _serve_until_stopped(webhook: Any, args: argparse.Namespace, cert_dir: Path, pollers: list[Any],
                         limits: Any) -> None:
    from webhook.server import serve

    asyncio.run(serve(webhook, host=args.host, port=args.port, cert_dir=cert_dir, poll_interval=args.reload_interval,
                      pollers=pollers, client_ca=Path(args.client_ca) if args.client_ca else None, limits=limits,
                      metrics_host=args.host))


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="audit-webhook", description=__doc__)
    p.add_argument("--version", action="version", version=f"audit-webhook {__version__}")
    p.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, help="log level on stderr (default: INFO)")
    # The same flag after the subcommand (`serve --log-level DEBUG`); it wins when both are given.
    common = argparse.ArgumentParser(add_help=False)
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
    serve.add_argument("--reconcile-interval", type=float, default=10.0, metavar="SECONDS",
                       help="seconds between reconcile passes")
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
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    serve.add_argument("--port", type=int, default=8443, help="HTTPS port (default: 8443; 0: any free port)")
    serve.add_argument("--cert-dir", default="certs", help="ca.crt, tls.crt, tls.key; created if missing")
    serve.add_argument("--metrics-port", type=int, metavar="PORT",
                       help="serve /metrics over plain HTTP on this port instead of the HTTPS port (deploy/: 9090)")
    serve.add_argument("--max-connections", type=int, default=512, metavar="N",
                       help="open connections at most; past it the oldest idle one is closed (default: 512)")
    serve.add_argument("--idle-timeout", type=float, default=30.0, metavar="SECONDS",
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
    serve.add_argument("--reload-interval", type=float, default=2.0, metavar="SECONDS",
                       help="how often to look for replaced certificates and changed source files")
    _add_render_options(serve)
    serve.set_defaults(func=cmd_serve)

    rec = sub.add_parser("reconcile", parents=[common],
                         help="run the reconciler alone, as its own ServiceAccount (the writing half "
                                           "of the webhook: deploy/ runs it beside `serve`)")
    rec.add_argument("--kubeconfig", help="a kubeconfig (default: in-cluster, then $KUBECONFIG)")
    rec.add_argument("--reconcile-interval", type=float, default=10.0, metavar="SECONDS",
                     help="seconds between reconcile passes")
    rec.add_argument("--audited-namespaces-config", action="append", metavar="NAME",
                     help="webhook configurations whose namespace lists are kept equal to the audited clusters "
                          "(repeatable; default: audit-webhook; 'none' to disable)")
    rec.add_argument("--namespace", default="audit-webhook",
                     help="the webhook's namespace, where the Lease lives (default: $POD_NAMESPACE, then this)")
    rec.add_argument("--health-host", default="0.0.0.0", help="address of the plain-HTTP probes")
    rec.add_argument("--health-port", type=int, default=8081,
                     help="port of /healthz, /readyz and /metrics (plain HTTP)")
    rec.add_argument("--report-interval", type=float, default=60.0, metavar="SECONDS",
                     help="seconds between computations of every Cluster's audit state and drift for /metrics "
                          "(the Lease holder's; each reads the namespace's apiserver Pods, audit-config and "
                          "Secrets)")
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
    report_cmd.add_argument("--source", help="directory of YAML manifests (Pods included), or 'kube' "
                                             "(default: the bundled examples)")
    report_cmd.add_argument("--kubeconfig", help="with --source kube: a kubeconfig (default: in-cluster, $KUBECONFIG)")
    report_cmd.add_argument("-o", "--output", choices=("table", "json", "csv"), default="table",
                            help="output format (default: table)")
    report_cmd.add_argument("--fail-on-drift", action="store_true", help="exit 1 when any cluster drifts")
    _add_mode_option(report_cmd)
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
    explain_cmd.add_argument("--resource", default="", help="e.g. pods, or pods/exec with its subresource")
    explain_cmd.add_argument("--subresource", default="", help="e.g. exec (or write pods/exec in --resource)")
    explain_cmd.add_argument("--namespace", default="", help="namespace of the request (none: cluster-scoped)")
    explain_cmd.add_argument("--name", default="", help="name of the object requested")
    explain_cmd.add_argument("--user", default="", help="user making the request")
    explain_cmd.add_argument("--groups", default="", help="the user's groups, comma-separated")
    explain_cmd.add_argument("--path", default="", help="a non-resource URL such as /healthz, instead of --resource")
    explain_cmd.add_argument("-o", "--output", choices=("text", "json"), default="text",
                             help="output format (default: text)")
    explain_cmd.set_defaults(func=cmd_explain)

    version = sub.add_parser("version", parents=[common], help="print the version (as audit_webhook_build_info has it)")
    version.set_defaults(func=lambda _args: print(f"audit-webhook {__version__}") or 0)

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
    args = parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    decisions.set_level(getattr(args, "decision_log", "info"))
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
