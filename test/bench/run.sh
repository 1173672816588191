#!/usr/bin/env bash
# Builds falg and runs the benchmark in one namespace lab (needs root, iperf3, nftables).
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o bin/falg ./cmd/falg
go run ./test/bench -falg bin/falg "$@"
