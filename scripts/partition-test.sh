#!/usr/bin/env bash
# A network partition that heals (issue 4): three midge servers, each in its own network
# namespace, joined by a bridge in a fourth namespace on a private test subnet
# (10.213.0.0/24, which exists only inside these namespaces). Server c's bridge port is
# taken down: a and b must keep delivering and drop c; once the port is up again every
# server must be back to two routes and messages must cross to and from c.
#
# Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN for `ip netns`); skips with a message when
# namespaces cannot be created. Nothing outside the namespaces it creates is touched, and
# they are removed on any exit. Every wait has a deadline; the whole run takes ~15 s.
#
#   scripts/partition-test.sh            (midge from $MIDGE_BIN or <target>/debug/midge)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MIDGE_BIN="${MIDGE_BIN:-${CARGO_TARGET_DIR:-target}/debug/midge}"
PROBE="$PWD/scripts/tools/nats_probe.py"
[[ -x "$MIDGE_BIN" ]] || { echo "partition-test: no midge at $MIDGE_BIN (cargo build -p midge)" >&2; exit 1; }
MIDGE_BIN="$(realpath "$MIDGE_BIN")"

# Unique per run, so concurrent runs do not collide (namespace names are global).
TAG="mpt$$"
BR="$TAG-br"
SERVERS=(a b c)
declare -A IP=([a]=10.213.0.1 [b]=10.213.0.2 [c]=10.213.0.3)
BR_IP=10.213.0.254
PIDS=()
WORK="$(mktemp -d)"

cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for s in "${SERVERS[@]}"; do ip netns del "$TAG-$s" 2>/dev/null || true; done
  ip netns del "$BR" 2>/dev/null || true
  if [[ $rc -ne 0 ]]; then
    for s in "${SERVERS[@]}"; do
      [[ -f "$WORK/$s.log" ]] && { echo "---- $s log ----"; tail -n 40 "$WORK/$s.log"; }
    done
    echo "partition-test: FAILED" >&2
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

if ! ip netns add "$BR" 2>"$WORK/netns.err"; then
  echo "partition-test: SKIPPED: cannot create network namespaces ($(cat "$WORK/netns.err")); needs root with CAP_NET_ADMIN"
  exit 0
fi

step() { printf '==> %s\n' "$*"; }
probe() { ip netns exec "$BR" python3 "$PROBE" "$@"; }

step "network: bridge namespace $BR, one namespace per server"
ip -n "$BR" link set lo up
ip -n "$BR" link add br0 type bridge
ip -n "$BR" addr add "$BR_IP/24" dev br0
ip -n "$BR" link set br0 up
for s in "${SERVERS[@]}"; do
  ns="$TAG-$s"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  # Both ends are created directly inside the namespaces: nothing appears in the host's.
  ip link add eth0 netns "$ns" type veth peer name "v$s" netns "$BR"
  ip -n "$BR" link set "v$s" master br0 up
  ip -n "$ns" addr add "${IP[$s]}/24" dev eth0
  ip -n "$ns" link set eth0 up
done

routes="\"nats://${IP[a]}:6222\", \"nats://${IP[b]}:6222\", \"nats://${IP[c]}:6222\""
for s in "${SERVERS[@]}"; do
  # A short ping interval: a partitioned TCP connection gets no RST, so a route learns
  # the peer is gone from unanswered PINGs (ping_max of them), as nats-server's do.
  cat >"$WORK/$s.conf" <<EOF
server_name: $s
listen: ${IP[$s]}:4222
http: ${IP[$s]}:8222
ping_interval: "1s"
ping_max: 2
cluster {
  name: partition
  listen: ${IP[$s]}:6222
  routes: [$routes]
}
EOF
  ip netns exec "$TAG-$s" "$MIDGE_BIN" -c "$WORK/$s.conf" >"$WORK/$s.log" 2>&1 &
  PIDS+=($!)
done

step "the full mesh forms"
for s in "${SERVERS[@]}"; do probe routes "${IP[$s]}:8222" 2 20; done
probe cross "${IP[a]}:4222" "${IP[c]}:4222" 10
probe cross "${IP[c]}:4222" "${IP[b]}:4222" 10

step "partition: c's bridge port goes down"
ip -n "$BR" link set vc down
# a and b deliver throughout, and drop c once its PINGs go unanswered.
probe steady "${IP[a]}:4222" "${IP[b]}:4222" 50
probe steady "${IP[b]}:4222" "${IP[a]}:4222" 50
probe routes "${IP[a]}:8222" 1 15
probe routes "${IP[b]}:8222" 1 15
probe steady "${IP[a]}:4222" "${IP[b]}:4222" 20

step "heal: the port comes back up"
ip -n "$BR" link set vc up
for s in "${SERVERS[@]}"; do probe routes "${IP[$s]}:8222" 2 20; done
probe cross "${IP[a]}:4222" "${IP[c]}:4222" 10
probe cross "${IP[c]}:4222" "${IP[b]}:4222" 10
probe cross "${IP[b]}:4222" "${IP[c]}:4222" 10

for i in "${!PIDS[@]}"; do
  kill -0 "${PIDS[$i]}" 2>/dev/null || { echo "partition-test: server ${SERVERS[$i]} died" >&2; exit 1; }
done
echo "partition-test: OK (partition healed)"
