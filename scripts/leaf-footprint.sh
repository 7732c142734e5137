#!/usr/bin/env bash
# Edge footprint: resident memory of an idle leaf node holding 1,000 subscriptions, attached
# to a midge hub, for midge and for nats-server as the leaf; and the binaries' sizes.
#
#   scripts/leaf-footprint.sh [MIDGE_BIN] [NATS_SERVER_BIN]
#
# Defaults: $CARGO_TARGET_DIR/release/midge (built here) and nats-server on PATH.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
MIDGE=${1:-$TARGET/release/midge}
NATS=${2:-$(command -v nats-server || echo /usr/sbin/nats-server)}
[[ -x $MIDGE ]] || (cd "$ROOT" && cargo build --release -p midge)
WORK=$(mktemp -d /tmp/midge-footprint.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

wait_log() { # file pattern
  local deadline=$((SECONDS + 15))
  until grep -q "$2" "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "timed out waiting for '$2' in $1" >&2; exit 1; }
    sleep 0.05
  done
}

measure() { # leaf-binary label
  printf 'leafnodes { listen: "127.0.0.1:-1" }\n' >"$WORK/hub.conf"
  "$MIDGE" -a 127.0.0.1 -p -1 -c "$WORK/hub.conf" >"$WORK/hub.log" 2>&1 &
  PIDS+=($!)
  wait_log "$WORK/hub.log" 'Listening for leafnode connections'
  local lp
  lp=$(grep -o 'leafnode connections on 127\.0\.0\.1:[0-9]*' "$WORK/hub.log" | sed 's/.*://')
  printf 'leafnodes { remotes: [{url: "nats-leaf://127.0.0.1:%s"}] }\n' "$lp" >"$WORK/leaf.conf"
  "$1" -a 127.0.0.1 -p -1 -c "$WORK/leaf.conf" >"$WORK/leaf.log" 2>&1 &
  local leaf=$!
  PIDS+=("$leaf")
  wait_log "$WORK/leaf.log" 'Listening for client connections'
  local cp
  cp=$(grep -o 'client connections on 127\.0\.0\.1:[0-9]*' "$WORK/leaf.log" | sed 's/.*://')
  python3 - "$cp" "$leaf" "$2" <<'PY'
import socket, sys, time
port, pid, label = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.create_connection(("127.0.0.1", port))
s.recv(4096)
ops = b"".join(b"SUB edge.%d %d\r\n" % (i, i) for i in range(1000))
s.sendall(b'CONNECT {"verbose":false}\r\n' + ops + b"PING\r\n")
buf = b""
deadline = time.time() + 10
while b"PONG" not in buf and time.time() < deadline:
    buf += s.recv(4096)
time.sleep(2)  # let the interest reach the hub; memory is read after it settled
rss = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]
print(f"{label}: idle leaf with 1000 subscriptions: VmRSS {int(rss) / 1024:.1f} MiB")
PY
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  PIDS=()
  sleep 0.2
}

measure "$MIDGE" midge
measure "$NATS" nats-server
echo "binary sizes: midge $(stat -c %s "$MIDGE") bytes, nats-server $(stat -c %s "$NATS") bytes"
for arch in amd64 arm64 arm; do
  [[ -x $ROOT/dist/$arch/midge ]] && echo "dist/$arch/midge: $(stat -c %s "$ROOT/dist/$arch/midge") bytes"
done
exit 0
