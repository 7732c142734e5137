#!/usr/bin/env bash
# Offline checks of what users install: the Helm chart lints (strict) and renders, the
# plain manifests in config/ are what the chart renders (no drift), every rendered and
# committed manifest is valid for each supported Kubernetes version (strict), checkov
# finds no failed check in the chart or in config/ (suppressions are annotated in place
# with a reason), and the samples are valid against the CRD's schema. No cluster needed.
# Tools come from scripts/deps.sh: kubernetes-validate, and a virtualenv
# ($MIDGE_PY_TOOLS) with helm-python-sdk, checkov and jsonschema.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSIONS=${KUBE_VERSIONS:-"1.33.0 1.34.0 1.35.0 1.36.0 1.37.0"}
TOOLS=${MIDGE_PY_TOOLS:-$HOME/.cache/midge-py-tools}
CHART=charts/midge-operator
HA_VALUES=$CHART/ci/ha-values.yaml
NS_VALUES=$CHART/ci/namespaced-values.yaml
started=$SECONDS
step() { echo "check-chart: $* ($((SECONDS - started))s)"; }

for tool in "$TOOLS/bin/python" "$TOOLS/bin/checkov"; do
  [[ -x $tool ]] || { echo "check-chart: $tool missing; run scripts/deps.sh" >&2; exit 1; }
done
command -v kubernetes-validate >/dev/null || { echo "check-chart: kubernetes-validate missing; run scripts/deps.sh" >&2; exit 1; }
# checkov's helm framework runs `helm`: the helm-python-sdk one.
export PATH="$PWD/scripts/tools:$PATH"

# The chart ships the operator of the same version.
crate_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
app_version=$(sed -n 's/^appVersion: "\(.*\)"/\1/p' $CHART/Chart.yaml)
if [[ $crate_version != "$app_version" ]]; then
  echo "error: $CHART/Chart.yaml appVersion $app_version differs from the crate version $crate_version" >&2
  exit 1
fi

helm lint --strict $CHART
helm lint --strict $CHART -f $HA_VALUES
helm lint --strict $CHART -f $NS_VALUES
step "helm lint --strict passed (default, HA and namespaced values)"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
helm template midge-operator $CHART --namespace midge-system > "$out/chart-default.yaml"
helm template midge-operator $CHART --namespace midge-system -f $HA_VALUES > "$out/chart-ha.yaml"
# Leader election follows the replica count, and its Lease Role exists only with it.
leader_elect() { grep -A1 'name: MIDGE_OPERATOR_LEADER_ELECT' "$1" | sed -n 's/ *value: "\(.*\)"/\1/p'; }
if [[ $(leader_elect "$out/chart-default.yaml") != false || $(leader_elect "$out/chart-ha.yaml") != true ]] \
    || grep -q '^kind: Role$' "$out/chart-default.yaml" || ! grep -q '^kind: Role$' "$out/chart-ha.yaml"; then
  echo "error: leader election must be off (no Lease Role) for 1 replica and on for 2" >&2
  exit 1
fi
if helm template midge-operator $CHART --set replicaCount=2 --set leaderElection.enabled=false >/dev/null 2>&1; then
  echo "error: two replicas without leader election must be refused" >&2
  exit 1
fi
# Namespaced mode: a Role and RoleBinding in the watched namespace, no cluster-wide grant,
# and the operator told which namespace to watch.
helm template midge-operator $CHART --namespace midge-system -f $NS_VALUES > "$out/chart-namespaced.yaml"
if grep -qE '^kind: ClusterRole(Binding)?$' "$out/chart-namespaced.yaml" \
    || [[ $(grep -cE '^kind: Role(Binding)?$' "$out/chart-namespaced.yaml") != 2 ]] \
    || ! grep -A1 'name: MIDGE_OPERATOR_WATCH_NAMESPACE' "$out/chart-namespaced.yaml" | grep -q 'value: "apps"' \
    || grep -q MIDGE_OPERATOR_WATCH_NAMESPACE "$out/chart-default.yaml"; then
  echo "error: watchNamespace must swap the ClusterRole for a Role in that namespace and set MIDGE_OPERATOR_WATCH_NAMESPACE" >&2
  exit 1
fi
step "helm template renders $(grep -c '^kind:' "$out/chart-default.yaml") objects (default), $(grep -c '^kind:' "$out/chart-ha.yaml") (HA), $(grep -c '^kind:' "$out/chart-namespaced.yaml") (namespaced)"

scripts/render-manifests.sh --check
step "config/rbac and config/operator match the chart"

# One run per version over every file: loading a version's schemas is the slow part.
# (The ServiceMonitor is a Prometheus Operator CRD with no schema here: warned, not checked.)
for v in $VERSIONS; do
  if ! result=$(kubernetes-validate --strict --quiet -k "$v" "$out"/chart-*.yaml config/crd/*.yaml \
      config/rbac/*.yaml config/operator/*.yaml $CHART/crds/*.yaml 2>&1); then
    echo "$result" >&2
    echo "error: manifests invalid for Kubernetes $v" >&2
    exit 1
  fi
  grep -v "kind ServiceMonitor" <<<"$result" || true
done
step "chart and config/ manifests valid for Kubernetes ${VERSIONS// /, }"

# checkov once per directory (it is the slow step). The chart is scanned with the HA
# values, the superset of its templates; config/ holds the default-values rendering.
checkov() {
  "$TOOLS/bin/checkov" --quiet --compact --skip-download "$@"
}
checkov -d $CHART --framework helm --var-file $HA_VALUES
step "checkov: no failed check in $CHART"
checkov -d config --framework kubernetes
step "checkov: no failed check in config/"

"$TOOLS/bin/python" scripts/validate-samples.py config/crd/natsclusters.midge.dev.yaml config/samples/*.yaml
step "samples valid against the CRD schema; all chart checks passed"
