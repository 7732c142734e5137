#!/usr/bin/env bash
# The uplink of a leaf cluster is cut and comes back (issue 11): a hub and a leaf cluster of
# two midge servers (routed together, cluster "edge", both dialling the hub), each in its
# own network namespace, joined by a bridge in a fourth namespace on a private test subnet
# (10.214.0.0/24, which exists only inside these namespaces). The hub's bridge port goes
# down: the edge servers keep exchanging messages between themselves; once it is back up,
# the leaf connections return by themselves, interest is sent again and messages cross
# hub <-> edge once each.
#
# Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN for `ip netns`); skips with a message when
# namespaces cannot be created. Nothing outside the namespaces it creates is touched, and
# they are removed on any exit. Every wait has a deadline.
#
#   scripts/leaf-partition-test.sh       (midge from $MIDGE_BIN or <target>/debug/midge)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MIDGE_BIN="${MIDGE_BIN:-${CARGO_TARGET_DIR:-target}/debug/midge}"
PROBE="$PWD/scripts/tools/nats_probe.py"
[[ -x "$MIDGE_BIN" ]] || { echo "leaf-partition-test: no midge at $MIDGE_BIN (cargo build -p midge)" >&2; exit 1; }
MIDGE_BIN="$(realpath "$MIDGE_BIN")"

TAG="mlp$$"
BR="$TAG-br"
SERVERS=(h e1 e2)
declare -A IP=([h]=10.214.0.1 [e1]=10.214.0.2 [e2]=10.214.0.3)
BR_IP=10.214.0.254
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
    echo "leaf-partition-test: FAILED" >&2
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

if ! ip netns add "$BR" 2>"$WORK/netns.err"; then
  echo "leaf-partition-test: SKIPPED: cannot create network namespaces ($(cat "$WORK/netns.err")); needs root with CAP_NET_ADMIN"
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
  ip link add eth0 netns "$ns" type veth peer name "v$s" netns "$BR"
  ip -n "$BR" link set "v$s" master br0 up
  ip -n "$ns" addr add "${IP[$s]}/24" dev eth0
  ip -n "$ns" link set eth0 up
done

# Short ping intervals: a cut TCP connection gets no RST, so both ends learn of the loss
# from unanswered PINGs.
cat >"$WORK/h.conf" <<EOF
server_name: hub
listen: ${IP[h]}:4222
ping_interval: "1s"
ping_max: 2
leafnodes { listen: ${IP[h]}:7422 }
EOF
for s in e1 e2; do
  cat >"$WORK/$s.conf" <<EOF
server_name: $s
listen: ${IP[$s]}:4222
http: ${IP[$s]}:8222
ping_interval: "1s"
ping_max: 2
cluster {
  name: edge
  listen: ${IP[$s]}:6222
  routes: ["nats://${IP[e1]}:6222", "nats://${IP[e2]}:6222"]
}
leafnodes {
  remotes: [{url: "nats-leaf://${IP[h]}:7422"}]
  reconnect: "500ms"
}
EOF
done
for s in "${SERVERS[@]}"; do
  ip netns exec "$TAG-$s" "$MIDGE_BIN" -c "$WORK/$s.conf" >"$WORK/$s.log" 2>&1 &
  PIDS+=($!)
done

step "the edge cluster forms and both edge servers attach to the hub"
probe routes "${IP[e1]}:8222" 1 20
probe routes "${IP[e2]}:8222" 1 20
probe cross "${IP[h]}:4222" "${IP[e1]}:4222" 15
probe cross "${IP[h]}:4222" "${IP[e2]}:4222" 15
probe cross "${IP[e2]}:4222" "${IP[h]}:4222" 15
probe steady "${IP[e1]}:4222" "${IP[e2]}:4222" 30
probe steady "${IP[h]}:4222" "${IP[e2]}:4222" 30

step "uplink cut: the hub's bridge port goes down"
ip -n "$BR" link set vh down
# The edge keeps working on its own.
probe steady "${IP[e1]}:4222" "${IP[e2]}:4222" 50
probe steady "${IP[e2]}:4222" "${IP[e1]}:4222" 50

step "uplink back: leaf connections return by themselves"
ip -n "$BR" link set vh up
probe cross "${IP[h]}:4222" "${IP[e2]}:4222" 30
probe cross "${IP[e1]}:4222" "${IP[h]}:4222" 30
# Once each, in order, both ways and inside the edge.
probe steady "${IP[h]}:4222" "${IP[e1]}:4222" 30
probe steady "${IP[e2]}:4222" "${IP[h]}:4222" 30
probe steady "${IP[e1]}:4222" "${IP[e2]}:4222" 30

for i in "${!PIDS[@]}"; do
  kill -0 "${PIDS[$i]}" 2>/dev/null || { echo "leaf-partition-test: server ${SERVERS[$i]} died" >&2; exit 1; }
done
echo "leaf-partition-test: OK (uplink cut and restored)"
