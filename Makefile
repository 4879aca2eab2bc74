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

## Release build of the six functions for Lambda (arm64), zips in target/lambda/<name>/.
build-arm64:
	bash infra/stack.sh setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" cargo lambda build --release --arm64 --output-format zip --locked -p bitrix-connect -p bitrix-test -p bitrix-disconnect -p bitrix-status -p lead-sync -p lead-watch

stack-up:
	bash infra/stack.sh up
stack-down:
	bash infra/stack.sh down

.PHONY: demo dev bench soak
## The whole product locally: sandbox portal, cargo lambda watch (six functions), SQS poller;
## connects a demo tenant, publishes lead events, waits until synced, prints a report, stops.
demo:
	bash infra/local.sh demo

## Same stack, left running: prints ready-to-paste curl and `cargo lambda invoke` lines (Ctrl-C stops).
dev:
	bash infra/local.sh dev

## Benchmark (not a test; takes about 25 minutes): cold start, size, warm latency, memory per
## function; lead-sync over the 500-event stream; the many-tenant scale run (50 portals, 5,000
## events, clean and with two portals misbehaving). Prints tables, writes target/bench.json, fails
## when a scale check fails. `make bench BENCH_ARGS="--skip-scale"` or "--scale-portals 5" etc.
bench:
	bash infra/stack.sh up >/dev/null
	cargo build --release --locked -p bitrix-connect -p bitrix-test -p bitrix-disconnect -p bitrix-status -p lead-sync -p lead-watch
	cargo build --release --locked -p teleagent-tests --bin bench --bin bare-runtime
	./target/release/bench $(BENCH_ARGS)

## Soak (not a test; takes several minutes): 1,000 events over 50 customers and 5 tenants through
## release lead-sync with 10 % AWS and Bitrix24 faults, a portal outage, a revoked token; checks
## every effect landed exactly once. Prints a table, writes target/soak.json, fails on a miss.
soak:
	bash infra/stack.sh up >/dev/null
	cargo build --release --locked -p bitrix-connect -p lead-sync
	cargo build --release --locked -p teleagent-tests --bin soak
	./target/release/soak $(SOAK_ARGS)
