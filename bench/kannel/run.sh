#!/usr/bin/env bash
# The SMS benchmark with its Kannel anchor, in one session: starts Kannel 1.4.5 (bearerbox,
# smsbox, fakesmsc as the SMSC), drives its sendsms, stops what it started (by PID), then
# runs the same load through Switchboard. Needs the Debian packages kannel and kannel-extras
# (fakesmsc), apache2-utils (ab) and `cargo build --release -p switchboard-bench`.
set -euo pipefail
MESSAGES=${MESSAGES:-20000}
CONCURRENCY=${CONCURRENCY:-64}
here=$(cd "$(dirname "$0")" && pwd)
bench=${BENCH:-$here/../../target/release/switchboard-bench}
work=/tmp/switchboard-kannel
rm -rf "$work" && mkdir -p "$work/store"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
/usr/sbin/bearerbox "$here/kannel.conf" >"$work/bearerbox.out" 2>&1 & pids+=($!); bb=$!
sleep 1
/usr/sbin/smsbox "$here/kannel.conf" >"$work/smsbox.out" 2>&1 & pids+=($!); sb=$!
/usr/lib/kannel/test/fakesmsc -H 127.0.0.1 -r 10000 -i 1000 -m 0 "1 2 text x" >"$work/fakesmsc.out" 2>&1 & pids+=($!)
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:13000/status.txt?password=bench" | grep -q "FAKE.*online" \
    && curl -s -o /dev/null "http://127.0.0.1:13013/" && break
  sleep 0.2
done
# ApacheBench (`ab -k`, Debian apache2-utils) drives both gateways from outside their processes,
# as the shared Kannel anchor does; CLIENT=builtin uses the bench's own client instead (1,000
# distinct recipients, in the bench process).
client=()
[[ ${CLIENT:-ab} == ab ]] && client=(--ab)
"$bench" kannel --messages "$MESSAGES" --concurrency "$CONCURRENCY" --pids "$bb,$sb" "${client[@]}"
cleanup; pids=()
"$bench" sms --messages "$MESSAGES" --concurrency "$CONCURRENCY" "${client[@]}"
"$bench" sms --messages "$MESSAGES" --concurrency "$CONCURRENCY" "${client[@]}" --accept-only
# Kannel's spool store writes a file per message without fsync (strace shows openat + write,
# no fsync): the like-for-like durability is SQLite in WAL with synchronous = NORMAL.
"$bench" sms --messages "$MESSAGES" --concurrency "$CONCURRENCY" "${client[@]}" --sync NORMAL
"$bench" sms --messages "$MESSAGES" --concurrency "$CONCURRENCY" "${client[@]}" --reports
