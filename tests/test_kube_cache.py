"""What the informers keep of each object, and how the store indexes their events."""

from __future__ import annotations

from kubernetes import client

from tests import helpers
from webhook.adapters.store.kube import KubeStore, lean_cluster, lean_metadata, same_content, shared_strings
from webhook.adapters.store.kube_watches import lean_deployment, lean_namespace, lean_pod, resources
from webhook.core import names


def cluster(name: str, namespace: str | None = None, rv: str = "1") -> dict:
    obj = helpers.cluster(name)
    obj["metadata"] |= {"resourceVersion": rv, "managedFields": [{"manager": "kubectl"}]}
    obj["status"] = {"conditions": [{"type": "Healthy"}], **({"namespaceName": namespace} if namespace else {})}
    return obj


def test_cached_clusters_keep_what_decisions_read_and_namespace_only():
    obj = cluster("a", "cluster-x")
    obj["spec"]["auditLogging"] = {"enabled": True, "policyPreset": "minimal"}
    obj["metadata"] |= {"finalizers": ["kubermatic.k8c.io/delete-nodes"], "ownerReferences": [{"kind": "Project"}],
                        "annotations": {names.OPT_OUT_ANNOTATION: "true"}, "labels": {"project-id": "p"}}
    obj["spec"] |= {"pause": True, "version": "1.33.4", "clusterNetwork": {"pods": {"cidrBlocks": ["10.0.0.0/8"]}}}
    obj["spec"]["cloud"] = {"dc": "dc1", "aws": {"vpcID": "vpc-1"}}
    kept = lean_cluster(obj)
    assert set(kept["metadata"]) == {"name", "resourceVersion", "annotations", "labels"}
    assert kept["status"] == {"namespaceName": "cluster-x"}  # KKP's conditions change all the time
    assert kept["spec"] == {"auditLogging": obj["spec"]["auditLogging"], "pause": True, "cloud": {"dc": "dc1"}}
    assert "status" not in lean_cluster(cluster("a"))


def test_a_kkp_upgrade_of_a_cluster_is_no_change_to_the_cache():
    before, after = cluster("a", rv="1"), cluster("a", rv="2")
    after["spec"] |= {"version": "1.34.1"}
    assert same_content(lean_cluster(before), lean_cluster(after))


def test_cached_objects_share_their_strings_and_keep_their_values():
    import json

    doc = '{"metadata": {"name": "a"}, "data": {"policy.yaml": "rules: []", "n": 1, "l": ["x", null, true]}}'
    one, two = shared_strings(json.loads(doc)), shared_strings(json.loads(doc))
    assert one == json.loads(doc)
    assert one["data"]["policy.yaml"] is two["data"]["policy.yaml"]
    assert next(iter(one["metadata"])) is next(iter(two["metadata"]))
    assert one["data"]["l"][0] is two["data"]["l"][0]


def test_kubectls_copy_of_the_last_applied_object_is_dropped():
    obj = {"metadata": {"name": "x", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}",
                                                      "keep": "me"}}}
    assert lean_metadata(obj)["metadata"]["annotations"] == {"keep": "me"}


def test_pods_and_deployments_keep_what_rollouts_read():
    pod = {"metadata": {"name": "p", "namespace": "cluster-a", "uid": "u", "creationTimestamp": "T",
                        "labels": {"app": "apiserver"}, "annotations": {names.SETTINGS_HASH_ANNOTATION: "h",
                                                                        "other": "x"}}}
    assert lean_pod(pod)["metadata"] == {"name": "p", "namespace": "cluster-a", "uid": "u", "creationTimestamp": "T",
                                         "annotations": {names.SETTINGS_HASH_ANNOTATION: "h"}}
    deploy = {"metadata": {"name": "apiserver", "namespace": "cluster-a", "resourceVersion": "9", "labels": {}},
              "spec": {"replicas": 2, "template": {"metadata": {"annotations": {"a": "b"}},
                                                   "spec": {"containers": [{"name": "apiserver"}]}}}}
    assert lean_deployment(deploy)["spec"] == {"template": {"metadata": {"annotations": {"a": "b"}}}}
    assert lean_namespace({"metadata": {"name": "n", "labels": {"x": "y"}}})["metadata"] == {"name": "n"}


def test_only_a_changed_resource_version_is_no_change():
    a = lean_cluster(cluster("a", rv="1"))
    assert same_content(a, lean_cluster(cluster("a", rv="2")))
    assert not same_content(a, lean_cluster(cluster("a", "cluster-y", rv="2")))
    assert not same_content(a, None) and same_content(None, None)


def test_the_reconciler_watches_only_objects_of_its_names_and_apiserver_pods_metadata():
    def watched(mode):
        return {(r.kind, r.field_selector or r.label_selector or "all") for r in resources(mode, "apiserver")}

    assert watched("kkp") == {("Namespace", "all"), ("NetworkPolicy", "metadata.name=audit-logging-egress"),
                              ("Pod", "app=apiserver"), ("ConfigMap", "metadata.name=audit-config"),
                              ("Secret", "metadata.name=audit-logs-fluentbit")}
    assert watched("standalone") - watched("kkp") == {("Deployment", "metadata.name=apiserver")}
    pods, = (r for r in resources("kkp", "apiserver") if r.kind == "Pod")
    assert pods.metadata_only and not pods.keep_unchanged  # a change in the spec alone reaches the report


def test_the_store_indexes_each_event_and_keeps_every_claimant_of_a_namespace():
    store = KubeStore(client.ApiClient(client.Configuration()))
    index = store.clusters.handlers[0]
    a, b = lean_cluster(cluster("a")), lean_cluster(cluster("b", "cluster-a"))
    index(None, a)
    index(None, b)
    assert [c["metadata"]["name"] for c in store.clusters_in("cluster-a")] == ["a", "b"]
    assert store.cluster_for_namespace("cluster-a") is a
    moved = lean_cluster(cluster("b", "cluster-b"))
    index(b, moved)
    assert store.clusters_in("cluster-a") == [a] and store.cluster_for_namespace("cluster-b") is moved
    index(a, None)
    assert store.cluster_for_namespace("cluster-a") is None
    assert store.all_clusters() == [moved]


def test_the_store_keeps_every_seed_of_a_datacenter_and_every_cluster_of_one():
    """Two Seeds defining one datacenter (stored before seed.datacenter-unique) answer the same
    whatever order their events came in, and deleting one leaves the other."""
    def seed(name: str, *dcs: str) -> dict:
        return helpers.seed({dc: {} for dc in dcs}, name=name)

    a, b = seed("a", "dc1", "dc2"), seed("b", "dc1")
    for order in ((a, b), (b, a)):
        store = KubeStore(client.ApiClient(client.Configuration()))
        index = store.seeds.handlers[0]
        for s in order:
            index(None, s)
        assert store.seeds_for_datacenter("dc1") == [a, b] and store.seed_for_datacenter("dc1") is a
        index(a, None)
        assert store.seeds_for_datacenter("dc1") == [b] and store.seed_for_datacenter("dc2") is None
    clusters = store.clusters.handlers[0]
    x, y = lean_cluster(cluster("x")), lean_cluster(cluster("y"))
    clusters(None, y)
    clusters(None, x)
    assert store.clusters_in_datacenter("dc1") == [x, y]
    elsewhere = {**y, "spec": {**y["spec"], "cloud": {"dc": "dc2"}}}
    clusters(y, elsewhere)
    assert store.clusters_in_datacenter("dc1") == [x] and store.clusters_in_datacenter("dc2") == [elsewhere]
