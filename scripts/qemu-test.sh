#!/usr/bin/env bash
# Runs the arm64 and armv7 `midge` from dist/ (scripts/build-dist.sh) under qemu-user on
# loopback and passes a pub/sub exchange through each with the host's midge-bench, then with
# that architecture's own midge-bench (also under qemu) when dist/ has it. Then each ARM
# build runs as a leaf node attached to the amd64 build as its hub, and messages cross the
# leaf connection both ways (scripts/tools/nats_probe.py).
#
#   scripts/qemu-test.sh [arm64] [arm]        (default: both)
#
# Environment: BENCH  host midge-bench [dist/amd64/midge-bench]
#              MSGS   messages per exchange [1000]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { echo "qemu-test.sh: $*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

BENCH=${BENCH:-$ROOT/dist/amd64/midge-bench}
MSGS=${MSGS:-1000}
declare -A QEMU=([arm64]=qemu-aarch64-static [arm]=qemu-arm-static)
ARCHES=("$@")
((${#ARCHES[@]})) || ARCHES=(arm64 arm)

for arch in "${ARCHES[@]}"; do
  [[ -n ${QEMU[$arch]:-} ]] || die "unknown arch '$arch' (one of: ${!QEMU[*]})"
  command -v "${QEMU[$arch]}" >/dev/null || die "${QEMU[$arch]} is missing; run scripts/dist-deps.sh"
  [[ -x dist/$arch/midge ]] || die "dist/$arch/midge is missing; run scripts/build-dist.sh"
done
[[ -x $BENCH ]] || die "midge-bench not found at $BENCH (set BENCH, or build-dist.sh --bins midge,midge-bench)"

WORK=$(mktemp -d /tmp/midge-qemu-test.XXXXXX)
PID=""
stop_midge() {
  [[ -n $PID ]] || return 0
  kill "$PID" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while kill -0 "$PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}
HUB_PID=""
cleanup() {
  local rc=$?
  stop_midge
  [[ -n $HUB_PID ]] && kill "$HUB_PID" 2>/dev/null || true
  if ((rc != 0)); then
    for log in "$WORK"/*.log; do
      [[ -s $log ]] && tail -20 "$log" | sed "s|^|  $(basename "$log"): |" >&2
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for arch in "${ARCHES[@]}"; do
  qemu=${QEMU[$arch]}
  log=$WORK/midge-$arch.log
  step "$arch: dist/$arch/midge under $qemu"
  start=$SECONDS
  timeout 30 "$qemu" "dist/$arch/midge" --version
  # -p -1: midge takes a free port and logs it, so no port is guessed in advance.
  : >"$log"
  "$qemu" "dist/$arch/midge" -a 127.0.0.1 -p -1 >"$log" 2>&1 &
  PID=$!
  deadline=$((SECONDS + 30))
  until grep -q 'Server is ready' "$log"; do
    kill -0 "$PID" 2>/dev/null || die "midge ($arch) exited during start-up"
    ((SECONDS < deadline)) || die "midge ($arch) did not start within 30 s"
    sleep 0.1
  done
  port=$(grep -o 'Listening for client connections on 127\.0\.0\.1:[0-9]*' "$log" | head -1 | sed 's/.*://')
  [[ -n $port ]] || die "no client port in midge's log"
  echo "midge ($arch) ready on 127.0.0.1:$port after $((SECONDS - start)) s"
  timeout 120 "$BENCH" pubsub --msgs "$MSGS" --timeout 90 --url "nats://127.0.0.1:$port" ||
    die "the host's midge-bench failed against midge ($arch)"
  # The architecture's own client too, by name: a static glibc resolves through the NSS
  # modules built into libc.a, with no shared library of that architecture on this host.
  if [[ -x dist/$arch/midge-bench ]]; then
    echo "dist/$arch/midge-bench under $qemu, to nats://localhost:$port"
    timeout 120 "$qemu" "dist/$arch/midge-bench" pubsub --msgs "$MSGS" --timeout 90 --json \
      --url "nats://localhost:$port" || die "midge-bench ($arch) failed against midge ($arch)"
  fi
  stop_midge

  step "$arch: leaf node under $qemu attached to an amd64 hub"
  hub_log=$WORK/hub-$arch.log
  leaf_log=$WORK/leaf-$arch.log
  printf 'leafnodes { listen: "127.0.0.1:-1" }\n' >"$WORK/hub.conf"
  : >"$hub_log"
  dist/amd64/midge -a 127.0.0.1 -p -1 -c "$WORK/hub.conf" >"$hub_log" 2>&1 &
  HUB_PID=$!
  deadline=$((SECONDS + 30))
  until grep -q 'Server is ready' "$hub_log"; do
    kill -0 "$HUB_PID" 2>/dev/null || die "hub exited during start-up"
    ((SECONDS < deadline)) || die "hub did not start within 30 s"
    sleep 0.1
  done
  hub_port=$(grep -o 'Listening for client connections on 127\.0\.0\.1:[0-9]*' "$hub_log" | head -1 | sed 's/.*://')
  leaf_port=$(grep -o 'Listening for leafnode connections on 127\.0\.0\.1:[0-9]*' "$hub_log" | head -1 | sed 's/.*://')
  [[ -n $hub_port && -n $leaf_port ]] || die "no ports in the hub's log"
  printf 'leafnodes { remotes: [{url: "nats-leaf://127.0.0.1:%s"}] }\n' "$leaf_port" >"$WORK/leaf.conf"
  : >"$leaf_log"
  "$qemu" "dist/$arch/midge" -a 127.0.0.1 -p -1 -c "$WORK/leaf.conf" >"$leaf_log" 2>&1 &
  PID=$!
  deadline=$((SECONDS + 30))
  until grep -q 'Leafnode connection to .* created' "$leaf_log"; do
    kill -0 "$PID" 2>/dev/null || die "leaf ($arch) exited during start-up"
    ((SECONDS < deadline)) || die "leaf ($arch) did not connect to the hub within 30 s"
    sleep 0.1
  done
  lport=$(grep -o 'Listening for client connections on 127\.0\.0\.1:[0-9]*' "$leaf_log" | head -1 | sed 's/.*://')
  python3 scripts/tools/nats_probe.py cross "127.0.0.1:$hub_port" "127.0.0.1:$lport" 30 ||
    die "hub -> leaf ($arch): nothing crossed"
  python3 scripts/tools/nats_probe.py cross "127.0.0.1:$lport" "127.0.0.1:$hub_port" 30 ||
    die "leaf ($arch) -> hub: nothing crossed"
  echo "leaf ($arch) <-> hub (amd64): messages crossed both ways"
  stop_midge
  kill "$HUB_PID" 2>/dev/null || true
  wait "$HUB_PID" 2>/dev/null || true
  echo "$arch passed in $((SECONDS - start)) s"
done
echo "qemu-test.sh: all checks passed"
