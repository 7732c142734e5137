#!/usr/bin/env bash
# Offline checks of what the operator deploys: the committed CRD matches the Rust types,
# and every object `midge-operator render` produces for the samples is valid for each
# supported Kubernetes version (strict: unknown fields are errors). No cluster needed.
# Needs the PyPI package kubernetes-validate (scripts/deps.sh installs it).
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
  kubernetes-validate --strict --quiet -k "$v" "$out"/*.yaml config/crd/*.yaml
  echo "validate-manifests: rendered samples and CRD valid for Kubernetes $v"
done
