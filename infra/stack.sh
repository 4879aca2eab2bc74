#!/usr/bin/env bash
# The local stack: a virtualenv with moto_server and cargo-lambda, one moto_server on a free
# loopback port, and the demo resources (table with TTL, KMS key, FIFO lead queue + DLQ).
#   infra/stack.sh setup       create/refresh .venv (pinned infra/requirements.txt)
#   infra/stack.sh lint-setup  create/refresh .venv-lint (cfn-lint, checkov)
#   infra/stack.sh sam-setup   create/refresh .venv-sam (AWS SAM CLI; checkov's pins clash with it)
#   infra/stack.sh up          setup, start moto_server if not running, create resources,
#                              write .local/stack.env (source it to point tools at the stack)
#   infra/stack.sh down        stop what `up` started
#   infra/stack.sh status      print .local/stack.env if the stack answers
# Every command is idempotent: running it twice does no harm.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
lintvenv="$root/.venv-lint"
samvenv="$root/.venv-sam"
state="$root/.local"
mkdir -p "$state"

ensure_venv() { # dir requirements
  local dir=$1 req=$2 stamp="$1/.requirements.sha256"
  local want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "stack: installing $(basename "$req") into $(basename "$dir") (first run takes a minute)" >&2
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$want" >"$stamp"
}

cmd=${1:-up}
case "$cmd" in
  setup) ensure_venv "$venv" "$root/infra/requirements.txt" ;;
  lint-setup) ensure_venv "$lintvenv" "$root/infra/requirements-lint.txt" ;;
  sam-setup) ensure_venv "$samvenv" "$root/infra/requirements-sam.txt" ;;
  up)
    ensure_venv "$venv" "$root/infra/requirements.txt"
    exec "$venv/bin/python" "$root/infra/local_stack.py" up --state "$state"
    ;;
  down|status)
    if [ -x "$venv/bin/python" ]; then
      exec "$venv/bin/python" "$root/infra/local_stack.py" "$cmd" --state "$state"
    fi
    # No virtualenv: nothing was started here, so nothing runs (status) and nothing to stop.
    [ "$cmd" = down ] || exit 1
    ;;
  *) echo "usage: $0 setup|lint-setup|sam-setup|up|down|status" >&2; exit 2 ;;
esac
