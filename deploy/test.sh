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
# The model and training parity tests again, on a second fixture with other sizes (Tests/Fixtures/tiny-sd1-alt):
# nothing may be tied to one fixture. Its model has no LDM single file, hence the skip.
# (With CD_FIXTURES set by the caller, that directory is used for both passes.)
CD_FIXTURES="${CD_FIXTURES:-$PWD/Tests/Fixtures/tiny-sd1-alt}" \
    swift test --skip-build --no-parallel --filter CDModelsTests --filter CDTrainingTests --skip SingleFileTests
