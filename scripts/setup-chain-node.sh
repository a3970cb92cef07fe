#!/usr/bin/env bash
# Installs Ganache (a JSON-RPC Ethereum dev chain, from npm) into .chain-node/, for the tests and benchmarks that
# exercise the testbed's `chain.url` path against a real client. Optional: without it those tests are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null || { echo "npm not found: skipping the JSON-RPC chain node" >&2; exit 0; }
mkdir -p .chain-node
[ -x .chain-node/node_modules/.bin/ganache ] && exit 0
npm install --silent --prefix .chain-node ganache@7 >/dev/null
echo "ganache: $(.chain-node/node_modules/.bin/ganache --version 2>/dev/null | head -1)"
