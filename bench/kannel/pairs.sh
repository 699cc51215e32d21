#!/usr/bin/env bash
# Alternating pairs (default 3): Kannel 1.4.5 driven by ab, then Switchboard sending (SQLite
# FULL) driven by ab, with the same settings, so that each ratio compares runs minutes apart.
# Stops what it started, by PID. Needs what run.sh needs.
set -u
PAIRS=${PAIRS:-3}
MESSAGES=${MESSAGES:-20000}
CONCURRENCY=${CONCURRENCY:-64}
here=$(cd "$(dirname "$0")" && pwd)
bench=${BENCH:-$here/../../target/release/switchboard-bench}
work=/tmp/switchboard-kannel
for r in $(seq "$PAIRS"); do
  rm -rf "$work" && mkdir -p "$work/store"
  /usr/sbin/bearerbox "$here/kannel.conf" >"$work/bearerbox.out" 2>&1 & bb=$!
  sleep 1
  /usr/sbin/smsbox "$here/kannel.conf" >"$work/smsbox.out" 2>&1 & sb=$!
  /usr/lib/kannel/test/fakesmsc -H 127.0.0.1 -r 10000 -i 1000 -m 0 "1 2 text x" >"$work/fakesmsc.out" 2>&1 & fk=$!
  for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:13000/status.txt?password=bench" | grep -q "FAKE.*online" \
      && curl -s -o /dev/null "http://127.0.0.1:13013/" && break
    sleep 0.2
  done
  "$bench" kannel --messages "$MESSAGES" --concurrency "$CONCURRENCY" --pids "$bb,$sb" --ab \
    | grep "Kannel 1.4.5" | sed "s/^/pair $r /"
  kill "$bb" "$sb" "$fk" 2>/dev/null; wait "$bb" "$sb" "$fk" 2>/dev/null
  "$bench" sms --messages "$MESSAGES" --concurrency "$CONCURRENCY" --ab \
    | grep "Switchboard" | sed "s/^/pair $r /"
done
