#!/usr/bin/env bash
# Compare midge (A) with nats-server (B): the same midge-bench command against both,
# servers started with identical flags on free ports, rounds alternating A/B, medians.
#
# Environment (defaults in brackets):
#   ROUNDS [3]  MSGS [1000000]  SIZE [16]  SUBS [4]  REQS [20000]  CONNS [10000]
#   SCENARIOS ["pub pubsub fanout queue reqrep idle pairs-1acc pairs-100acc"]; also ping
#                    (PING/PONG round trips: the loopback floor of reqrep and js-pub)
#   PAIRS [100]      pairs-1acc / pairs-100acc: PAIRS publisher->subscriber pairs at once,
#                    each user in one shared account, or each in an account of its own
#   MIDGE_BIN        server A binary  [$CARGO_TARGET_DIR/release/midge, built here]
#   NATS_SERVER_BIN  server B binary  [nats-server on PATH, else /usr/sbin/nats-server]
#   SERVER_ARGS      extra flags given to both servers, after `-a 127.0.0.1 -p PORT`
#   BENCH_ARGS       extra flags given to every midge-bench run (e.g. --window 0)
#   SKIP_BUILD=1     use the binaries as they are
#   CLUSTER=1        two routed servers per side: the publisher (and requester) on the
#                    first, subscribers (and responder) on the second (midge-bench --sub-url)
#   LEAF=1           a hub and a leaf node per side: the publisher on the hub, subscribers
#                    on the leaf (LEAF=reverse: the publisher on the leaf)
#   HOT=1            a busy loop at nice 19 on every core for the whole run, so no core ever
#                    sleeps: on a VM, waking an idle vCPU costs tens of microseconds, which
#                    is most of a ping, reqrep or js-pub round trip (see docs/benchmarks.md);
#                    with HOT=1 those rows show the servers' own work. The loops take a
#                    little CPU from both servers alike (nice 19 weighs ~1.5% of nice 0)
#   TLS=1            every client connection is TLS: both servers get the same `tls {}` block
#                    (a CA and a server certificate for localhost/127.0.0.1 generated with
#                    openssl into the log dir), midge-bench runs with --tls --tls-ca
#   WS=1             clients connect over WebSocket: both servers get `websocket { port:
#                    <free>, no_tls: true }` (with TLS=1: the same `tls {}` instead, wss://)
#                    and midge-bench a ws:// URL. TLS and WS do not apply to idle.
#
# JetStream (JS=1): single servers over plain TCP, each round on fresh servers started with
# `-js -sd <fresh store dir>` (both store dirs under STORE_ROOT, so on the same disk), and
# the JetStream scenarios of midge-bench. A server that refuses to start that way, or starts
# but does not answer $JS.API.INFO (midge while JetStream is being built), gets "unsupported"
# in its column instead of failing the run.
#   SCENARIOS ["js-pub js-pub-async js-pull js-push kv-put kv-get"]; js-recovery (below) on
#                    request
#   SIZE [128]       payload bytes (KV: value bytes)
#   JS_MSGS [100000] messages (or keys) of js-pub-async, js-pull, js-push, kv-put, kv-get
#   JS_SYNC_MSGS [10000]  messages of js-pub (one acked publish in flight)
#   WINDOW [256]     acks or direct gets outstanding (js-pub-async, kv-*, the pre-fills)
#   BATCH [256]      js-pull messages per pull request
#   ACK [none]       js-push ack policy: none or explicit
#   STORAGE [file]   stream storage: file or memory
#   STORE_ROOT       where the fresh store dirs go [the log dir, under /tmp]
#   SYNC [default]   the servers' fsync policy:
#                    default: no JetStream config beyond -js -sd; each server syncs in the
#                      background as it does by default (nats-server 2.9.10: every 60 s, not
#                      configurable in 2.9; 2.10+: every 2 min). An ack then means "written
#                      to the server's file (or its write buffer)", not "on disk".
#                    always: both servers also get `-c` with `jetstream { sync_interval:
#                      always }` (nats-server 2.10+ syntax: fsync before each ack). nats-server
#                      2.9.10 refuses the field, so its column reads "unsupported": 2.9.10 has
#                      no per-ack fsync at all, and equal durability is only SYNC=default.
#   js-recovery      fills a file stream with REC_BYTES [1000000000] of REC_SIZE [1024] byte
#                    messages (acked, WINDOW outstanding), kill -9s the server, restarts it
#                    on the same store dir and times until $JS.API.STREAM.INFO reports every
#                    message (scripts/js-recovery-bench.sh runs just this; REC_TIMEOUT [900]
#                    seconds per step). DROP_CACHES=1: `sync; echo 3 > /proc/sys/vm/drop_caches`
#                    before the restart, so it reads the store from disk (root; this empties
#                    the page cache of the whole machine)
#   JS_CONF_A, JS_CONF_B  config text for side A or B's JetStream servers (given with -c
#                    besides -js -sd; overrides SYNC=always), e.g. equal durability with
#                    nats-server 2.9.10's fixed 60 s background fsync:
#                    JS_CONF_A='jetstream { sync_interval: "60s" }'
# Plumbing check with nats-server on both sides:
#   MIDGE_BIN=/usr/sbin/nats-server scripts/bench.sh
#   MIDGE_BIN=/usr/sbin/nats-server JS=1 scripts/bench.sh
set -euo pipefail

ROUNDS=${ROUNDS:-3}
MSGS=${MSGS:-1000000}
JS=${JS:-}
if [[ -n $JS ]]; then SIZE=${SIZE:-128}; else SIZE=${SIZE:-16}; fi
SUBS=${SUBS:-4}
REQS=${REQS:-20000}
CONNS=${CONNS:-10000}
if [[ -n $JS ]]; then
  SCENARIOS=${SCENARIOS:-js-pub js-pub-async js-pull js-push kv-put kv-get}
else
  SCENARIOS=${SCENARIOS:-pub pubsub fanout queue reqrep idle pairs-1acc pairs-100acc}
fi
JS_MSGS=${JS_MSGS:-100000}
JS_SYNC_MSGS=${JS_SYNC_MSGS:-10000}
WINDOW=${WINDOW:-256}
BATCH=${BATCH:-256}
ACK=${ACK:-none}
STORAGE=${STORAGE:-file}
SYNC=${SYNC:-default}
REC_BYTES=${REC_BYTES:-1000000000}
REC_SIZE=${REC_SIZE:-1024}
REC_TIMEOUT=${REC_TIMEOUT:-900}
DROP_CACHES=${DROP_CACHES:-}
PAIRS=${PAIRS:-100}
SERVER_ARGS=${SERVER_ARGS:-}
BENCH_ARGS=${BENCH_ARGS:-}
READY_SECS=${READY_SECS:-15}
CLUSTER=${CLUSTER:-}
LEAF=${LEAF:-}
TLS=${TLS:-}
WS=${WS:-}
HOT=${HOT:-}

# midge-bench's errors end up in the table's log lines: no backtraces in them.
export RUST_LIB_BACKTRACE=0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
COMMAND="$(printf '%q ' "$0" "$@")"
ENV_SHOWN="ROUNDS=$ROUNDS MSGS=$MSGS SIZE=$SIZE SUBS=$SUBS REQS=$REQS CONNS=$CONNS PAIRS=$PAIRS"
if [[ -n $JS ]]; then
  ENV_SHOWN="JS=$JS ROUNDS=$ROUNDS SIZE=$SIZE JS_MSGS=$JS_MSGS JS_SYNC_MSGS=$JS_SYNC_MSGS WINDOW=$WINDOW BATCH=$BATCH ACK=$ACK STORAGE=$STORAGE SYNC=$SYNC"
  [[ " $SCENARIOS " == *" js-recovery "* ]] && ENV_SHOWN+=" REC_BYTES=$REC_BYTES REC_SIZE=$REC_SIZE${DROP_CACHES:+ DROP_CACHES=$DROP_CACHES}"
fi
[[ -n $TLS ]] && ENV_SHOWN+=" TLS=$TLS"
[[ -n $HOT ]] && ENV_SHOWN+=" HOT=$HOT"
[[ -n $WS ]] && ENV_SHOWN+=" WS=$WS"

die() { echo "bench.sh: $*" >&2; exit 1; }
command -v jq >/dev/null || die "jq is required to read midge-bench --json output"
if [[ -n $JS ]]; then
  [[ -n $CLUSTER || -n $LEAF || -n $TLS || -n $WS ]] && die "JS=1 measures single servers over plain TCP (no CLUSTER, LEAF, TLS or WS)"
  [[ $SYNC == default || $SYNC == always ]] || die "SYNC must be default or always"
  [[ $STORAGE == file || $STORAGE == memory ]] || die "STORAGE must be file or memory"
  [[ -z $DROP_CACHES || -w /proc/sys/vm/drop_caches ]] || die "DROP_CACHES=1 needs a writable /proc/sys/vm/drop_caches (root)"
fi
if [[ -n $TLS || -n $WS ]]; then
  for scenario in $SCENARIOS; do
    [[ $scenario == idle ]] && die "idle measures plain TCP connections: leave it out of SCENARIOS with TLS or WS"
  done
  [[ -n $TLS ]] && { command -v openssl >/dev/null || die "TLS=1 needs openssl to make a test certificate"; }
fi

if [[ -z ${SKIP_BUILD:-} ]]; then
  if [[ -n ${MIDGE_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release -p midge-bench)
  else
    (cd "$ROOT" && cargo build --release -p midge -p midge-bench)
  fi
fi
BENCH=$TARGET/release/midge-bench
A_BIN=${MIDGE_BIN:-$TARGET/release/midge}
B_BIN=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
for bin in "$BENCH" "$A_BIN" "$B_BIN"; do [[ -x $bin ]] || die "not executable: $bin"; done

# The idle scenario holds CONNS sockets in midge-bench and as many in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < CONNS + 100 )); then
  echo "warning: ulimit -n is $(ulimit -n); lowering CONNS to fit" >&2
  CONNS=$(( $(ulimit -n) - 100 ))
fi

LOGDIR=$(mktemp -d /tmp/midge-bench.XXXXXX)
declare -A PID PORT WSPORT
cleanup() {
  local who
  for who in "${!PID[@]}"; do
    kill "${PID[$who]}" 2>/dev/null || true
    wait "${PID[$who]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }

# Any socket on the port counts as taken, including TIME_WAIT leftovers of the idle run.
port_free() { [[ -z $(ss -Htan "sport = :$1" 2>/dev/null) ]]; }

# Ready means: the port accepts a connection and the server greets with INFO.
ready() {
  timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && head -c 4 <&3' _ "$1" 2>/dev/null \
    | grep -q '^INFO'
}

# A free port below the usual ephemeral range (32768+), where client sockets would collide.
free_port() {
  local port
  while :; do
    port=$(( 10000 + RANDOM % 20000 ))
    port_free "$port" && { echo "$port"; return; }
  done
}

# TLS=1: a CA and a server certificate for localhost and 127.0.0.1 (ECDSA P-256), shared
# by both servers; midge-bench trusts the CA.
TLS_BLOCK=""
TRANSPORT_ARGS=""
if [[ -n $TLS ]]; then
  (
    cd "$LOGDIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -keyout ca-key.pem -out ca.pem -subj /CN=midge-bench-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout server-key.pem -out server.csr -subj /CN=localhost
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
      -extfile server.ext -out server.pem
  ) >"$LOGDIR/openssl.log" 2>&1 || { cat "$LOGDIR/openssl.log" >&2; die "openssl failed"; }
  TLS_BLOCK="tls { cert_file: \"$LOGDIR/server.pem\", key_file: \"$LOGDIR/server-key.pem\" }"
  TRANSPORT_ARGS="--tls --tls-ca $LOGDIR/ca.pem"
fi

# client_url WHO: the URL midge-bench uses for server WHO.
client_url() {
  if [[ -n $WS ]]; then
    echo "$( [[ -n $TLS ]] && echo wss || echo ws )://127.0.0.1:${WSPORT[$1]}"
  else
    echo "nats://127.0.0.1:${PORT[$1]}"
  fi
}

# try_start_server WHO BIN [-c FILE] [FLAGS...]: starts it on a free port, waits for
# readiness, sets PID/PORT[WHO] (and WSPORT[WHO] with WS=1); fails after five attempts. With
# TLS or WS the server runs from a config file of its own: FILE's text plus the `tls {}` /
# `websocket {}` blocks.
try_start_server() {
  local who=$1 bin=$2 attempt port deadline base="" conf wsport
  shift 2
  if [[ ${1:-} == -c ]]; then
    base=$2
    shift 2
  fi
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    conf=()
    if [[ -n $TLS || -n $WS ]]; then
      {
        [[ -n $base ]] && cat "$base"
        [[ -n $TLS ]] && echo "$TLS_BLOCK"
        if [[ -n $WS ]]; then
          wsport=$(free_port)
          WSPORT[$who]=$wsport
          echo "websocket {"
          echo "  host: 127.0.0.1"
          echo "  port: $wsport"
          if [[ -n $TLS ]]; then echo "  $TLS_BLOCK"; else echo "  no_tls: true"; fi
          echo "}"
        fi
      } >"$LOGDIR/$who.conf"
      conf=(-c "$LOGDIR/$who.conf")
    elif [[ -n $base ]]; then
      conf=(-c "$base")
    fi
    # shellcheck disable=SC2086
    "$bin" -a 127.0.0.1 -p "$port" "${conf[@]}" $SERVER_ARGS "$@" >"$LOGDIR/$who.log" 2>&1 &
    PID[$who]=$!
    PORT[$who]=$port
    deadline=$(( $(now_ms) + READY_SECS * 1000 ))
    while (( $(now_ms) < deadline )); do
      kill -0 "${PID[$who]}" 2>/dev/null || break
      if ready "$port"; then
        [[ -z $WS ]] && return 0
        timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "${WSPORT[$who]}" 2>/dev/null && return 0
      fi
      sleep 0.02
    done
    kill "${PID[$who]}" 2>/dev/null || true
    wait "${PID[$who]}" 2>/dev/null || true
    unset "PID[$who]"
    echo "$who did not become ready on port $port (attempt $attempt); log:" >&2
    tail -5 "$LOGDIR/$who.log" >&2
  done
  return 1
}

start_server() {
  try_start_server "$@" || die "could not start $1 ($2)"
}

stop_server() {
  local who=$1
  kill "${PID[$who]}" 2>/dev/null || true
  wait "${PID[$who]}" 2>/dev/null || true
  unset "PID[$who]"
}

# Metrics per scenario: "json_key:label:better".
metrics_for() {
  case $1 in
    pub) echo "pub_msgs_per_s:msgs/s:higher" ;;
    pubsub) echo "sub_msgs_per_s:msgs/s received:higher" ;;
    fanout) echo "sub_msgs_per_s:msgs/s delivered (total):higher" ;;
    queue) echo "sub_msgs_per_s:msgs/s delivered (total):higher" ;;
    reqrep) printf '%s\n' "p50_us:p50 us:lower" "p99_us:p99 us:lower" "avg_us:avg us:lower" ;;
    ping) printf '%s\n' "p50_us:round trip p50 us:lower" "p90_us:round trip p90 us:lower" "p99_us:round trip p99 us:lower" ;;
    idle) printf '%s\n' "rss_delta_kb:RSS delta KiB ($CONNS conns):lower" "rss_after_kb:RSS after KiB:lower" ;;
    pairs-*) echo "sub_msgs_per_s:msgs/s delivered (total, $PAIRS pairs):higher" ;;
    js-pub) printf '%s\n' "msgs_per_s:msgs/s (1 in flight):higher" "p50_us:ack p50 us:lower" "p99_us:ack p99 us:lower" ;;
    js-pub-async) echo "msgs_per_s:msgs/s ($WINDOW acks outstanding):higher" ;;
    js-pull) echo "msgs_per_s:msgs/s (batch $BATCH, each acked):higher" ;;
    js-push) echo "msgs_per_s:msgs/s (ack $ACK):higher" ;;
    kv-put) echo "ops_per_s:puts/s ($WINDOW outstanding):higher" ;;
    kv-get) echo "ops_per_s:direct gets/s ($WINDOW outstanding):higher" ;;
    js-recovery) printf '%s\n' "full_secs:s from restart to full STREAM.INFO ($(( REC_BYTES / REC_SIZE )) msgs):lower" \
      "connected_secs:s from restart to first connection:lower" "fill_msgs_per_s:fill msgs/s ($REC_SIZE B):higher" ;;
  esac
}

# accounts_conf FILE MODE: PAIRS users u0..u(PAIRS-1) (password = name), all in the global
# account (MODE=1acc) or each in an account of its own (MODE=100acc).
accounts_conf() {
  local file=$1 mode=$2 i
  {
    if [[ $mode == 1acc ]]; then
      echo "authorization { users: ["
      for (( i = 0; i < PAIRS; i++ )); do echo "  {user: u$i, password: u$i}"; done
      echo "] }"
    else
      echo "accounts {"
      for (( i = 0; i < PAIRS; i++ )); do echo "  A$i: { users: [{user: u$i, password: u$i}] }"; done
      echo "}"
    fi
  } >"$file"
}

bench_args_for() {
  case $1 in
    pub | pubsub) echo "--msgs $MSGS --size $SIZE" ;;
    fanout | queue) echo "--msgs $MSGS --size $SIZE --subs $SUBS" ;;
    reqrep) echo "--msgs $REQS --size $SIZE" ;;
    ping) echo "--msgs $REQS" ;;
    idle) echo "--conns $CONNS" ;;
    pairs-*) echo "--msgs $MSGS --size $SIZE --pairs $PAIRS --user-prefix u" ;;
    js-pub) echo "--msgs $JS_SYNC_MSGS --size $SIZE --storage $STORAGE" ;;
    js-pub-async | kv-put | kv-get) echo "--msgs $JS_MSGS --size $SIZE --storage $STORAGE --window $WINDOW" ;;
    js-pull) echo "--msgs $JS_MSGS --size $SIZE --storage $STORAGE --window $WINDOW --batch $BATCH" ;;
    js-push) echo "--msgs $JS_MSGS --size $SIZE --storage $STORAGE --window $WINDOW --ack $ACK" ;;
  esac
}

declare -A SAMPLES UNSUPPORTED
FAILED=0

# server_bin WHO: the binary of side A (A, A-rec, ...) or B.
server_bin() { [[ $1 == A* ]] && echo "$A_BIN" || echo "$B_BIN"; }

# JS=1: the config file each side's JetStream servers get besides -js -sd, if any:
# JS_CONF_A / JS_CONF_B (its text), else the SYNC=always block for both.
declare -A JS_CONF_FILE
if [[ -n $JS ]]; then
  for side in A B; do
    text=$( [[ $side == A ]] && echo "${JS_CONF_A:-}" || echo "${JS_CONF_B:-}" )
    [[ -z $text && $SYNC == always ]] && text="jetstream { sync_interval: always }"
    if [[ -n $text ]]; then
      echo "$text" >"$LOGDIR/js-$side.conf"
      JS_CONF_FILE[$side]=$LOGDIR/js-$side.conf
    fi
  done
fi

# js_conf_args WHO: `-c FILE` for WHO's side, or nothing.
js_conf_args() {
  local file=${JS_CONF_FILE[${1:0:1}]:-}
  [[ -n $file ]] && echo "-c $file"
  return 0
}
STORE_ROOT=${STORE_ROOT:-$LOGDIR}
mkdir -p "$STORE_ROOT"
STORE_SEQ=0

# fresh_store WHO: a new, empty store directory for server WHO.
fresh_store() {
  STORE_SEQ=$(( STORE_SEQ + 1 ))
  local dir
  dir=$(mktemp -d "$STORE_ROOT/store-$1-$STORE_SEQ.XXXXXX")
  echo "$dir"
}

# start_js_server WHO: a JetStream server on a fresh store dir (STORE[WHO]); when it refuses
# to start (the last line of its log says why) or starts but does not answer $JS.API.INFO,
# marks WHO unsupported and fails.
declare -A STORE
start_js_server() {
  local who=$1
  STORE[$who]=$(fresh_store "$who")
  local conf
  conf=$(js_conf_args "$who")
  # shellcheck disable=SC2086
  if ! try_start_server "$who" "$(server_bin "$who")" $conf -js -sd "${STORE[$who]}" 2>>"$LOGDIR/start-$who.err"; then
    UNSUPPORTED[$who]="refused -js -sd <dir>${conf:+ $conf}: $(grep -v '^ *$' "$LOGDIR/$who.log" | tail -1 | cut -c1-160)"
    echo "  $who: unsupported: ${UNSUPPORTED[$who]}" >&2
    echo "${UNSUPPORTED[$who]}" >"$LOGDIR/unsupported-$who"
    rm -rf "${STORE[$who]}"
    return 1
  fi
  # Accepting -js is not serving JetStream (midge while it is being built): ask $JS.API.INFO.
  if ! "$BENCH" js-info --url "nats://127.0.0.1:${PORT[$who]}" --timeout 10 >/dev/null 2>"$LOGDIR/js-info-$who.err"; then
    UNSUPPORTED[$who]="started with -js -sd <dir>${conf:+ $conf}, but \$JS.API.INFO: $(grep -v '^ *$' "$LOGDIR/js-info-$who.err" | head -1 | cut -c1-160)"
    echo "  $who: unsupported: ${UNSUPPORTED[$who]}" >&2
    echo "${UNSUPPORTED[$who]}" >"$LOGDIR/unsupported-$who"
    stop_js_server "$who"
    return 1
  fi
}

stop_js_server() {
  local who=$1
  [[ -n ${PID[$who]:-} ]] && stop_server "$who"
  [[ -n ${STORE[$who]:-} ]] && rm -rf "${STORE[$who]}"
  unset "STORE[$who]"
}

# measure_recovery WHO: fill a file stream on a fresh JetStream server, kill -9 it, start it
# again on the same store dir (new port) and time until STREAM.INFO has every message. Prints
# one JSON object: js-recover's report plus fill_msgs_per_s and store_bytes. Runs in a
# subshell: fails with 2 when the server refuses JetStream (the reason in a file), else 1.
measure_recovery() {
  local who=$1 bin dir port pid t0 fill rec msgs=$(( REC_BYTES / REC_SIZE )) bytes bench
  bin=$(server_bin "$who")
  start_js_server "$who-rec" || return 2
  dir=${STORE[$who-rec]}
  fill=$("$BENCH" js-fill --url "nats://127.0.0.1:${PORT[$who-rec]}" --json --msgs "$msgs" \
    --size "$REC_SIZE" --window "$WINDOW" --storage file --timeout "$REC_TIMEOUT") || { stop_js_server "$who-rec"; return 1; }
  kill -9 "${PID[$who-rec]}"
  wait "${PID[$who-rec]}" 2>/dev/null || true
  unset "PID[$who-rec]"
  bytes=$(du -sb "$dir" | cut -f1)
  port=$(free_port)
  if [[ -n $DROP_CACHES ]]; then
    sync
    echo 3 >/proc/sys/vm/drop_caches
  fi
  t0=$(now_ms)
  # shellcheck disable=SC2046,SC2086
  "$bin" -a 127.0.0.1 -p "$port" $(js_conf_args "$who") $SERVER_ARGS -js -sd "$dir" >"$LOGDIR/$who-rec-restart.log" 2>&1 &
  pid=$!
  PID[$who-rec]=$pid
  # js-recover times itself; this loop only stops it if the server exits meanwhile.
  "$BENCH" js-recover --url "nats://127.0.0.1:$port" --json --msgs "$msgs" --stream BENCH_RECOVERY \
    --started-at-ms "$t0" --timeout "$REC_TIMEOUT" >"$LOGDIR/$who-recover.json" &
  bench=$!
  while kill -0 "$bench" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      kill "$bench" 2>/dev/null || true
      wait "$bench" 2>/dev/null || true
      echo "the restarted server exited: $(tail -1 "$LOGDIR/$who-rec-restart.log")" >&2
      stop_js_server "$who-rec"
      return 1
    fi
    sleep 0.05
  done
  if ! wait "$bench"; then
    stop_js_server "$who-rec"
    return 1
  fi
  rec=$(cat "$LOGDIR/$who-recover.json")
  stop_js_server "$who-rec"
  jq -c --argjson fill "$fill" --argjson bytes "$bytes" \
    '. + {fill_msgs_per_s: $fill.msgs_per_s, fill_secs: $fill.secs, store_bytes: $bytes}' <<<"$rec"
}

# measure WHO SCENARIO: one run; appends each metric to SAMPLES[WHO|SCENARIO|key].
measure() {
  local who=$1 scenario=$2 out line key url extra="" mode name=$2 rc
  [[ -n ${UNSUPPORTED[$who]:-} ]] && return 0
  if [[ $scenario == js-recovery ]]; then
    rc=0
    out=$(measure_recovery "$who" 2>>"$LOGDIR/bench-$who.err") || rc=$?
    if (( rc == 0 )); then
      while IFS= read -r line; do
        key=${line%%:*}
        SAMPLES[$who|$scenario|$key]+="$(jq -r ".$key" <<<"$out") "
      done < <(metrics_for "$scenario")
      echo "  $who $scenario: $out" >&2
    elif (( rc == 2 )); then
      UNSUPPORTED[$who]=$(cat "$LOGDIR/unsupported-$who-rec")
    else
      FAILED=1
      echo "  $who $scenario: FAILED: $(tail -1 "$LOGDIR/bench-$who.err")" >&2
    fi
    return 0
  fi
  if [[ $scenario == pairs-* ]]; then
    mode=${scenario#pairs-}
    accounts_conf "$LOGDIR/$mode.conf" "$mode"
    start_server "$who-$mode" "$( [[ $who == A ]] && echo "$A_BIN" || echo "$B_BIN")" -c "$LOGDIR/$mode.conf"
    url=$(client_url "$who-$mode")
    name=pairs
  elif [[ $scenario == idle ]]; then
    start_server "$who-idle" "$( [[ $who == A ]] && echo "$A_BIN" || echo "$B_BIN")"
    extra="--server-pid ${PID[$who-idle]}"
    url=nats://127.0.0.1:${PORT[$who-idle]}
  else
    url=$(client_url "$who")
    [[ -n $CLUSTER || -n $LEAF ]] && extra="--sub-url $(client_url "$who-2")"
    if [[ $LEAF == reverse ]]; then
      url=$(client_url "$who-2")
      extra="--sub-url $(client_url "$who")"
    fi
  fi
  # shellcheck disable=SC2046,SC2086
  if out=$("$BENCH" "$name" --url "$url" --json $(bench_args_for "$scenario") $extra $TRANSPORT_ARGS $BENCH_ARGS \
      2>>"$LOGDIR/bench-$who.err"); then
    while IFS= read -r line; do
      key=${line%%:*}
      SAMPLES[$who|$scenario|$key]+="$(jq -r ".$key" <<<"$out") "
    done < <(metrics_for "$scenario")
    echo "  $who $scenario: $out" >&2
  else
    FAILED=1
    echo "  $who $scenario: FAILED: $(tail -1 "$LOGDIR/bench-$who.err")" >&2
  fi
  [[ $scenario == idle ]] && stop_server "$who-idle"
  [[ $scenario == pairs-* ]] && stop_server "$who-$mode"
  return 0
}

median() {
  local n
  n=$(wc -w <<<"$1")
  (( n == 0 )) && { echo ""; return; }
  tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk -v n="$n" '
    { v[NR] = $1 } END { if (n % 2) print v[(n + 1) / 2]; else print (v[n / 2] + v[n / 2 + 1]) / 2 }'
}

fmt() { [[ -z $1 ]] && echo "FAIL" || awk -v x="$1" 'BEGIN { printf (x >= 1000 ? "%.0f" : "%.2f"), x }'; }

# shown WHO MEDIAN: the table cell.
shown() { [[ -n ${UNSUPPORTED[$1]:-} ]] && echo "unsupported" || fmt "$2"; }

echo "# midge vs nats-server"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "- command: $ENV_SHOWN $COMMAND"
echo "- A (midge): $A_BIN $(timeout 2 "$A_BIN" --version 2>&1 | head -1 || true)"
echo "- B (nats-server): $B_BIN $(timeout 2 "$B_BIN" --version 2>&1 | head -1 || true)"
echo "- servers: -a 127.0.0.1 -p <free port> $SERVER_ARGS; bench: $BENCH <scenario> --json $TRANSPORT_ARGS $BENCH_ARGS"
echo "- git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown); logs: $LOGDIR"
[[ -n $CLUSTER ]] && echo "- cluster: two routed servers per side; publisher on the first, subscribers on the second"
[[ -n $TLS ]] && echo "- TLS: every client connection; both servers: tls { cert_file, key_file } (ECDSA P-256 server certificate from a generated CA)"
[[ -n $WS ]] && echo "- WebSocket: clients connect to websocket { port: <free>, $( [[ -n $TLS ]] && echo "tls {} (wss://)" || echo "no_tls: true (ws://)" ) } (no compression)"
if [[ -n $JS ]]; then
  echo "- JetStream: each round starts both servers afresh with -js -sd <new dir under $STORE_ROOT> ($(df --output=source "$STORE_ROOT" | tail -1), $(findmnt -no FSTYPE -T "$STORE_ROOT" 2>/dev/null || echo '?')); SYNC=$SYNC$( [[ $SYNC == default ]] && echo " (each server's own background fsync: nats-server 2.9.10 every 60 s)"); storage $STORAGE"
  for side in A B; do
    [[ -n ${JS_CONF_FILE[$side]:-} ]] && echo "- $side JetStream config (-c): \`$(tr '\n' ' ' <"${JS_CONF_FILE[$side]}" | sed 's/ *$//')\`"
  done
  [[ -n $DROP_CACHES ]] && echo "- js-recovery: page cache dropped before each restart"
fi
[[ -n $LEAF ]] && echo "- leaf: a hub and a leaf per side ($( [[ $LEAF == reverse ]] && echo "publisher on the leaf, subscribers on the hub" || echo "publisher on the hub, subscribers on the leaf"))"
echo

# start_pair WHO BIN: two servers routed to each other (WHO and WHO-2).
start_pair() {
  local who=$1 bin=$2 r1 r2
  r1=$(free_port)
  r2=$(free_port)
  start_server "$who" "$bin" --cluster_name bench --cluster "nats://127.0.0.1:$r1" \
    --routes "nats://127.0.0.1:$r2"
  start_server "$who-2" "$bin" --cluster_name bench --cluster "nats://127.0.0.1:$r2" \
    --routes "nats://127.0.0.1:$r1"
}

# start_leaf_pair WHO BIN: a hub (WHO) and a leaf dialling it (WHO-2).
start_leaf_pair() {
  local who=$1 bin=$2 lp
  lp=$(free_port)
  printf 'leafnodes { listen: "127.0.0.1:%s" }\n' "$lp" >"$LOGDIR/$who-hub.conf"
  printf 'leafnodes { remotes: [{url: "nats-leaf://127.0.0.1:%s"}] }\n' "$lp" >"$LOGDIR/$who-leaf.conf"
  start_server "$who" "$bin" -c "$LOGDIR/$who-hub.conf"
  start_server "$who-2" "$bin" -c "$LOGDIR/$who-leaf.conf"
}

if [[ -n $JS ]]; then
  :
elif [[ -n $CLUSTER ]]; then
  start_pair A "$A_BIN"
  start_pair B "$B_BIN"
elif [[ -n $LEAF ]]; then
  start_leaf_pair A "$A_BIN"
  start_leaf_pair B "$B_BIN"
else
  start_server A "$A_BIN"
  start_server B "$B_BIN"
fi
# JS=1: every scenario but js-recovery (which starts its own) runs on the round's servers.
JS_ROUND_SERVERS=""
if [[ -n $JS ]]; then
  for scenario in $SCENARIOS; do [[ $scenario != js-recovery ]] && JS_ROUND_SERVERS=1; done
fi
if [[ -n $HOT ]]; then
  for (( core = 0; core < $(nproc); core++ )); do
    nice -n 19 bash -c 'while :; do :; done' &
    PID[hot-$core]=$!
  done
fi

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  if [[ -n $JS_ROUND_SERVERS ]]; then
    for who in A B; do
      [[ -z ${UNSUPPORTED[$who]:-} ]] && { start_js_server "$who" || true; }
    done
  fi
  for scenario in $SCENARIOS; do
    measure A "$scenario"
    measure B "$scenario"
  done
  if [[ -n $JS_ROUND_SERVERS ]]; then
    stop_js_server A
    stop_js_server B
  fi
done

echo "| scenario | metric | midge median | nats-server median | ratio midge/nats-server |"
echo "|---|---|---:|---:|---:|"
for scenario in $SCENARIOS; do
  while IFS= read -r line; do
    IFS=: read -r key label better <<<"$line"
    a=$(median "${SAMPLES[A|$scenario|$key]:-}")
    b=$(median "${SAMPLES[B|$scenario|$key]:-}")
    ratio=FAIL
    if [[ -n ${UNSUPPORTED[A]:-}${UNSUPPORTED[B]:-} ]]; then
      ratio=n/a
    elif [[ -n $a && -n $b ]]; then
      ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf (b == 0 ? "n/a" : "%.2f"), (b == 0 ? 0 : a / b) }')
    fi
    echo "| $scenario | $label | $(shown A "$a") | $(shown B "$b") | $ratio ($better is better) |"
  done < <(metrics_for "$scenario")
done
echo
for who in A B; do
  [[ -n ${UNSUPPORTED[$who]:-} ]] && echo "- $who unsupported: ${UNSUPPORTED[$who]}"
done
echo "Samples (A = midge, B = nats-server), in run order:"
for scenario in $SCENARIOS; do
  while IFS= read -r line; do
    key=${line%%:*}
    echo "- $scenario $key: A: ${SAMPLES[A|$scenario|$key]:-} B: ${SAMPLES[B|$scenario|$key]:-}"
  done < <(metrics_for "$scenario")
done
exit "$FAILED"
