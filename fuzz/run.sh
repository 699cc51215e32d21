#!/usr/bin/env bash
# Runs every fuzz target in turn for SECONDS each (default 600) and prints one line per target:
# executions, coverage, corpus size, findings. Seeds come from seeds/<target>/.
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(telegram_webhook whatsapp_webhook whatsapp_signature discord_interaction
        sms_twilio_webhook sms_africastalking_webhook sms_bulksms_webhook)
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
mkdir -p logs
echo "| target | seconds | executions | exec/s | coverage (edges) | corpus | findings |"
echo "|---|---|---|---|---|---|---|"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    status=0
    cargo fuzz run -s none "$t" -- -max_total_time="$seconds" -print_final_stats=1 \
        >"logs/$t.log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "logs/$t.log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "logs/$t.log" | tail -1 | cut -d' ' -f2)
    corpus=$(find "corpus/$t" -type f | wc -l)
    findings=$(find "artifacts/$t" -type f | wc -l)
    [ "$status" -ne 0 ] && findings="$findings (exit $status, see fuzz/logs/$t.log)"
    echo "| $t | $seconds | ${runs:-?} | ${rate:-?} | ${cov:-?} | $corpus | $findings |"
done
