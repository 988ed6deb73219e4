#!/usr/bin/env bash
# The end-to-end demo through the daemon: installs what it needs, builds cdtrainerd and cdctl
# (release), starts `mpirun -n 1 cdtrainerd serve` on loopback with the bundled tiny model, submits
# the demo job (configs/jobs/demo.toml: the tiny fixture model learning a drawn toy) with cdctl,
# follows it, downloads its last checkpoint in every format, samples an image from it, and stops
# the daemon (SIGUSR1, as systemd does).
# Output: OUT_DIR (default ./demo-output): checkpoint/ (diffusers/, a1111/, demo-toy.concept.safetensors),
# sample.png, daemon.log, and the daemon's state (state/: job database, uploads, the job's folder
# with its log, loss plot, validation grids and every checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-./demo-output}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

./deploy/install-deps.sh
swift build -c release --product cdtrainerd
swift build -c release --product cdctl
bin="$(swift build -c release --show-bin-path)"

# A free loopback port and a throwaway token for this run.
port="${CDTRAINERD_DEMO_PORT:-18470}"
token="demo-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export CDCTL_SERVER="http://127.0.0.1:$port" CDCTL_TOKEN="$token" CDTRAINERD_TOKEN="$token"

mpi_flags=(--bind-to none)
if [ "$(id -u)" = 0 ]; then mpi_flags+=(--allow-run-as-root); fi
echo "starting the daemon (log: $out/daemon.log)"
mpirun "${mpi_flags[@]}" -x CDTRAINERD_TOKEN -n 1 "$bin/cdtrainerd" serve --port "$port" --state-dir "$out/state" \
    --work-dir "$out/work" --model "tiny-sd1=$PWD/Tests/Fixtures/tiny-sd1/model" >"$out/daemon.log" 2>&1 &
daemon=$!
stop_daemon() {
    if kill -0 "$daemon" 2>/dev/null; then
        kill -USR1 "$daemon" 2>/dev/null || true
        wait "$daemon" || true
    fi
}
trap stop_daemon EXIT

# cdctl retries while the daemon starts; the job id is the first line of its output.
"$bin/cdctl" submit configs/jobs/demo.toml --wait --retry-for 120 | tee "$out/job-id"
job="$(head -n 1 "$out/job-id")"
"$bin/cdctl" ckpt ls "$job"
"$bin/cdctl" ckpt get "$job" --format all -o "$out/checkpoint"
"$bin/cdctl" sample "$job" --prompt "photo of a <toy1> toy" --steps 20 --seed 1 -o "$out/sample.png"
stop_daemon
trap - EXIT

echo
echo "demo output in $out:"
ls "$out" "$out/checkpoint"
echo "the job's own folder (log, loss plot, validation grids, checkpoints): $out/state/jobs/$job/run"
