#!/usr/bin/env bash
# JetStream recovery after kill -9, midge (A) vs nats-server (B), side by side: for each
# server, a fresh store dir, a file stream filled with REC_BYTES of REC_SIZE-byte messages
# (every publish acked, WINDOW acks outstanding), then `kill -9`, a restart on the same store
# dir, and the time from the restart until `$JS.API.STREAM.INFO.BENCH_RECOVERY` reports every
# message (midge-bench js-fill, js-recover). A server that refuses `-js` reads "unsupported".
#
# This is scripts/bench.sh with JS=1 SCENARIOS=js-recovery; its environment applies:
#   REC_BYTES [1000000000]  REC_SIZE [1024]  ROUNDS [1]  WINDOW [256]  REC_TIMEOUT [900]
#   SYNC [default]  STORE_ROOT [the log dir, under /tmp]  MIDGE_BIN  NATS_SERVER_BIN  SKIP_BUILD
# Plumbing check with nats-server on both sides:
#   MIDGE_BIN=/usr/sbin/nats-server REC_BYTES=50000000 scripts/js-recovery-bench.sh
set -euo pipefail
export JS=1 SCENARIOS=js-recovery ROUNDS=${ROUNDS:-1}
exec "$(dirname "${BASH_SOURCE[0]}")/bench.sh" "$@"
