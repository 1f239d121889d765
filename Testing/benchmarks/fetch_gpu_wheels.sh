#!/usr/bin/env bash
# Wheels the GPU machine's image lacks (it has torch, numpy, safetensors, pytest; not SimpleITK or pydicom),
# for Python 3.12 on x86-64 Linux, into .whl/ (git-ignored through .git/info/exclude). Run from anywhere here,
# then carry ".whl" to the device machine; Testing/benchmarks/gpu_check.sh installs them there.
set -eu
cd "$(dirname "$0")/../.."
mkdir -p .git/info
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "SimpleITK==${SIMPLEITK_VERSION:-2.5.3}" "pydicom==${PYDICOM_VERSION:-3.0.2}"
du -sh .whl
