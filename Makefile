# Thin wrapper around Meson. Every target installs the Debian packages it needs first (deps/install.sh).
BUILD ?= build
MESON_TEST_ARGS ?=
PORT ?= 5000
REPLICAS ?= 3

.PHONY: all build deps test test-asan run bench analysis images up down clean

all: build

deps:
	@deps/install.sh build test

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=release

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Runs every suite and ends with the plain line "N passed, N failed"; fails when any test failed.
test: build
	@meson test -C $(BUILD) --print-errorlogs $(MESON_TEST_ARGS) ; \
	  python3 test/summary.py $(BUILD)/meson-logs/testlog.json

# The unit suite under AddressSanitizer and UndefinedBehaviorSanitizer, in its own build folder.
test-asan: deps
	@[ -f build-asan/build.ninja ] || meson setup build-asan --buildtype=debug -Dsanitize=true -Dstatic_replica=false
	@meson test -C build-asan --suite unit --print-errorlogs ; python3 test/summary.py build-asan/meson-logs/testlog.json

# The load balancer with three local replica processes on port 5000 (no Docker needed).
run: build
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
up: images
	docker-compose up -d 2>/dev/null || docker compose up -d

down:
	-docker-compose down 2>/dev/null || docker compose down
	-docker ps -aq --filter label=ringlb.pool=ringlb | xargs -r docker rm -f

clean:
	rm -rf $(BUILD) build-asan
