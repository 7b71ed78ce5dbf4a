# forkring: common tasks. `make help` lists them.

CARGO        ?= cargo
LISTEN       ?= 127.0.0.1:8080
# How long `make fuzz` runs, in seconds, and which target.
FUZZ_SECONDS ?= 600
FUZZ_TARGET  ?= http_conn

.PHONY: help run build test lint bench bench-micro bench-ipc loom stress scale fuzz fuzz-seeds clean

help:
	@echo "make run          build and start the forkring server on $(LISTEN) (one worker per CPU)"
	@echo "make build        release build of the library, the server, the test fixture and the examples"
	@echo "make test         the test suite: backend-free tests once, the rest once per backend (io_uring, epoll)"
	@echo "make lint         rustfmt check, clippy (whole workspace, warnings as errors), docs (warnings as errors), the public API listing, the layering check"
	@echo "make bench        forkring (io_uring, epoll) beside nginx, may_minihttp, hyper and the floor of each backend, with a latency curve and past capacity: report in target/bench (installs wrk and nginx if missing)"
	@echo "make bench-micro  criterion benchmarks of the HTTP core"
	@echo "make bench-ipc    shared-memory rings against a socketpair and the wake-up floors"
	@echo "make loom         model-check the rings' atomics with loom"
	@echo "make stress       faults under load, forkring beside nginx (tools/; installs wrk and nginx if missing)"
	@echo "make scale        a fleet of three hosts (network namespaces) behind HAProxy: restarts, a host dying, scaling, upgrades under load, nginx beside it (root; installs haproxy, wrk, nginx if missing)"
	@echo "make fuzz         fuzz FUZZ_TARGET (http_conn, ring_master) for FUZZ_SECONDS (installs cargo-fuzz if missing)"
	@echo "make fuzz-seeds   rewrite the fuzz seeds made from the hostile-request corpus (testkit/)"

# The product: the `forkring` binary of cli/ (crate forkring-cli).
run:
	$(CARGO) run --release -p forkring-cli -- --listen $(LISTEN)

# The workspace's binaries (forkring, forkring-fixture, the harnesses) and
# the examples.
build:
	$(CARGO) build --release --workspace --lib --bins --examples

# The test files of tests/ that never start a server, a worker or a driver:
# they run once, with the library's and the binaries' unit tests and the doc
# tests. Every other file of tests/ runs once per backend. tests/suite.rs
# holds this list to the files (a new file that starts nothing must be added;
# a listed file that starts something fails the check).
BACKEND_FREE_TESTS := http_body http_core http_props ipc_ring layers stream_core suite
BACKEND_TESTS      := $(filter-out $(BACKEND_FREE_TESTS),$(basename $(notdir $(wildcard tests/*.rs))))
# Tests ignored for a need (root, promtool, systemd-socket-activate; see
# testkit/src/need.rs) run too under CI=true, where a missing need fails them.
TEST_IGNORED       := $(if $(filter true,$(CI)),-- --include-ignored)
TEST_ONCE          := --no-fail-fast --lib --bins $(addprefix --test ,$(BACKEND_FREE_TESTS)) $(TEST_IGNORED)
TEST_PER_BACKEND   := --no-fail-fast $(addprefix --test ,$(BACKEND_TESTS)) $(TEST_IGNORED)

# The backend tests run twice: forcing io_uring, then forcing epoll, so that
# neither backend rots. Where the kernel refuses io_uring (seccomp, sysctl
# kernel.io_uring_disabled, gVisor) the first pass runs with `auto`, which
# then falls back to epoll, and says so. The tests start the fixture
# (forkring-fixture, a package of its own that `cargo test` of the root
# package does not build): the first line builds it.
test:
	$(CARGO) build --workspace --all-targets
	@if $(CARGO) run --quiet -p forkring-cli -- --check-uring; then \
		echo "==> test suite, io_uring backend (FORKRING_BACKEND=uring)"; \
		FORKRING_BACKEND=uring $(CARGO) test $(TEST_PER_BACKEND); \
	else \
		echo "==> NOTICE: this kernel refuses io_uring; the io_uring pass runs with"; \
		echo "==>         FORKRING_BACKEND=auto instead (which falls back to epoll)"; \
		FORKRING_BACKEND=auto $(CARGO) test $(TEST_PER_BACKEND); \
	fi
	@echo "==> test suite, epoll backend (FORKRING_BACKEND=epoll)"
	FORKRING_BACKEND=epoll $(CARGO) test $(TEST_PER_BACKEND)
	@echo "==> backend-free tests, once: unit tests, $(BACKEND_FREE_TESTS), doc tests"
	$(CARGO) test $(TEST_ONCE)
	$(CARGO) test --no-fail-fast --doc
	@echo "==> the test kit (corpus, oracle, fuzz seeds in step), the server's and the fixture's"
	@echo "==> tests, and the stress harness's unit tests"
	$(CARGO) test --no-fail-fast -p forkring-testkit -p forkring-cli -p forkring-fixture -p forkring-stress
	$(CARGO) build --examples
	@echo "==> make bench's report on a made-up run (bench/report_test.py)"
	@command -v python3 >/dev/null || { echo "make test: bench/report_test.py needs python3 (Debian: apt-get install python3; .ci/run installs it)" >&2; exit 1; }
	python3 bench/report_test.py

# Formatting, clippy on every crate and target of the workspace (and the
# fuzz crate, a workspace of its own), the docs of every crate with
# warnings denied (broken and private intra-doc links included), the public
# API against its committed listing (tests/surface.rs, tests/public-api.txt:
# a change of the API is a visible diff; no other crate's type in it), and
# the layering check: no module of src/ names a module above it
# (tests/layers.rs).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --manifest-path fuzz/Cargo.toml -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --quiet --no-deps --workspace
	$(CARGO) test --quiet --test surface
	$(CARGO) test --quiet --test layers

# forkring on both backends beside nginx, under wrk and at a fixed rate, then
# past capacity (make stress scenario 14, its figures reported); the report
# goes to target/bench/ (report.md, report.svg). Settings are
# environment variables, listed in bench/run.sh and the README.
bench:
	bash bench/run.sh

bench-micro:
	$(CARGO) bench --bench http

# Shared-memory rings against a Unix socketpair and the wake-up floors.
bench-ipc:
	$(CARGO) bench --bench ipc -- summary

# Model-checks the ring's atomics with loom (its own target directory, so
# the normal build is not recompiled).
loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test --release --lib ipc::

# The stress harness (tools/, crate forkring-stress) against the release test
# fixture (forkring-fixture), nginx beside it; exits non-zero when a forkring
# bound fails.
# STRESS_ARGS passes options on, e.g. STRESS_ARGS="--only 1,5".
stress:
	bash tools/install-deps.sh
	$(CARGO) build --release -p forkring-fixture
	$(CARGO) run --release -p forkring-stress --bin forkring-stress -- $(STRESS_ARGS)

# The fleet harness (tools/src/bin/forkring-scale): three hosts, each a
# network namespace on a bridge (10.213.7.0/24, removed at the end), a
# forkring cluster in each, HAProxy in front, wrk at HAProxy; nginx hosts
# beside it as the anchor. Needs root; refuses to run, saying why, where it
# cannot create namespaces (exit status 3). See docs/deploy.md.
# SCALE_ARGS passes options on, e.g. SCALE_ARGS="--only 1,2".
scale:
	bash tools/install-deps.sh --scale
	$(CARGO) build --release -p forkring-fixture
	$(CARGO) build --release -p forkring-stress --bin forkring-scale
	target/release/forkring-scale $(SCALE_ARGS)

# `-s none` (no sanitizer) runs on the stable toolchain. Targets:
# http_conn (the HTTP core; default) and ring_master (the master's side of a
# worker's shared channel, fed garbage memory). New inputs go to
# fuzz/corpus/<target>/ (seeds in fuzz/seeds/<target>/ are read too);
# crashes land in fuzz/artifacts/<target>/. Replay one with
#   cargo fuzz run --fuzz-dir fuzz -s none <target> fuzz/artifacts/<target>/<file>
fuzz:
	@if ! command -v cargo-fuzz >/dev/null 2>&1; then \
		echo "==> installing cargo-fuzz (cargo install cargo-fuzz --locked)"; \
		$(CARGO) install cargo-fuzz --locked; \
	fi
	@mkdir -p fuzz/corpus/$(FUZZ_TARGET) fuzz/seeds/$(FUZZ_TARGET)
	@echo "==> fuzzing target $(FUZZ_TARGET) for $(FUZZ_SECONDS)s (FUZZ_TARGET=..., FUZZ_SECONDS=... to change)"
	$(CARGO) fuzz run --fuzz-dir fuzz -s none $(FUZZ_TARGET) fuzz/corpus/$(FUZZ_TARGET) fuzz/seeds/$(FUZZ_TARGET) \
		-- -max_total_time=$(FUZZ_SECONDS)

# The seeds testkit/ makes from the hostile-request corpus
# (fuzz/seeds/http_conn/corpus-*); `make test` fails while they are stale.
fuzz-seeds:
	$(CARGO) run -p forkring-testkit --bin fuzz-seeds

clean:
	$(CARGO) clean
