#!/usr/bin/env bash
# Offline checks of the deployable template, as CI runs them (no AWS account needed):
#   cfn-lint  - CloudFormation/SAM schema and best-practice rules; warnings fail too
#   checkov   - security policy checks; a skipped check must be named in the template's
#               resource Metadata (checkov.skip) with its reason
#   sam validate --lint - the SAM CLI's own check of the template (its transform + cfn-lint)
# Exits non-zero on any finding. The tools live in .venv-lint and .venv-sam (infra/stack.sh
# lint-setup, sam-setup). `sam build` of both sign-in modes is infra/sam-build.sh (slow: CI).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
template=infra/template.yaml

bash infra/stack.sh lint-setup
bash infra/stack.sh sam-setup
bin="$root/.venv-lint/bin"
export SAM_CLI_TELEMETRY=0

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
echo "== sam validate --lint ($("$root/.venv-sam/bin/sam" --version 2>&1))"
# cfn-lint evaluates the template's conditions both ways, so this covers both AuthMode values.
if (cd infra && "$root/.venv-sam/bin/sam" validate --lint --template template.yaml); then
  echo "sam validate: no findings"
else
  status=1
fi
exit "$status"
