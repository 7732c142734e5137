#!/usr/bin/env bash
# The end-to-end scenarios on kind: creates the cluster in e2e/kind/cluster.yaml, builds the
# image for the host's platform with the repository's Dockerfile (from dist/, as
# scripts/build-dist.sh lays it out) and loads it with `kind load`, installs the operator
# chart from charts/, applies the namespace and the edge sample, runs
# `cargo test -p midge-e2e --test kind -- --ignored`, and deletes the cluster. On failure
# it saves every pod's log, the events, and each midge pod's /varz and /routez under
# $ARTIFACTS first. Needs Docker, kind, kubectl and helm; about 10 minutes on a laptop.
#
# On an amd64 host the "edge" nodes are amd64 too: the script labels them
# kubernetes.io/arch=arm64 so the sample's ARM affinity schedules there, and the report
# shows x86_64 for them. Run it on an arm64 runner, or use e2e/run-docker.sh (qemu), to
# see the ARM builds serve.
#
# Environment: KEEP=1     keep the cluster after the run
#              ARTIFACTS  where failure logs go [e2e-artifacts/]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { echo "run-kind.sh: $*" >&2; exit 1; }
step() { printf '\n==> %s (%ss)\n' "$*" "$SECONDS"; }

CLUSTER=midge-e2e
NAMESPACE=iot
ARTIFACTS=${ARTIFACTS:-$ROOT/e2e-artifacts}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE=ghcr.io/midge-dev/midge:$VERSION
case $(uname -m) in
  x86_64) ARCH=amd64 ;;
  aarch64) ARCH=arm64 ;;
  *) die "unsupported host $(uname -m)" ;;
esac

for tool in docker kind kubectl helm cargo; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"
for bin in midge midge-operator; do
  [[ -x dist/$ARCH/$bin ]] || die "dist/$ARCH/$bin is missing; run scripts/build-dist.sh --targets $ARCH"
done

collect() {
  mkdir -p "$ARTIFACTS"
  echo "run-kind.sh: saving logs, events and /varz to $ARTIFACTS" >&2
  kubectl get events -A --sort-by=.lastTimestamp >"$ARTIFACTS/events.txt" 2>&1 || true
  kubectl get natsclusters,statefulsets,pods,services -A -o wide >"$ARTIFACTS/objects.txt" 2>&1 || true
  kubectl get natsclusters -A -o yaml >"$ARTIFACTS/natsclusters.yaml" 2>&1 || true
  local ns pod
  while read -r ns pod; do
    kubectl logs -n "$ns" "$pod" --all-containers --prefix >"$ARTIFACTS/$ns-$pod.log" 2>&1 || true
    kubectl logs -n "$ns" "$pod" --all-containers --previous >"$ARTIFACTS/$ns-$pod.previous.log" 2>/dev/null || true
  done < <(kubectl get pods -A --no-headers -o custom-columns=NS:.metadata.namespace,NAME:.metadata.name 2>/dev/null)
  # The image has no shell or curl: /varz through a port-forward.
  while read -r pod; do
    local pf port
    kubectl port-forward -n "$NAMESPACE" "pod/$pod" :8222 >"$ARTIFACTS/pf.out" 2>/dev/null &
    pf=$!
    for _ in $(seq 50); do
      port=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\).*/\1/p' "$ARTIFACTS/pf.out" | head -1)
      [[ -n $port ]] && break
      sleep 0.2
    done
    if [[ -n $port ]]; then
      for page in varz routez; do
        curl -fsS --max-time 5 "http://127.0.0.1:$port/$page" >"$ARTIFACTS/$pod.$page.json" 2>&1 || true
      done
    fi
    kill "$pf" 2>/dev/null || true
    wait "$pf" 2>/dev/null || true
  done < <(kubectl get pods -n "$NAMESPACE" -l app.kubernetes.io/name=midge --no-headers -o custom-columns=NAME:.metadata.name 2>/dev/null)
  rm -f "$ARTIFACTS/pf.out"
}

WORK=$(mktemp -d /tmp/midge-e2e-kind.XXXXXX)
CREATED=""
cleanup() {
  local rc=$?
  if ((rc != 0)) && [[ -n $CREATED ]]; then collect; fi
  if [[ -n $CREATED && -z ${KEEP:-} ]]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
  ((rc == 0)) || echo "run-kind.sh: FAILED after ${SECONDS} s" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "kind cluster $CLUSTER"
kind create cluster --config e2e/kind/cluster.yaml --wait 180s
CREATED=1
kubectl config use-context "kind-$CLUSTER"
if [[ $ARCH == amd64 ]]; then
  for node in $(kubectl get nodes -l node-role.midge.dev/edge=true -o name); do
    kubectl label "$node" kubernetes.io/arch=arm64 --overwrite
  done
fi

step "image $IMAGE (linux/$ARCH) -> kind load"
mkdir -p "$WORK/context/dist"
cp Dockerfile "$WORK/context/"
cp dist/ca-certificates.crt "$WORK/context/dist/"
cp -r "dist/$ARCH" "$WORK/context/dist/$ARCH"
DOCKER_BUILDKIT=0 docker build --platform "linux/$ARCH" --build-arg TARGETARCH="$ARCH" \
  --build-arg VERSION="$VERSION" -t "$IMAGE" "$WORK/context"
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "operator chart"
# Two replicas: leader election on, so the leader-kill scenario has a standby to take over.
helm install midge-operator charts/midge-operator --namespace midge-system --create-namespace \
  --set image.pullPolicy=Never --set replicaCount=2 --wait --timeout 5m
kubectl apply -f e2e/kind/namespace.yaml

step "scenarios (cargo test -p midge-e2e --test kind -- --ignored)"
export MIDGE_E2E_REPORT=$WORK/report.txt RUST_LIB_BACKTRACE=0
rc=0
cargo test --locked -p midge-e2e --test kind -- --ignored --nocapture || rc=$?
[[ -s $WORK/report.txt ]] && cat "$WORK/report.txt"
((rc == 0)) || die "the scenarios failed"
echo "run-kind.sh: passed in ${SECONDS} s"
