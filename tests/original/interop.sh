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
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${fails:-1}" = 0 ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$RUN"; else echo "interop: files kept in $RUN"; fi
}
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
expect "$RUN/1.out" "-- alice@example.org (Orig User)" "1 signed: verified by the original gsub (signer shown, not *unverified*)"
expect "$RUN/1.out" "orig anonymous hello" "1 anonymous: delivered"
expect "$RUN/1.out" "orig private hello" "1 encrypted: delivered and decrypted by bob"

cp "$RUN/galed.log" "$RUN/galed.1.log"

echo "== 2. original gsub <- our galed <- our gsend (public, and a private one refused)"
bob timeout 20 "$ORIG/bin/gsub" -n -e -a pub.test bob > "$RUN/2.out" 2> "$RUN/2.err" &
pids+=($!)
sleep 2
echo "ours to the original" | carol "$OURS/gsend" pub.test@example.org 2> "$RUN/2.send.err" \
  || fail "2: our gsend failed ($(cat "$RUN/2.send.err"))"
wait_for "$RUN/2.out" "ours to the original" 10 || true
expect "$RUN/2.out" "ours to the original" "2 public: body readable by the original gsub"
expect "$RUN/2.out" "Carol" "2 public: sender shown"
expect "$RUN/2.out" "not verifiable here" "2 public: marked as not verifiable there"
expect "$RUN/2.out" "*unverified*" "2 public: the original gsub shows it unverified"

echo "== 2b. our private message is not offered to an original subscriber, and our gsend is told"
python3 "$REF/tools/gale_raw.py" sub 127.0.0.1 11512 '@example.org/user/carol/' 6 > "$RUN/2b.raw" 2>&1 &
pids+=($!)
sleep 1
echo "ours private to carol" | carol "$OURS/gsend" carol@example.org 2> "$RUN/2b.send.err" \
  || fail "2b: our gsend failed ($(cat "$RUN/2b.send.err"))"
sleep 1
expect "$RUN/2b.send.err" "not offered to 1 original-Gale client" "2b private: our gsend is told"
refute "$RUN/2b.raw" "puff" "2b private: nothing reaches the original subscriber"

echo "== 3. our gsub <- our galed <- original gsend"
env -u GALE_SYS_DIR GALE_SYS_DIR=$RUN/ours-sys GALE_DIR=$RUN/dave GALE_ID=dave@example.org GALE_SERVER=127.0.0.1:11512 \
  timeout 20 "$OURS/gsub" pub.test@example.org > "$RUN/3.out" 2> "$RUN/3.err" &
pids+=($!)
wait_for "$RUN/3.err" "" 1 || true
sleep 3
echo "orig to ours signed" | alice og gsend pub.test 2>>"$RUN/3.send.err"
echo "orig to ours anonymous" | alice og gsend -a pub.test 2>>"$RUN/3.send.err"
wait_for "$RUN/3.out" "orig to ours anonymous" 10 || true
expect "$RUN/3.out" "orig to ours signed" "3 signed: body shown by our gsub"
expect "$RUN/3.out" "*unverified* alice@example.org" "3 signed: shown as signed by an original key it cannot verify"
refute "$RUN/3.out" "-- alice@example.org" "3 signed: never shown as verified"
expect "$RUN/3.out" "orig to ours anonymous" "3 anonymous: shown"
expect "$RUN/3.out" "*anonymous* $(date -u +%Y-)" "3 anonymous: shown with the time it arrived"

echo "== 6. frames the original defines but never uses are skipped"
python3 - > "$RUN/6.out" 2>&1 <<'PY' &
import socket, struct, time
def u16(s): return s.encode('utf-16-be')
sub = socket.create_connection(("127.0.0.1", 11512)); sub.sendall(struct.pack(">I", 1))
cat = u16("@example.org/user/pub/skip/")
sub.sendall(struct.pack(">II", 2, len(cat)) + cat); time.sleep(0.5)
pub = socket.create_connection(("127.0.0.1", 11512)); pub.sendall(struct.pack(">I", 1))
for op in (3, 4, 5, 6, 7, 8, 9, 10, 11, 99):   # publish..supply, twice over, and an unknown one
    pub.sendall(struct.pack(">II", op, 24) + bytes(24))
    pub.sendall(struct.pack(">II", op, 24) + bytes(24))
name, body = u16("message/body"), u16("after the skipped frames\r\n")
frag = struct.pack(">I", len(name) // 2) + name + body
content = struct.pack(">II", 0, len(frag)) + frag
pub.sendall(struct.pack(">III", 0, 4 + len(cat) + 4 + len(content), len(cat)) + cat + struct.pack(">I", 0) + content)
sub.settimeout(5); data = b""
try:
    while "skipped frames" not in data.decode("utf-16-be", "ignore") and len(data) < 4096:
        chunk = sub.recv(4096)
        if not chunk: break
        data += chunk
except socket.timeout: pass
print("received" if "after the skipped frames" in data[4:].decode("utf-16-be", "ignore") else "missing")
PY
wait_for "$RUN/6.out" "e" 8 || true
sleep 0.5
expect "$RUN/6.out" "received" "6 unused frames (opcodes 3-11, twice each) and unknown ones skipped; the puff after them delivered"

echo "== 4. our galed linked to an original galed, subscribers on both sides"
"$ORIG/bin/galed" -d -p 11600 > "$RUN/orig-galed.log" 2>&1 &
pids+=($!)
wait_port 11600
RUST_LOG=info "$OURS/galed" --listen 127.0.0.1:11700 --orig-link 127.0.0.1:11600 > "$RUN/galed-b.log" 2>&1 &
pids+=($!)
wait_port 11700
wait_for "$RUN/galed-b.log" "link to original galed 127.0.0.1:11600 is up" 10 || fail "4: the link did not come up"
PROXY=127.0.0.1:11600 bob timeout 25 "$ORIG/bin/gsub" -n -e -a pub.link > "$RUN/4.orig.out" 2> "$RUN/4.orig.err" &
pids+=($!)
env -u GALE_SYS_DIR GALE_SYS_DIR=$RUN/ours-sys GALE_DIR=$RUN/dave GALE_ID=dave@example.org GALE_SERVER=127.0.0.1:11700 \
  timeout 25 "$OURS/gsub" pub.link@example.org > "$RUN/4.ours.out" 2> "$RUN/4.ours.err" &
pids+=($!)
wait_for "$RUN/4.ours.err" "subscribed" 10 || true
sleep 2
echo "from the original network" | PROXY=127.0.0.1:11600 alice og gsend pub.link 2>>"$RUN/4.send.err"
echo "from our network" | OURPORT=11700 carol "$OURS/gsend" pub.link@example.org 2>>"$RUN/4.send.err" \
  || fail "4: our gsend failed"
echo "from an original client on our galed" | PROXY=127.0.0.1:11700 alice og gsend pub.link 2>>"$RUN/4.send.err"
wait_for "$RUN/4.orig.out" "from an original client on our galed" 10 || true
wait_for "$RUN/4.ours.out" "from the original network" 10 || true
wait_for "$RUN/4.ours.out" "from our network" 10 || true
sleep 1
expect "$RUN/4.ours.out" "from the original network" "4 original galed -> link -> our gsub"
expect "$RUN/4.ours.out" "*unverified* alice@example.org" "4 original signature shown as unverifiable on our side"
expect "$RUN/4.orig.out" "from our network" "4 our gsend -> our galed -> link -> original gsub"
expect "$RUN/4.orig.out" "from an original client on our galed" "4 original gsend -> our galed -> link -> original gsub"
if grep -A1 -F "from an original client on our galed" "$RUN/4.orig.out" | grep -qF -- "-- alice@example.org (Orig User)"; then
  pass "4 ... its original signature passed through our galed and the link, verified at the far end"
else fail "4 original signature not verified at the far end"; fi
for f in 4.ours.out 4.orig.out; do
  n=$(grep -cE "^from (the original network|our network|an original client on our galed)$" "$RUN/$f" || true)
  if [ "$n" -eq 3 ]; then pass "4 each message exactly once in $f"; else fail "4 $n messages in $f, not 3"; sed 's/^/    /' "$RUN/$f"; fi
done

echo "== 5. an original client's will"
PROXY=127.0.0.1 python3 "$REF/tools/gale_raw.py" sub 127.0.0.1 11512 '@example.org/user/_gale/' 12 > "$RUN/5.raw" 2>&1 &
pids+=($!)
env -u GALE_SYS_DIR GALE_SYS_DIR=$RUN/ours-sys GALE_DIR=$RUN/dave GALE_ID=dave@example.org GALE_SERVER=127.0.0.1:11512 \
  timeout 15 "$OURS/gsub" _gale.notice.alice@example.org > "$RUN/5.out" 2> "$RUN/5.err" &
pids+=($!)
sleep 2
GALE_DIR=$RUN/alice GALE_ID=alice GALE_PROXY=127.0.0.1 "$ORIG/bin/gsub" -e -A pub.test > /dev/null 2> "$RUN/5.gsub.err" &
gp=$!
wait_for "$RUN/5.raw" "in.present" 8 || true
kill -9 "$gp" 2>/dev/null || true
wait "$gp" 2>/dev/null || true
wait_for "$RUN/5.raw" "out.disconnected" 8 || true
expect "$RUN/5.raw" "in.present" "5 presence: the original gsub's notice reaches an original subscriber"
expect "$RUN/5.raw" "out.disconnected" "5 will: published by our galed when the original client died"
wait_for "$RUN/5.out" "disconnected" 5 || true
expect "$RUN/5.out" "disconnected" "5 will: seen by our gsub too"
echo
if [ "$fails" = 0 ]; then echo "interop: OK"; else echo "interop: $fails FAILED"; ls "$RUN"; for f in "$RUN"/*.err "$RUN"/galed.log; do echo "--- $f"; tail -20 "$f"; done; exit 1; fi
