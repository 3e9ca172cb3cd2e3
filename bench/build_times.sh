#!/usr/bin/env bash
# Clean build with an empty ccache, then with a warm one, a no-op and a
# one-file rebuild, in a scratch build dir and ccache dir. Run from anywhere.
set -e
cd "$(dirname "$0")/.."
export CCACHE_DIR=/tmp/cc-bench
rm -rf /tmp/cc-bench /tmp/sbb
ccache -z >/dev/null
s=$(date +%s.%N); cmake -S . -B /tmp/sbb -G Ninja >/dev/null; ninja -C /tmp/sbb >/dev/null; e=$(date +%s.%N)
echo "cold clean build: $(echo "$e - $s" | bc) s"
ccache -s | grep -iE "hit|miss" | head -4
rm -rf /tmp/sbb
ccache -z >/dev/null
s=$(date +%s.%N); cmake -S . -B /tmp/sbb -G Ninja >/dev/null; ninja -C /tmp/sbb >/dev/null; e=$(date +%s.%N)
echo "ccache-warm clean build: $(echo "$e - $s" | bc) s"
ccache -s | grep -iE "hit|miss" | head -4
s=$(date +%s.%N); ninja -C /tmp/sbb >/dev/null; e=$(date +%s.%N)
echo "no-op: $(echo "$e - $s" | bc) s"
touch services/gateway/gateway_http.cc
s=$(date +%s.%N); ninja -C /tmp/sbb >/dev/null; e=$(date +%s.%N)
echo "touch gateway_http.cc: $(echo "$e - $s" | bc) s"
echo "targets: $(ninja -C /tmp/sbb -t targets all | grep -c ': CXX_COMPILER')"
