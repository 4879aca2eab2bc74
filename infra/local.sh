#!/usr/bin/env bash
# The local whole-product run (README: `make demo`, `make dev`).
#   infra/local.sh demo   set up, start everything, connect a demo tenant, publish lead events,
#                         wait until they are synced, print a report, stop everything
#   infra/local.sh dev    same set-up and connect, print ready-to-paste curl / cargo lambda invoke
#                         lines, keep running until Ctrl-C
# Installs what it needs (.venv with moto_server and cargo-lambda, via infra/stack.sh), starts
# moto_server unless it already runs, builds the driver, and hands over to it (tests/src/local/demo.rs),
# which starts the Bitrix24 sandbox, `cargo lambda watch` and the SQS poller, each in its own
# process group, listed in .local/demo.pids. On exit or Ctrl-C everything started here is stopped;
# a moto_server that was already running is left alone.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=${1:-demo}
case "$mode" in demo|dev) ;; *) echo "usage: $0 demo|dev" >&2; exit 2 ;; esac
command -v cargo >/dev/null || { echo "local: cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "local: python3 is required" >&2; exit 1; }
mkdir -p .local

started_moto=0
cleanup() {
  # The driver stops its own children; this catches what a crashed driver left behind.
  if [ -f .local/demo.pids ]; then
    while read -r name pid; do
      [ -n "${pid:-}" ] || continue
      if kill -0 "$pid" 2>/dev/null; then
        echo "local: stopping leftover $name (pid $pid)" >&2
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      fi
    done < .local/demo.pids
    rm -f .local/demo.pids
  fi
  if [ "$started_moto" = 1 ]; then bash infra/stack.sh down || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "local: installing/checking the local stack tools (.venv: moto_server, cargo-lambda)" >&2
bash infra/stack.sh setup
if ! bash infra/stack.sh status >/dev/null 2>&1; then
  bash infra/stack.sh up >/dev/null
  started_moto=1
fi
echo "local: building the driver, the sandbox and the poller" >&2
cargo build --locked -q -p teleagent-tests --bin demo --bin bitrix-sandbox --bin sqs-poller
PATH="$root/.venv/bin:$PATH" "$root/target/debug/demo" "$mode"
