#!/usr/bin/env bash
# `sam build --beta-features` of infra/template.yaml as written, once per sign-in mode (AuthMode),
# as CI runs it: SAM runs `cargo lambda build --release --arm64 --bin <Binary>` for each of the
# six functions (BuildMethod rust-cargolambda, a SAM beta feature), and this checks that each
# build produced six arm64 (aarch64 ELF) bootstraps.
# The builds share the workspace's target directory: after `make build-arm64`, and for the
# second mode, cargo has nothing left to compile, so the second build costs seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/infra"
bash "$root/infra/stack.sh" setup      # cargo-lambda (+ Zig) in .venv/bin
bash "$root/infra/stack.sh" sam-setup  # the SAM CLI in .venv-sam/bin
export PATH="$root/.venv/bin:$root/.venv-sam/bin:$PATH" SAM_CLI_TELEMETRY=0
rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true

build() { # mode, parameter overrides...
  local mode=$1; shift
  local dir="$root/.local/sam-build/$mode"
  local t0=$SECONDS
  echo "== sam build --beta-features (AuthMode=$mode)"
  # --no-cached: SAM would hash the whole CodeUri (the workspace, target/ included) per
  # function to decide; cargo itself knows faster that nothing changed.
  sam build --beta-features --no-cached --build-dir "$dir" --parameter-overrides "AuthMode=$mode" "$@"
  local n=0
  for f in "$dir"/*Function/bootstrap; do
    # ELF e_machine (bytes 18-19, little endian) 0xB7 = AArch64.
    if [ "$(od -An -tx1 -j18 -N2 "$f" | tr -d ' \n')" != "b700" ]; then
      echo "sam-build: $f is not an arm64 binary" >&2
      exit 1
    fi
    n=$((n + 1))
  done
  if [ "$n" != 6 ]; then
    echo "sam-build: expected 6 bootstraps in $dir, found $n" >&2
    exit 1
  fi
  echo "sam-build: $mode: 6 arm64 bootstraps in $((SECONDS - t0)) s"
}
build jwt-authorizer "JwtIssuer=https://example.supabase.co/auth/v1" "CorsAllowedOrigins=https://app.example.com"
build hs256 "JwtHs256SecretParameterName=/teleagent/jwt-hs256-secret" "CorsAllowedOrigins=https://app.example.com"
