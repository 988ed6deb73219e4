#!/usr/bin/env bash
# The end-to-end demo: installs what it needs, builds cdtrainerd (release), and trains the bundled
# demo job (configs/jobs/demo.toml: the tiny fixture model learning a procedurally drawn toy).
# Output: OUT_DIR (default ./demo-output) with checkpoints, sample grids, the log, the loss plot and
# the trained concept in diffusers, A1111 and bundle form.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-./demo-output}"

./deploy/install-deps.sh
swift build -c release --product cdtrainerd
# One process of a one-rank MPI world; the daemon-based form (cdctl submit) comes with the distributed issue.
.build/release/cdtrainerd run configs/jobs/demo.toml --out "$out"
echo
echo "demo output in $out:"
ls "$out" "$out/samples"
