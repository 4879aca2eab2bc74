#!/usr/bin/env bash
# The test command (README: `make test`): installs the local stack's tools if missing, starts
# moto_server (unless one is already running), runs every test of the workspace, and stops what it
# started. The Bitrix24 sandbox is started by the tests themselves, in process.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# The virtualenv first: test binaries that start moto_server of their own (the IAM tests) need it
# even when a stack is already running.
bash infra/stack.sh setup
started=0
if ! bash infra/stack.sh status >/dev/null 2>&1; then
  bash infra/stack.sh up >/dev/null
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then bash infra/stack.sh down || true; fi; }
trap cleanup EXIT
cargo test --workspace --locked "$@"
