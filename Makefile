# Thin wrapper around Meson. Every target installs the Debian packages it needs first (deps/install.sh).
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
MESON_TEST_ARGS ?=
# make test runs each fuzz target for FUZZ_CI_SECONDS (FUZZ=0 skips them; six targets x 10 s: the minute
# three took at 20 s); make fuzz for FUZZ_SECONDS.
FUZZ ?= 1
FUZZ_CI_SECONDS ?= 10
FUZZ_SECONDS ?= 300
FUZZ_TARGETS := fuzz_request fuzz_response fuzz_admin fuzz_h2 fuzz_tunnel fuzz_tls
# Further meson testlogs whose results the final line of make test counts (.ci/run passes build-asan's).
EXTRA_TESTLOGS ?=
PORT ?= 5000
REPLICAS ?= 3

.PHONY: all build deps test test-asan test-fuzz fuzz fuzz-build fuzz-suite run bench analysis images up down clean

all: build

deps:
	@deps/install.sh build test

$(BUILD)/build.ninja:
	@deps/install.sh build
	meson setup $(BUILD) --buildtype=release

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Runs every suite of $(BUILD), then the fuzz targets for FUZZ_CI_SECONDS each (build-fuzz, clang), and
# ends with the plain line "N passed, N failed" over both (and EXTRA_TESTLOGS); fails when any test
# failed. A tree that did not build leaves no testlog, which counts as a failure.
test: build
	@rm -f $(BUILD)/meson-logs/testlog.json
	@meson test -C $(BUILD) --print-errorlogs $(MESON_TEST_ARGS) ; \
	  if [ "$(FUZZ)" != 0 ]; then $(MAKE) --no-print-directory fuzz-suite; fi ; \
	  python3 test/summary.py $(BUILD)/meson-logs/testlog.json \
	    $(if $(filter-out 0,$(FUZZ)),$(FUZZ_BUILD)/meson-logs/testlog.json) $(EXTRA_TESTLOGS)

# The unit and hostile suites under AddressSanitizer and UndefinedBehaviorSanitizer, in their own build
# folder; ends with its own "N passed, N failed" line (.ci/run counts it in make test's last line).
test-asan: deps
	@rm -f $(ASAN_BUILD)/meson-logs/testlog.json
	@[ -f $(ASAN_BUILD)/build.ninja ] || meson setup $(ASAN_BUILD) --buildtype=debug -Dsanitize=true -Dstatic_replica=false
	@meson test -C $(ASAN_BUILD) --suite unit --suite hostile --print-errorlogs ; \
	  python3 test/summary.py $(ASAN_BUILD)/meson-logs/testlog.json

# The libFuzzer targets (test/fuzz), built with clang in their own folder with coverage, ASan and UBSan.
fuzz-build: deps
	@deps/install.sh fuzz
	@[ -f $(FUZZ_BUILD)/build.ninja ] || CC=clang-14 CXX=clang++-14 meson setup $(FUZZ_BUILD) \
	  --buildtype=debugoptimized -Dfuzz=true -Dstatic_replica=false
	ninja -C $(FUZZ_BUILD) $(addprefix test/fuzz/,$(FUZZ_TARGETS))

# Each fuzz target for FUZZ_CI_SECONDS as the meson suite "fuzz" of build-fuzz (its testlog is what
# make test counts; a build failure leaves none). Internal: make test and make test-fuzz call it.
fuzz-suite:
	@rm -f $(FUZZ_BUILD)/meson-logs/testlog.json
	@$(MAKE) --no-print-directory fuzz-build && \
	  FUZZ_SECONDS=$(FUZZ_CI_SECONDS) meson test -C $(FUZZ_BUILD) --suite fuzz --no-rebuild --print-errorlogs ; true

# The fuzz suite alone (FUZZ_CI_SECONDS per target), with its own "N passed, N failed" line.
test-fuzz:
	@$(MAKE) --no-print-directory fuzz-suite ; python3 test/summary.py $(FUZZ_BUILD)/meson-logs/testlog.json

# Each fuzz target for FUZZ_SECONDS (default 300), one after the other, growing the scratch corpus in
# build-fuzz/test/fuzz/<target>.work/corpus; crashes land in .../artifacts. Fails when any target failed.
fuzz: fuzz-build
	@fail=0; for t in $(FUZZ_TARGETS); do \
	  FUZZ_SECONDS=$(FUZZ_SECONDS) test/fuzz/run_fuzz.sh $(FUZZ_BUILD)/test/fuzz/$$t test/fuzz/corpus/$$t \
	    $(FUZZ_BUILD)/test/fuzz/$$t.work || { echo "fuzz: $$t FAILED" >&2; fail=1; }; \
	done; exit $$fail

# The load balancer with three local replica processes on port 5000 (no Docker needed). Installs only
# the build packages and builds only the daemon and the replica: the first answer comes quickly on a
# fresh machine (make test builds and installs the rest).
run: $(BUILD)/build.ninja
	ninja -C $(BUILD) lb/ringlb replica/ringlb-replica
	$(BUILD)/lb/ringlb --listen 0.0.0.0:$(PORT) --replicas $(REPLICAS)

bench: build
	@deps/install.sh bench
	bench/run.sh $(BUILD)

analysis: build
	@deps/install.sh bench
	bench/analysis.sh $(BUILD)

# The two FROM scratch images (ringlb-replica:latest, ringlb:latest), built offline from this build's
# binaries; needs a running Docker engine. Prints each image's size.
images: build
	@deps/install.sh docker
	lb/image.sh $(BUILD) all

# The compose deployment (network net1, replicas spawned by the LB). down also removes the replicas the
# LB spawned, by their pool label.
up: images admin.env
	docker-compose up -d 2>/dev/null || docker compose up -d

# The admin token of the compose deployment (docker-compose.yml's env_file), made once, random,
# readable by its owner only; not in git.
admin.env:
	umask 077 && printf 'RINGLB_ADMIN_TOKEN=%s\n' "$$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" > $@

down:
	-docker-compose down 2>/dev/null || docker compose down
	-docker ps -aq --filter label=ringlb.pool=ringlb | xargs -r docker rm -f

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
