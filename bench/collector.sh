#!/usr/bin/env bash
# microseg-collector throughput under many concurrent agents, printed as a table and one JSON
# line (not a test). Needs no root: everything runs on 127.0.0.1 in a temporary directory that
# collector_bench removes. See the top of bench/collector_bench.cpp for what is measured.
#
# usage: bench/collector.sh [collector_bench options]
#        e.g. bench/collector.sh --seconds 5 --agents 1,8,32 --fsync batch,none
# Build first: cmake --build build --target collector_bench microseg-collector
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${MSEG_BUILD_DIR:-$root/build}
commit=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)

# A hung run is stopped: SIGTERM lets the bench end its runs and clean up, SIGKILL follows (the
# collector dies with the bench either way).
exec timeout --kill-after=10 "${MSEG_BENCH_TIMEOUT:-900}" "$build/bench/collector_bench" \
  --commit "$commit" "$@"
