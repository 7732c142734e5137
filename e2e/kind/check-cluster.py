"""Offline check of e2e/kind/cluster.yaml against the edge sample: the kind config names a
control plane, cloud workers, and edge workers whose labels satisfy the edge pool's
nodeSelector and whose taints its tolerations admit, while the cloud workers carry no
such taint. kind itself is not needed.

usage: check-cluster.py CLUSTER.yaml SAMPLE.yaml
"""

from __future__ import annotations

import sys

import yaml


def tolerated(taint: dict, tolerations: list[dict]) -> bool:
    for t in tolerations:
        if t.get("key") != taint.get("key"):
            continue
        if t.get("effect") not in (None, "", taint.get("effect")):
            continue
        if t.get("operator", "Equal") == "Exists" or t.get("value") == taint.get("value"):
            return True
    return False


def taints(node: dict) -> list[dict]:
    out = []
    for patch in node.get("kubeadmConfigPatches", []):
        doc = yaml.safe_load(patch)
        out += doc.get("nodeRegistration", {}).get("taints", [])
    return out


def main(cluster_path: str, sample_path: str) -> int:
    with open(cluster_path) as f:
        cluster = yaml.safe_load(f)
    with open(sample_path) as f:
        sample = yaml.safe_load(f)
    errors = []
    if cluster.get("kind") != "Cluster" or cluster.get("apiVersion") != "kind.x-k8s.io/v1alpha4":
        errors.append("not a kind.x-k8s.io/v1alpha4 Cluster")
    nodes = cluster.get("nodes", [])
    if sum(n.get("role") == "control-plane" for n in nodes) != 1:
        errors.append("expected one control-plane node")
    pools = {p["name"]: p for p in sample["spec"]["pools"]}
    edge = pools["edge"]
    selector = edge.get("nodeSelector", {})
    workers = [n for n in nodes if n.get("role") == "worker"]
    edge_nodes = [n for n in workers if all(n.get("labels", {}).get(k) == v for k, v in selector.items())]
    cloud_nodes = [n for n in workers if n not in edge_nodes]
    if len(edge_nodes) != 2:
        errors.append(f"{len(edge_nodes)} workers match the edge pool's nodeSelector {selector}, expected 2")
    if len(cloud_nodes) != 2:
        errors.append(f"{len(cloud_nodes)} cloud workers, expected 2")
    for n in edge_nodes:
        node_taints = taints(n)
        if not node_taints:
            errors.append("an edge worker has no taint: cloud servers could land there")
        for t in node_taints:
            if not tolerated(t, edge.get("tolerations", [])):
                errors.append(f"the edge pool does not tolerate {t}")
    for n in cloud_nodes:
        if taints(n):
            errors.append("a cloud worker is tainted")
    for e in errors:
        print(f"check-cluster: {cluster_path}: {e}", file=sys.stderr)
    if not errors:
        print(f"check-cluster: {cluster_path}: {len(cloud_nodes)} cloud and {len(edge_nodes)} edge workers fit {sample_path}")
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
