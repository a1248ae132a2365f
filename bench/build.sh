#!/usr/bin/env bash
# Build the load generator of `make bench` (vegeta) from the Go module pinned in bench/tools/go.mod
# and go.sum (no prebuilt download). The binary is cached in .e2e-bin/ (git-ignored) and rebuilt only
# when the pins change; `make test` never needs it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.e2e-bin"
tools="$root/bench/tools"
want=$(cat "$tools/go.mod" "$tools/go.sum" | sha256sum | cut -d' ' -f1)
if [ -f "$bin/.bench-stamp" ] && [ "$(cat "$bin/.bench-stamp")" = "$want" ] && [ -x "$bin/vegeta" ]; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "bench: the benchmark needs Go 1.26 or newer to build its load generator (vegeta)" >&2
  echo "bench: install it (https://go.dev/doc/install, or: apt-get install golang-go) and run make bench again" >&2
  exit 1
fi
mkdir -p "$bin"
echo "bench: building vegeta into $bin" >&2
cd "$tools"
nice go build -buildvcs=false -trimpath -ldflags="-s -w" -o "$bin/vegeta" github.com/tsenart/vegeta/v12
echo "$want" > "$bin/.bench-stamp"
