# The two commands a fresh machine needs are `make run` and `make test`;
# each runs `make setup` first (idempotent).
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
MODEL ?= mobilefacenet

.PHONY: help setup native run test lint android-host-test
help:
	@echo "make run    - set up, then run the main job on the default model ($(MODEL))"
	@echo "make test   - set up, then run the whole test suite"
	@echo "make setup  - create $(VENV) and install mfn-deploy with its test extras"
	@echo "make native - build ncnn from source and the mfn-bench runner (host, arm64, armv7)"
	@echo "make android-host-test - the Android demo's C++ core and JNI bridge, built and run on the host"
	@echo "make lint   - ruff check and format check"

setup:
	@tools/setup.sh

run: setup
	$(BIN)/mfn-deploy info
	$(BIN)/mfn-deploy export --model $(MODEL) --out models/$(MODEL) --fp16 --force

# ncnn and the runners are built into the user cache ($$MFN_DEPLOY_CACHE, else
# ~/.cache/mfn-deploy): minutes cold, a second warm. An installed package does the same.
native: setup
	$(BIN)/mfn-deploy native build --target all

# MFN_REQUIRE_NATIVE turns "runner not built" skips into failures: here it is built.
test: setup native
	MFN_REQUIRE_NATIVE=1 $(BIN)/python -m pytest

# The Android demo's native core on the host (no Android SDK needed): parity with the
# Python ncnn pipeline, the JNI bridge called from Java, natives vs exports, arm64
# static link. `make test` runs these tests too.
android-host-test: setup native
	MFN_REQUIRE_NATIVE=1 $(BIN)/python -m pytest tests/test_android_host.py

lint: setup
	$(BIN)/ruff check src tests tools benchmarks
	$(BIN)/ruff format --check src tests tools benchmarks
