#!/usr/bin/env bash
# Offline checks of the deployable template, as CI runs them (no AWS account needed):
#   cfn-lint  - CloudFormation/SAM schema and best-practice rules; warnings fail too
#   checkov   - security policy checks; a skipped check must be named in the template's
#               resource Metadata (checkov.skip) with its reason
# Exits non-zero on any finding. The tools live in .venv-lint (infra/stack.sh lint-setup).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
template=infra/template.yaml

bash infra/stack.sh lint-setup
bin="$root/.venv-lint/bin"

status=0
echo "== cfn-lint $("$bin/cfn-lint" --version 2>&1 | awk '{print $NF}')"
# Informational rules are off by default; warnings and errors both fail the run.
if "$bin/cfn-lint" --non-zero-exit-code warning --format parseable -- "$template"; then
  echo "cfn-lint: no findings"
else
  status=1
fi

echo "== checkov $("$bin/checkov" --version 2>&1)"
# --quiet prints failed checks only; --compact drops the code excerpts.
if "$bin/checkov" -f "$template" --framework cloudformation --quiet --compact --skip-download; then
  echo "checkov: no failed checks"
else
  status=1
fi
exit "$status"
