#!/bin/sh
# Wall time of one-shot gsend, signed (key already made) vs anonymous (-a), against
# a local release galed: median of N runs each. Run from the workspace root after
# `cargo build --release -p galed -p gsend`.
#   tests/bench/gsend_sign_cost.sh [RUNS]
set -eu
RUNS=${1:-20}
BIN=target/release
DIR=$(mktemp -d)
trap 'kill $GALED 2>/dev/null; rm -rf "$DIR"' EXIT
export GALE_DIR="$DIR/gale" GALE_SYS_DIR="$DIR/sys" GALE_ID=bench@example.org GALE_DOMAIN=example.org
$BIN/galed --listen 127.0.0.1:0 2>"$DIR/galed.log" &
GALED=$!
while ! grep -q 'listening on' "$DIR/galed.log"; do sleep 0.05; done
ADDR=$(grep -o 'listening on [^ ]*' "$DIR/galed.log" | head -1 | cut -d' ' -f3)
export GALE_SERVER=$ADDR
# Make the key, and remember that pub.bench has no key, so no run waits for answers.
$BIN/gsend -m warmup pub.bench@example.org 2>/dev/null
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f ms (min %.2f, max %.2f)\n", m, a[1], a[NR]}'; }
run() {
    i=0
    while [ $i -lt "$RUNS" ]; do
        s=$(date +%s%N); $BIN/gsend "$@" -m x pub.bench@example.org 2>/dev/null; e=$(date +%s%N)
        echo "($e - $s) / 1000000" | bc -l
        i=$((i + 1))
    done | median
}
printf 'signed    gsend -m x LOC      : '; run
printf 'anonymous gsend -a -m x LOC   : '; run -a
