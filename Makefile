# The commands a new user needs. Everything installs what it needs into ./.venv on first use.
.PHONY: test lint fmt build-arm64 stack-up stack-down

## Run every test (unit, integration against moto_server + the Bitrix24 sandbox).
test:
	bash infra/test.sh

## Format, clippy, and the offline template checks (cfn-lint, checkov).
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	bash infra/lint.sh

fmt:
	cargo fmt --all

## Release build of the five functions for Lambda (arm64), zips in target/lambda/<name>/.
build-arm64:
	bash infra/stack.sh setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" cargo lambda build --release --arm64 --output-format zip --workspace --locked

stack-up:
	bash infra/stack.sh up
stack-down:
	bash infra/stack.sh down
