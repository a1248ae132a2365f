"""Every validation rule by its stable id: the name errors carry into metrics, the decision log
and docs/rules.md. A new rule is a check that records its errors under an id, plus a row here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from webhook.core.validation.errors import Tier

# What a rule may read besides the object it judges: the fields of validation.context.Context.
Input = Literal["seed", "secrets", "owner", "config", "namespace_holders", "datacenter_holders"]


@dataclass(frozen=True)
class Rule:
    """What a rule holds to, whether it gates injection (SAFETY) or only admission (POLICY), and
    the inputs it reads besides the object."""

    summary: str
    tier: Tier = Tier.SAFETY
    inputs: tuple[Input, ...] = ()


RULES: dict[str, Rule] = {
    # Object shape
    "object.metadata": Rule("a Cluster has metadata with a name"),
    "object.spec-map": Rule("a Cluster's spec is a map"),
    "object.seed": Rule("a Seed is an object"),
    "object.field-type": Rule("a field of ours has the type it documents (map, list, string, boolean)"),
    # spec.auditLogging
    "audit.enabled-bool": Rule("auditLogging.enabled is true or false"),
    "audit.preset-supported": Rule("auditLogging.policyPreset is one of the bundled presets, or empty"),
    # Clusters and namespaces
    "cluster.namespace-holder": Rule("a Cluster never points into a control-plane namespace another Cluster holds",
                                     inputs=("namespace_holders",)),
    # Seeds
    "seed.annotations": Rule("the Seed's allowance annotations (plugins, keys, record changes, ceiling) parse"),
    "seed.datacenters": Rule("spec.datacenters is a map of datacenters, each with a spec map"),
    "seed.enforce-bool": Rule("a datacenter's enforceAuditLogging is true or false"),
    "seed.datacenter-unique": Rule("a datacenter is defined by one Seed only, as KKP requires", Tier.POLICY,
                                   inputs=("datacenter_holders",)),
    # The audit policy (audit-config ConfigMaps)
    "policy.configmap-key": Rule("an audit-config ConfigMap holds policy.yaml"),
    "policy.preset-owned": Rule("a preset's audit-config is not edited while the preset owns it", Tier.POLICY,
                                inputs=("owner",)),
    "policy.document": Rule("policy.yaml is an audit.k8s.io/v1 Policy with at least one rule"),
    "policy.size": Rule("policy.yaml stays within the parser's budget of nodes and bytes"),
    "policy.yaml": Rule("policy.yaml is valid YAML"),
    "policy.shape": Rule("list fields of a policy rule are lists of strings"),
    "policy.stages": Rule("omitStages names real audit stages"),
    "policy.resources": Rule("resources entries are {group, resources, resourceNames} as kube-apiserver reads them"),
    "policy.rule-shape": Rule("each policy rule is a map with a level"),
    "policy.level": Rule("each policy rule's level is None, Metadata, Request or RequestResponse"),
    "policy.non-resource-urls": Rule("nonResourceURLs begin with / and never mix with resources"),
    # The sidecar's fluent-bit maps
    "sidecar.map-shape": Rule("service, filters and outputs are maps of string keys to string values"),
    "sidecar.key-form": Rule("a key is a fluent-bit key: letters, digits, '.', '_' and '-'"),
    "sidecar.key-duplicate": Rule("a key appears once in any spelling (fluent-bit keys are case-insensitive)"),
    "sidecar.value-string": Rule("values are strings"),
    "sidecar.value-empty": Rule("values are not empty"),
    "sidecar.characters": Rule("keys and values hold only printable characters, no line breaks or controls"),
    "sidecar.variables": Rule("${VAR} names only variables the sidecar has, and never where it decides a rule",
                              inputs=("seed",)),
    "sidecar.protected-path": Rule("no key names the audit log, policy, webhook config or the sidecar's own files"),
    "sidecar.own-pod": Rule("no output or listener aims at the apiserver Pod itself"),
    "sidecar.plugin-name": Rule("every filter and output names its plugin"),
    "sidecar.plugin-denied": Rule("plugins that run code, read files or listen are refused", inputs=("seed",)),
    "sidecar.plugin-known": Rule("the plugin is one fluent-bit has (webhook/data/fluentbit-plugins.yaml)",
                                 Tier.POLICY),
    "sidecar.records-kept": Rule("in an enforcing datacenter no filter or output drops or changes records",
                                 Tier.POLICY, inputs=("seed",)),
    "sidecar.key-denied": Rule("keys for files, code, commands and credentials are refused unless a Seed allows them",
                               inputs=("seed",)),
    "sidecar.value-denied": Rule("values that would turn a plugin into a listener or a file reader are refused"),
    "sidecar.host-required": Rule("outputs that default to 127.0.0.1 name their Host"),
    "sidecar.match-required": Rule("every filter and output has Match or Match_Regex"),
    "sidecar.service": Rule("[SERVICE] takes only its allow-listed keys, with bounded values", inputs=("seed",)),
    "sidecar.env": Rule("extraEnvs are {name, value} with valid, unique names and string values"),
    "sidecar.env-denied": Rule("no extraEnvs name that the loader, TLS libraries, proxies or cloud SDKs read"),
    "sidecar.env-references": Rule("extraEnvs values do not refer to other variables"),
    "sidecar.resources": Rule("resources are cpu, memory or ephemeral-storage quantities, requests within limits"),
    "sidecar.resource-ceiling": Rule("resources stay at or below the operator's ceiling", Tier.POLICY,
                                     inputs=("seed",)),
    "sidecar.resource-floor": Rule("resources stay at or above what fluent-bit needs to run", Tier.POLICY),
    # The webhook backend
    "webhook.reference": Rule("webhookBackend.auditWebhookConfig names a Secret by name and namespace"),
    # Whose credentials an apiserver gets is never in doubt: a stored Cluster naming a foreign Secret is not injected.
    "webhook.secret-namespace": Rule("a Cluster uses only Secrets of its own namespace or the Seed's",
                                     inputs=("seed",)),
    "webhook.secret-exists": Rule("the named Secret exists (on create it may follow the Cluster)", Tier.POLICY,
                                  inputs=("secrets",)),
    "webhook.secret-key": Rule("the Secret holds webhook.yaml", Tier.POLICY, inputs=("secrets",)),
    "webhook.kubeconfig": Rule("webhook.yaml is a kubeconfig kube-apiserver can load", Tier.POLICY,
                               inputs=("secrets",)),
    "webhook.backoff": Rule("auditWebhookInitialBackoff is a non-negative Go duration"),
}
