#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds once, runs every test.
# Fixture directories come from $CD_FIXTURES when set.
set -euo pipefail
cd "$(dirname "$0")/.."

./deploy/install-deps.sh
swift build --build-tests
# One process, tests one after another: kernels share the process-wide thread pool and
# OpenBLAS's thread setting, and timing-free serial runs keep failures reproducible.
swift test --skip-build --no-parallel
