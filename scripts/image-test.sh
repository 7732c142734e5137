#!/usr/bin/env bash
# Proves the image for all three platforms: builds it from dist/ (scripts/build-dist.sh)
# for linux/amd64, linux/arm64 and linux/arm/v7 with the Docker engine, pushes the three
# images to a registry started here (Debian's docker-registry, loopback only, temporary
# storage), assembles and pushes a manifest list, and checks from the registry itself that
# the list names the three platforms. Then runs the amd64 image and passes a pub/sub
# exchange through it with midge-bench from the host. Removes everything it created.
#
# Environment: BENCH  host midge-bench [dist/amd64/midge-bench]
#              TAG    image tag [the crate version]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { echo "image-test.sh: $*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

BENCH=${BENCH:-$ROOT/dist/amd64/midge-bench}
VERSION=$(cargo metadata --no-deps --format-version 1 --offline |
  jq -r '.packages[] | select(.name == "midge") | .version')
TAG=${TAG:-$VERSION}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
declare -A PLATFORM=([amd64]=linux/amd64 [arm64]=linux/arm64 [arm]=linux/arm/v7)
ARCHES=(amd64 arm64 arm)

for tool in docker docker-registry jq curl; do
  command -v "$tool" >/dev/null || die "$tool is missing; run scripts/dist-deps.sh"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"
[[ -s dist/ca-certificates.crt ]] || die "dist/ca-certificates.crt is missing; run scripts/build-dist.sh"
for arch in "${ARCHES[@]}"; do
  [[ -x dist/$arch/midge ]] || die "dist/$arch/midge is missing; run scripts/build-dist.sh"
done
[[ -x $BENCH ]] || die "midge-bench not found at $BENCH (set BENCH, or build-dist.sh --bins midge,midge-bench)"

WORK=$(mktemp -d /tmp/midge-image-test.XXXXXX)
REGISTRY_PID=""
REGISTRY_UP=""
CONTAINER=""
IMAGES=()
LIST=""
cleanup() {
  local rc=$?
  if [[ -n $CONTAINER ]]; then
    if ((rc != 0)); then docker logs "$CONTAINER" 2>&1 | tail -20 | sed 's/^/  container: /' >&2; fi
    docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
  fi
  [[ -n $LIST ]] && docker manifest rm "$LIST" >/dev/null 2>&1 || true
  ((${#IMAGES[@]})) && docker rmi "${IMAGES[@]}" >/dev/null 2>&1 || true
  if [[ -n $REGISTRY_PID ]]; then
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
  fi
  if ((rc != 0)) && [[ -z $REGISTRY_UP && -s $WORK/registry.log ]]; then
    tail -20 "$WORK/registry.log" | sed 's/^/  registry: /' >&2
  fi
  rm -rf "$WORK"
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

step "local registry on loopback"
# Port 0: the kernel picks a free port and the registry logs the address it got, so there
# is no window in which another process can take a port chosen in advance.
mkdir -p "$WORK/storage"
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $WORK/storage
http:
  addr: 127.0.0.1:0
EOF
: >"$WORK/registry.log"
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!
registry_addr() {
  kill -0 "$REGISTRY_PID" 2>/dev/null || die "docker-registry exited"
  grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$WORK/registry.log" >/dev/null
}
wait_for 20 "docker-registry to listen" registry_addr
REGISTRY=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$WORK/registry.log" | head -1 | cut -d' ' -f3)
wait_for 20 "the registry API at $REGISTRY" curl -fsS -o /dev/null "http://$REGISTRY/v2/"
REGISTRY_UP=1
echo "registry at $REGISTRY (storage $WORK/storage)"

REPO=$REGISTRY/midge
LIST=$REPO:$TAG
for arch in "${ARCHES[@]}"; do
  platform=${PLATFORM[$arch]}
  image=$REPO:$TAG-$arch
  step "build $platform -> $image"
  start=$SECONDS
  # --no-cache: the classic builder's cache ignores the platform and would hand the amd64
  # layers to the arm64 build. TARGETARCH is passed because only BuildKit sets it.
  if ! DOCKER_BUILDKIT=0 docker build --no-cache --platform "$platform" \
    --build-arg TARGETARCH="$arch" --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
    -t "$image" . >"$WORK/build-$arch.log" 2>&1; then
    cat "$WORK/build-$arch.log" >&2
    die "docker build for $platform failed"
  fi
  IMAGES+=("$image")
  got=$(docker image inspect "$image" --format '{{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}}')
  [[ $got == "$platform" ]] || die "$image was built for $got, not $platform"
  docker image inspect "$image" --format '{{json .Config.Labels}}' |
    jq -e --arg v "$VERSION" --arg r "$REVISION" '. as $l
      | ($l["org.opencontainers.image.version"] == $v)
      and ($l["org.opencontainers.image.revision"] == $r)
      and (["source", "licenses", "title", "description"]
           | all(($l["org.opencontainers.image." + .] // "") != ""))' >/dev/null ||
    die "$image lacks the OCI labels"
  user=$(docker image inspect "$image" --format '{{.Config.User}}')
  [[ $user == 65532:65532 ]] || die "$image runs as '$user', not 65532:65532"
  echo "built $image ($got, $(docker image inspect "$image" --format '{{.Size}}') bytes) in $((SECONDS - start)) s"
  docker push --quiet "$image" >/dev/null
  echo "pushed $image"
done

step "manifest list $LIST"
docker manifest rm "$LIST" >/dev/null 2>&1 || true
docker manifest create --insecure "$LIST" "${IMAGES[@]}" >/dev/null
docker manifest push --insecure "$LIST" >/dev/null
# Read it back from the registry, not from the local manifest store.
curl -fsS -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
  -H 'Accept: application/vnd.oci.image.index.v1+json' \
  "http://$REGISTRY/v2/midge/manifests/$TAG" >"$WORK/list.json"
jq -r '.mediaType' "$WORK/list.json"
jq -r '.manifests[] | "  \(.platform.os)/\(.platform.architecture)\(if .platform.variant then "/" + .platform.variant else "" end)  \(.digest)"' "$WORK/list.json"
for arch in "${ARCHES[@]}"; do
  platform=${PLATFORM[$arch]}
  jq -e --arg p "$platform" \
    '[.manifests[].platform | "\(.os)/\(.architecture)\(if .variant then "/" + .variant else "" end)"] | index($p)' \
    "$WORK/list.json" >/dev/null || die "the manifest list has no $platform entry"
done
echo "the manifest list names linux/amd64, linux/arm64 and linux/arm/v7"

step "run the amd64 image"
# Monitoring is asked for: a midge without it may refuse -m (then it runs without) or ignore
# it; /healthz is checked once monitoring is served (below).
run_container() {
  CONTAINER=$(docker run -d -p 127.0.0.1::4222 -p 127.0.0.1::8222 "$REPO:$TAG-amd64" "$@")
}
container_gone() { [[ $(docker inspect -f '{{.State.Running}}' "$CONTAINER") != true ]]; }
started_or_gone() { container_gone || docker logs "$CONTAINER" 2>&1 | grep -q 'Server is ready'; }
run_container -m 8222
wait_for 30 "midge to start or exit" started_or_gone
if container_gone; then
  echo "midge refused -m 8222:"; docker logs "$CONTAINER" 2>&1 | tail -3 | sed 's/^/  /'
  docker rm -f "$CONTAINER" >/dev/null
  run_container
fi
CLIENT_PORT=$(docker port "$CONTAINER" 4222/tcp | head -1 | sed 's/.*://')
HTTP_PORT=$(docker port "$CONTAINER" 8222/tcp | head -1 | sed 's/.*://')

# The engine's proxy accepts connections before midge listens, so readiness is the INFO
# line midge sends first, not an open port.
info_line() {
  container_gone && die "the container exited"
  local line
  { exec 3<>"/dev/tcp/127.0.0.1/$CLIENT_PORT"; } 2>/dev/null || return 1
  IFS= read -r -t 2 line <&3 || true
  exec 3<&- 3>&-
  [[ $line == "INFO {"* ]]
}
wait_for 30 "an INFO line on 127.0.0.1:$CLIENT_PORT" info_line
echo "container ${CONTAINER:0:12} serves clients on 127.0.0.1:$CLIENT_PORT"

# Monitoring counts as served when midge logs it (nats-server's wording) or anything answers
# HTTP on the port; from then on /healthz must answer 200 within the deadline.
healthz_code() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$HTTP_PORT/healthz" || true
}
if docker logs "$CONTAINER" 2>&1 | grep -q 'Starting http monitor' || [[ $(healthz_code) != 000 ]]; then
  healthz_ok() { [[ $(healthz_code) == 200 ]]; }
  wait_for 30 "/healthz to answer 200 on 127.0.0.1:$HTTP_PORT" healthz_ok
  echo "/healthz on 127.0.0.1:$HTTP_PORT: $(curl -fsS --max-time 5 "http://127.0.0.1:$HTTP_PORT/healthz")"
else
  echo "this midge serves no HTTP monitoring yet: /healthz not checked"
fi

step "pub/sub through the container"
timeout 60 "$BENCH" pubsub --msgs 1000 --timeout 30 --url "nats://127.0.0.1:$CLIENT_PORT" ||
  die "the pub/sub exchange through the container failed"
echo "image-test.sh: all checks passed"
