#!/bin/bash
# CPU time gsub spends on N signed messages from gsend --lines, against a local
# release galed: shown, lost (reported by gsub), and shown messages per CPU-second.
# Run from anywhere after `cargo build --release`:  tests/bench/gsub_verify_cost.sh [N]
# Uses 127.0.0.1:11512 and a scratch directory under /tmp/rw3.
N=${1:-50000}
BIN=$(cd "$(dirname "$0")/../.." && pwd)/target/release
cd /tmp && rm -rf /tmp/rw3 && mkdir /tmp/rw3 && export GALE_DOMAIN=example.org
$BIN/galed --listen 127.0.0.1:11512 2>/dev/null & G=$!
sleep 0.5
GALE_DIR=/tmp/rw3/s GALE_ID=s@example.org $BIN/gsend -m warm pub.x@example.org 2>/dev/null
GALE_DIR=/tmp/rw3/s $BIN/gkey export s@example.org > /tmp/rw3/s.gpub
GALE_DIR=/tmp/rw3/r GALE_ID=r@example.org $BIN/gkey import /tmp/rw3/s.gpub >/dev/null 2>&1
GALE_DIR=/tmp/rw3/r GALE_ID=r@example.org $BIN/gsub --json pub.x@example.org > /tmp/rw3/out 2>/tmp/rw3/err & S=$!
sleep 1.5
c0=$(awk '{print $14+$15}' /proc/$S/stat)
seq 1 $N | GALE_DIR=/tmp/rw3/s GALE_ID=s@example.org $BIN/gsend --lines pub.x@example.org 2>/dev/null
for i in $(seq 1 100); do
  lost=$(grep -o 'lost [0-9]*' /tmp/rw3/err | awk '{s+=$2} END {print s+0}')
  [ $(( $(wc -l < /tmp/rw3/out) + lost )) -ge $N ] && break
  sleep 0.1
done
c1=$(awk '{print $14+$15}' /proc/$S/stat)
shown=$(wc -l < /tmp/rw3/out)
echo "gsub: shown $shown, lost $lost; CPU $(( c1 - c0 )) ticks (1/100 s) => $(( shown * 100 / (c1 - c0) )) shown msgs per CPU-second"
kill $S $G
