#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages cdtrainer builds and runs against, when any is missing:
# oneDNN (GEMMs, on its OpenMP threads), OpenBLAS (LAPACK for merges), OpenMPI (the training world), libpng/libjpeg-turbo (TurboJPEG)/libwebp (images),
# SQLite (job store), libcurl (cdctl's HTTP through FoundationNetworking), pkg-config (SwiftPM finds them through it).
# The Swift toolchain (6.1 or later) is not a Debian package; it must already be on PATH.
set -euo pipefail

packages=(libopenblas-dev libdnnl-dev libopenmpi-dev openmpi-bin libpng-dev libturbojpeg0-dev libwebp-dev libsqlite3-dev libcurl4-openssl-dev pkg-config)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "error: need root or sudo to install ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v swift >/dev/null; then
    echo "error: no 'swift' on PATH. Install Swift 6.1 or later from swift.org (Linux toolchain) and retry." >&2
    exit 1
fi
