#!/usr/bin/env bash
# Proves the image clusters the way a StatefulSet runs it: three containers of the amd64
# `midge` image on a user-defined Docker network, named by network alias as a headless
# Service names pods (demo-0.demo-headless, ...), all given ONE config file whose routes
# list every server, itself included. They start in a random order, each only once the
# previous one answers /healthz, so the early servers must keep re-resolving names that do
# not exist yet. Passes when every server's /routez shows two routes, a message published
# on demo-0 reaches a subscriber on demo-2 (midge-bench --sub-url), and no server logged an
# [ERR] line about a route to itself (a self-route is dropped silently). Published ports
# are on 127.0.0.1 only. Removes the containers, the network, the image it built and its
# temporary files, also on failure.
#
# Environment: DIST_DIR  where the binaries are: <DIST_DIR>/amd64/midge,
#                        <DIST_DIR>/ca-certificates.crt [dist/, from scripts/build-dist.sh]
#              BENCH     host midge-bench [<DIST_DIR>/amd64/midge-bench]
#              IMAGE     an existing image to use instead of building one (not removed)
#              ROUTES_DEADLINE  seconds to wait for the full mesh [60]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { echo "container-cluster-test.sh: $*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

DIST_DIR=$(cd "${DIST_DIR:-$ROOT/dist}" 2>/dev/null && pwd) || die "${DIST_DIR:-$ROOT/dist} does not exist; run scripts/build-dist.sh"
BENCH=${BENCH:-$DIST_DIR/amd64/midge-bench}
ROUTES_DEADLINE=${ROUTES_DEADLINE:-60}
IMAGE=${IMAGE:-}
SUFFIX=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
NAMES=(demo-0 demo-1 demo-2)

for tool in docker jq curl shuf; do
  command -v "$tool" >/dev/null || die "$tool is missing; run scripts/dist-deps.sh"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"
if [[ -z $IMAGE ]]; then
  [[ -x $DIST_DIR/amd64/midge ]] || die "$DIST_DIR/amd64/midge is missing; run scripts/build-dist.sh"
  [[ -s $DIST_DIR/ca-certificates.crt ]] || die "$DIST_DIR/ca-certificates.crt is missing; run scripts/build-dist.sh"
fi
[[ -x $BENCH ]] || die "midge-bench not found at $BENCH (set BENCH, or build-dist.sh --bins midge,midge-bench)"
"$BENCH" --help 2>&1 | grep -q -- '--sub-url' ||
  die "$BENCH has no --sub-url; it predates cluster support (rebuild with scripts/build-dist.sh)"

WORK=$(mktemp -d /tmp/midge-cluster-test.XXXXXX)
NETWORK=""
BUILT_IMAGE=""
declare -A CONTAINER=() CLIENT_PORT=() HTTP_PORT=()
T0=$SECONDS
cleanup() {
  local rc=$?
  local n
  for n in "${NAMES[@]}"; do
    [[ -n ${CONTAINER[$n]:-} ]] || continue
    if ((rc != 0)); then
      docker logs "${CONTAINER[$n]}" 2>&1 | tail -20 | sed "s/^/  $n: /" >&2 || true
    fi
    docker rm -f "${CONTAINER[$n]}" >/dev/null 2>&1 || true
  done
  [[ -n $NETWORK ]] && docker network rm "$NETWORK" >/dev/null 2>&1 || true
  [[ -n $BUILT_IMAGE ]] && docker rmi "$BUILT_IMAGE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  ((rc == 0)) || echo "container-cluster-test.sh: FAILED after $((SECONDS - T0)) s (cleaned up)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECS DESCRIPTION COMMAND...: polls COMMAND until it succeeds or SECS pass.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

if [[ -n $IMAGE ]]; then
  step "reuse image $IMAGE"
  docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE does not exist"
else
  IMAGE=midge:cluster-test-$SUFFIX
  step "build linux/amd64 -> $IMAGE"
  start=$SECONDS
  # The build context is only what the Dockerfile copies (dist/ may live outside the repo:
  # DIST_DIR), not the whole checkout.
  mkdir -p "$WORK/context/dist"
  cp Dockerfile "$WORK/context/"
  cp "$DIST_DIR/ca-certificates.crt" "$WORK/context/dist/"
  cp -r "$DIST_DIR/amd64" "$WORK/context/dist/amd64"
  REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  # As image-test.sh: the classic builder, --no-cache (its cache ignores the platform),
  # TARGETARCH passed because only BuildKit sets it.
  if ! DOCKER_BUILDKIT=0 docker build --no-cache --platform linux/amd64 \
    --build-arg TARGETARCH=amd64 --build-arg REVISION="$REVISION" \
    -t "$IMAGE" "$WORK/context" >"$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    die "docker build failed"
  fi
  BUILT_IMAGE=$IMAGE
  echo "built $IMAGE ($(docker image inspect "$IMAGE" --format '{{.Os}}/{{.Architecture}}, {{.Size}} bytes')) in $((SECONDS - start)) s"
fi
got=$(docker image inspect "$IMAGE" --format '{{.Os}}/{{.Architecture}}')
[[ $got == linux/amd64 ]] || die "$IMAGE is $got, not linux/amd64"

step "network and the shared config"
NETWORK=midge-cluster-test-$SUFFIX
docker network create "$NETWORK" >/dev/null
echo "network $NETWORK"
# One file for all three, as a StatefulSet's ConfigMap: every route, each server's own too.
cat >"$WORK/midge.conf" <<'EOF'
port: 4222
http_port: 8222
cluster {
  name: demo
  port: 6222
  routes: [
    nats://demo-0.demo-headless:6222
    nats://demo-1.demo-headless:6222
    nats://demo-2.demo-headless:6222
  ]
}
EOF
chmod 0644 "$WORK/midge.conf"
sed 's/^/  /' "$WORK/midge.conf"

healthz_ok() {
  local n=$1
  [[ $(docker inspect -f '{{.State.Running}}' "${CONTAINER[$n]}") == true ]] ||
    die "container $n exited"
  [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:${HTTP_PORT[$n]}/healthz") == 200 ]]
}

mapfile -t ORDER < <(shuf -e "${NAMES[@]}")
step "start in random order: ${ORDER[*]}"
prev=""
for n in "${ORDER[@]}"; do
  # The gap: the next one starts only once the previous one serves /healthz, so those
  # already up have been failing to resolve it until now.
  [[ -z $prev ]] || wait_for 30 "$prev /healthz" healthz_ok "$prev"
  CONTAINER[$n]=$(docker run -d --name "midge-$n-$SUFFIX" --network "$NETWORK" \
    --network-alias "$n.demo-headless" --hostname "$n" \
    -v "$WORK/midge.conf:/etc/midge/midge.conf:ro" \
    -p 127.0.0.1::4222 -p 127.0.0.1::8222 \
    "$IMAGE" -c /etc/midge/midge.conf)
  CLIENT_PORT[$n]=$(docker port "${CONTAINER[$n]}" 4222/tcp | head -1 | sed 's/.*://')
  HTTP_PORT[$n]=$(docker port "${CONTAINER[$n]}" 8222/tcp | head -1 | sed 's/.*://')
  echo "$(printf '%3d' $((SECONDS - T0))) s  started $n (midge-$n-$SUFFIX): clients 127.0.0.1:${CLIENT_PORT[$n]}, http 127.0.0.1:${HTTP_PORT[$n]}"
  prev=$n
done
wait_for 30 "$prev /healthz" healthz_ok "$prev"
STARTED=$SECONDS

step "full mesh: num_routes == 2 on every server (deadline ${ROUTES_DEADLINE} s)"
num_routes() {
  curl -fsS --max-time 2 "http://127.0.0.1:${HTTP_PORT[$1]}/routez" 2>/dev/null |
    jq -r '.num_routes // empty' 2>/dev/null
}
meshed() {
  local n
  for n in "${NAMES[@]}"; do
    [[ $(docker inspect -f '{{.State.Running}}' "${CONTAINER[$n]}") == true ]] || die "container $n exited"
    [[ $(num_routes "$n") == 2 ]] || return 1
  done
}
deadline=$((SECONDS + ROUTES_DEADLINE))
until meshed; do
  if ((SECONDS >= deadline)); then
    for n in "${NAMES[@]}"; do echo "  $n: num_routes=$(num_routes "$n" || true)" >&2; done
    die "no full mesh after ${ROUTES_DEADLINE} s"
  fi
  sleep 0.2
done
echo "full mesh $((SECONDS - STARTED)) s after the last start ($((SECONDS - T0)) s in all)"
for n in "${NAMES[@]}"; do
  curl -fsS "http://127.0.0.1:${HTTP_PORT[$n]}/routez" |
    jq -r --arg n "$n" '"  \($n) (\(.server_name // .server_id)): \(.num_routes) routes -> " +
      ([.routes[] | "\(.remote_name // .remote_id)@\(.ip):\(.port)"] | join(", "))'
done

step "a message across: publish on demo-0, subscribe on demo-2"
timeout 60 "$BENCH" pubsub --msgs 1000 --timeout 30 \
  --url "nats://127.0.0.1:${CLIENT_PORT[demo-0]}" --sub-url "nats://127.0.0.1:${CLIENT_PORT[demo-2]}" ||
  die "pub/sub from demo-0 to demo-2 failed"

step "logs: no [ERR] about a route to itself"
bad=0
for n in "${NAMES[@]}"; do
  docker logs "${CONTAINER[$n]}" >"$WORK/$n.log" 2>&1
  ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "${CONTAINER[$n]}")
  # Its own alias or address, or the words nats-server uses for a self-route.
  if grep -F '[ERR]' "$WORK/$n.log" | grep -iE "$n\.demo-headless|${ip//./\\.}:6222|self|itself|duplicate" \
    >"$WORK/$n.self"; then
    echo "  $n logged errors about a route to itself:" >&2
    sed 's/^/    /' "$WORK/$n.self" >&2
    bad=1
  fi
  echo "  $n ($ip): $(grep -c -F '[ERR]' "$WORK/$n.log" || true) [ERR], $(grep -c -F '[WRN]' "$WORK/$n.log" || true) [WRN] lines in all"
  # The warnings are expected on the early servers: names of peers not started yet.
  grep -E '\[(ERR|WRN)\]' "$WORK/$n.log" | head -3 | sed 's/^/      /' || true
done
((bad == 0)) || die "a self-route was reported as an error"

echo
echo "container-cluster-test.sh: all checks passed in $((SECONDS - T0)) s (start order ${ORDER[*]})"
