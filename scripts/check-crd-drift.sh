#!/usr/bin/env bash
# Regenerates the NatsCluster CRD from the Rust types and fails when the committed YAML
# differs, so the schema in config/crd/ can never drift from the code; the Helm chart's
# copy in charts/midge-operator/crds/ must be identical to it.
set -euo pipefail
cd "$(dirname "$0")/.."
crd=config/crd/natsclusters.midge.dev.yaml
chart_crd=charts/midge-operator/crds/natsclusters.midge.dev.yaml
cargo run --quiet -p midge-operator -- crd > "$crd"
if ! git diff --exit-code -- "$crd"; then
    echo "error: $crd is out of date; run 'cargo run -p midge-operator -- crd > $crd' and commit it" >&2
    exit 1
fi
if ! diff -u "$crd" "$chart_crd"; then
    echo "error: $chart_crd differs from $crd; run 'cp $crd $chart_crd' and commit it" >&2
    exit 1
fi
