#!/usr/bin/env bash
# Interoperability with the original C Gale (docs/protocol.md §17), run by the
# system suite: original clients on our galed, our clients with original ones,
# our galed linked to an original galed, an original client's will. Everything
# runs inside the reference netns.sh (loopback only: the original dials the
# servers of every domain it sees). It fails, never skips, when the original is
# not built.
#
#   tests/original/interop.sh ORIG_PREFIX OUR_BIN_DIR
set -euo pipefail

REF=${REF:-/work/shared/reference/original-gale}
ORIG=${1:?usage: interop.sh ORIG_PREFIX OUR_BIN_DIR}
OURS=${2:?usage: interop.sh ORIG_PREFIX OUR_BIN_DIR}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ "${GALE_NETNS_INSIDE:-}" != 1 ]; then
  for b in bin/galed bin/gsub bin/gsend bin/gkgen; do
    [ -x "$ORIG/$b" ] || { echo "FAILED: the original Gale is not built ($ORIG/$b missing)" >&2; exit 1; }
  done
  for b in galed gsub gsend; do
    [ -x "$OURS/$b" ] || { echo "FAILED: $OURS/$b missing (cargo build --workspace)" >&2; exit 1; }
  done
  export ORIG OURS REF
  exec timeout 300 "$REF/netns.sh" bash "$HERE/interop.sh" "$ORIG" "$OURS"
fi

# ---- inside the namespace ----
RUN=$(mktemp -d /tmp/gale-interop.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
fails=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
expect() { # expect FILE TEXT WHAT
  if grep -qF -- "$2" "$1"; then pass "$3"; else fail "$3 (no \"$2\" in $1)"; sed 's/^/    /' "$1"; fi
}
refute() {
  if grep -qF -- "$2" "$1"; then fail "$3 (\"$2\" in $1)"; sed 's/^/    /' "$1"; else pass "$3"; fi
}
# wait_for FILE TEXT [SECONDS]: until TEXT appears in FILE
wait_for() {
  local i
  for i in $(seq 1 $(( ${3:-10} * 10 ))); do grep -qF -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
# wait_port PORT: until something listens on 127.0.0.1:PORT
wait_port() {
  local i
  for i in $(seq 1 100); do ss -ltnH "sport = :$1" | grep -q . && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; return 1
}

# Original keys, as in the reference demo.sh: example.org's key trusted, pub.* public,
# alice and bob signed by the domain.
mkdir -p "$RUN/sys" "$RUN/home"
cp -a "$ORIG/etc/gale/." "$RUN/sys/"
export LD_LIBRARY_PATH="$ORIG/lib" GALE_SYS_DIR="$RUN/sys" GALE_DOMAIN=example.org
export HOME="$RUN/home" LOGNAME=root GALE_NAME="Orig User"
S=$GALE_SYS_DIR/auth
og() { "$ORIG/bin/$1" "${@:2}"; }
og gkgen -r "$S/private/example.org.gpri" -u "$S/trusted/example.org.gpub" example.org /"Example Org" >/dev/null 2>&1
og gkgen -n -w -u "$S/trusted/pub.*@example.org.gpub" 'pub.*@example.org' /"public" >/dev/null 2>&1
GALE_DIR=$RUN/alice GALE_ID=alice og gkgen alice@example.org /"Alice" >/dev/null 2>&1
GALE_DIR=$RUN/bob GALE_ID=bob og gkgen bob@example.org /"Bob" >/dev/null 2>&1
alice() { GALE_DIR=$RUN/alice GALE_ID=alice GALE_PROXY=${PROXY:-127.0.0.1} "$@"; }
bob() { GALE_DIR=$RUN/bob GALE_ID=bob GALE_PROXY=${PROXY:-127.0.0.1} "$@"; }

# Our side: its own key directories, under another domain's user names.
mkdir -p "$RUN/ours-sys"
carol() { env -u GALE_SYS_DIR GALE_SYS_DIR=$RUN/ours-sys GALE_DIR=$RUN/carol GALE_ID=carol@example.org GALE_NAME=Carol GALE_SERVER=127.0.0.1:${OURPORT:-11512} "$@"; }

echo "== our galed on 127.0.0.1:11512"
RUST_LOG=info "$OURS/galed" --listen 127.0.0.1:11512 > "$RUN/galed.log" 2>&1 &
pids+=($!)
wait_port 11512

echo "== 1. original gsub <- our galed <- original gsend (signed, anonymous, encrypted)"
bob timeout 15 "$ORIG/bin/gsub" -n -e -a pub.test bob > "$RUN/1.out" 2> "$RUN/1.err" &
pids+=($!)
sleep 2
echo "orig signed hello" | alice og gsend pub.test 2>>"$RUN/1.send.err"
echo "orig anonymous hello" | alice og gsend -a pub.test 2>>"$RUN/1.send.err"
echo "orig private hello" | alice og gsend bob 2>>"$RUN/1.send.err"
wait_for "$RUN/1.out" "orig private hello" 10 || true
expect "$RUN/1.out" "orig signed hello" "1 signed: delivered"
expect "$RUN/1.out" "alice@example.org" "1 signed: verified by the original gsub (signer shown)"
expect "$RUN/1.out" "orig anonymous hello" "1 anonymous: delivered"
expect "$RUN/1.out" "orig private hello" "1 encrypted: delivered and decrypted by bob"

cp "$RUN/galed.log" "$RUN/galed.1.log"
echo
if [ "$fails" = 0 ]; then echo "interop: OK"; else echo "interop: $fails FAILED"; ls "$RUN"; for f in "$RUN"/*.err "$RUN"/galed.log; do echo "--- $f"; tail -20 "$f"; done; exit 1; fi
