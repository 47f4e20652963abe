# bulwark's two commands: `make run` and `make test`. Each installs what it
# needs (Debian packages, as root), builds and runs.
SHELL := /bin/bash
JOBS ?= $(shell nproc)
BUILD ?= build
CMAKE_FLAGS ?=

.PHONY: all deps build run demo test test-ui test-asan test-tsan fuzz check-clang check-layers bench bench-quick bench-redis clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/release/build.ninja: | deps
	cmake -S . -B $(BUILD)/release -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

$(BUILD)/asan/build.ninja: | deps
	cmake -S . -B $(BUILD)/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBULWARK_SANITIZE=address $(CMAKE_FLAGS)

$(BUILD)/tsan/build.ninja: | deps
	cmake -S . -B $(BUILD)/tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBULWARK_SANITIZE=thread $(CMAKE_FLAGS)

build: deps $(BUILD)/release/build.ninja
	cmake --build $(BUILD)/release -j $(JOBS)

# The main job: the HTTP/JSON API on server.listen (127.0.0.1:8080 by
# default) until Ctrl-C. It prints the address and a curl line to try.
run: build
	$(BUILD)/release/bulwark serve --config config/default.json

# The batch runner over the demo jobs. The demo includes jobs that fail on
# purpose, so exit status 1 ("some job failed") is the expected outcome and
# does not fail make.
demo: build
	@$(BUILD)/release/bulwark run --config config/default.json --input config/demo-jobs.jsonl \
	  --output $(BUILD)/demo-results.jsonl; status=$$?; \
	echo "results: $(BUILD)/demo-results.jsonl (exit status $$status)"; \
	head -c 2000 $(BUILD)/demo-results.jsonl | head -n 5; \
	[ $$status -le 1 ]

test: build
	ctest --test-dir $(BUILD)/release --output-on-failure -j $(JOBS) --timeout 300

# The dashboard in a real browser (headless chromium, puppeteer-core from
# npm) against `bulwark serve`; saves the README's screenshots to
# docs/screenshots/.
test-ui: build
	@scripts/install-deps.sh ui
	cd tests/ui && { [ -d node_modules/puppeteer-core ] || npm ci --no-audit --no-fund --loglevel=error; }
	node tests/ui/dashboard.test.mjs $(BUILD)/release/bulwark docs/screenshots

test-asan: deps $(BUILD)/asan/build.ninja
	cmake --build $(BUILD)/asan -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(BUILD)/asan --output-on-failure -j $(JOBS) --timeout 600

test-tsan: deps $(BUILD)/tsan/build.ninja
	cmake --build $(BUILD)/tsan -j $(JOBS)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/scripts/tsan.supp" \
	  ctest --test-dir $(BUILD)/tsan --output-on-failure -j $(JOBS) --timeout 600

$(BUILD)/fuzz/build.ninja: | deps
	scripts/install-deps.sh fuzz
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(BUILD)/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DBULWARK_SANITIZE=fuzzer -DBULWARK_BUILD_TESTS=OFF -DBULWARK_BUILD_EXAMPLES=OFF $(CMAKE_FLAGS)

# libFuzzer (clang 14, ASan+UBSan) on every parser of outside bytes: job
# specs, configuration, HTTP requests through the API, the child-process
# wire. FUZZ_SECONDS per target (CI runs a short pass).
FUZZ_SECONDS ?= 60
fuzz: $(BUILD)/fuzz/build.ninja
	@scripts/install-deps.sh fuzz
	cmake --build $(BUILD)/fuzz -j $(JOBS) --target fuzz_job_spec fuzz_config fuzz_http_api fuzz_wire
	scripts/fuzz.sh $(BUILD)/fuzz $(FUZZ_SECONDS)

# clang 14 checks what GCC does not: every library source under
# -Wthread-safety (members marked BULWARK_GUARDED_BY are only touched with
# their lock held), and the test sources compile with clang. Syntax only, no
# link (the fuzz build links the library with clang).
CLANG_FLAGS := -std=c++20 -fsyntax-only -Wall -Iinclude -I$(BUILD)/release/include -Isrc -Itests -Iworkers -I/usr/include/concurrentqueue
check-clang: $(BUILD)/release/build.ninja
	@scripts/install-deps.sh fuzz
	@for f in $$(find src workers -name '*.cpp' | sort); do \
	  clang++-14 $(CLANG_FLAGS) -Wthread-safety -Werror=thread-safety -DBOOST_BEAST_USE_STD_STRING_VIEW $$f || exit 1; \
	done; echo "check-clang: the library passes -Wthread-safety"
	@for f in tests/*_test.cpp; do \
	  clang++-14 $(CLANG_FLAGS) -DBULWARK_BINARY='""' -DBULWARK_SOURCE_DIR='""' -DBULWARK_TIME_SCALE=1 $$f || exit 1; \
	done; echo "check-clang: every test source compiles with clang 14"

# No source includes upward across the layers (docs/ARCHITECTURE.md); also
# a ctest, so `make test` runs it.
check-layers:
	@scripts/check-layers.sh

# The benchmarks build in a tree of their own (BENCH_BUILD); CI passes
# BENCH_BUILD=$(BUILD)/release to build them beside the tests it built
# already rather than compile the library once more.
BENCH_BUILD ?= $(BUILD)/bench
BENCH_CMAKE := cmake -S . -B $(BENCH_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DBULWARK_BUILD_BENCH=ON \
  $(if $(filter $(BUILD)/bench,$(BENCH_BUILD)),-DBULWARK_BUILD_TESTS=OFF -DBULWARK_BUILD_EXAMPLES=OFF) $(CMAKE_FLAGS)

# Benchmarks against the peers, side by side (see README, Performance).
bench:
	@scripts/install-deps.sh bench
	$(BENCH_CMAKE) >/dev/null
	cmake --build $(BENCH_BUILD) -j $(JOBS) --target bulwark_bench
	$(BENCH_BUILD)/bench/bulwark_bench --out bench/results/latest.json
	bench/plot.sh bench/results/latest.json

bench-quick:
	@scripts/install-deps.sh bench
	$(BENCH_CMAKE) >/dev/null
	cmake --build $(BENCH_BUILD) -j $(JOBS) --target bulwark_bench
	$(BENCH_BUILD)/bench/bulwark_bench --quick --out $(BUILD)/bench-quick.json

# bulwark on a shared Redis queue against BullMQ and Celery on the same
# redis-server (bench/redis/compare.py). BENCH_REDIS_ARGS="--reps 1 --jobs
# 20000" for a quick look.
bench-redis:
	@scripts/install-deps.sh bench redis-bench
	$(BENCH_CMAKE) >/dev/null
	cmake --build $(BENCH_BUILD) -j $(JOBS) --target bulwark_redis_bench
	cd bench/redis && { [ -d node_modules/bullmq ] || npm ci --no-audit --no-fund --loglevel=error; }
	/usr/bin/python3 bench/redis/compare.py --bench $(BENCH_BUILD)/bench/bulwark_redis_bench \
	  --out bench/results/redis-latest.json $(BENCH_REDIS_ARGS)

clean:
	rm -rf $(BUILD)
