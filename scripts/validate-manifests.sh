#!/usr/bin/env bash
# Offline checks of what the operator deploys: the committed CRD matches the Rust types,
# and every object `midge-operator render` produces for the samples is valid for each
# supported Kubernetes version (strict: unknown fields are errors), as are the examples in
# config/examples and the manifests the
# kind e2e suite applies (e2e/kind), whose cluster config must label and taint its nodes
# the way the edge sample expects; then the Helm chart and the plain manifests
# (scripts/check-chart.sh). No cluster needed.
# Needs kubernetes-validate and the tools virtualenv (scripts/deps.sh installs them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSIONS=${KUBE_VERSIONS:-"1.33.0 1.34.0 1.35.0 1.36.0 1.37.0"}
target=${CARGO_TARGET_DIR:-target}
operator="$target/debug/midge-operator"
[[ -x $operator ]] || cargo build --quiet --locked -p midge-operator
command -v kubernetes-validate >/dev/null || { echo "validate-manifests: kubernetes-validate missing; run scripts/deps.sh" >&2; exit 1; }

scripts/check-crd-drift.sh

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for sample in config/samples/*.yaml; do
  rendered="$out/$(basename "$sample")"
  "$operator" render -f "$sample" > "$rendered"
  echo "validate-manifests: $(basename "$sample") renders $(grep -c '^kind:' "$rendered") objects"
done
# One run per version over every file: loading a version's schemas is the slow part.
for v in $VERSIONS; do
  kubernetes-validate --strict --quiet -k "$v" "$out"/*.yaml config/crd/*.yaml config/examples/*.yaml e2e/kind/namespace.yaml
  echo "validate-manifests: rendered samples, CRD, examples and e2e/kind manifests valid for Kubernetes $v"
done

# kind's Cluster config is not a Kubernetes object: checked against the sample instead.
python=${MIDGE_PY_TOOLS:-$HOME/.cache/midge-py-tools}/bin/python
[[ -x $python ]] || python=python3
"$python" e2e/kind/check-cluster.py e2e/kind/cluster.yaml config/samples/natscluster-edge.yaml

scripts/check-chart.sh
