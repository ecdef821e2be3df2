#!/usr/bin/env bash
# What bench/gpu_check.sh needs on a GPU machine that cannot reach a package index: the tool's
# dependencies that a CUDA PyTorch image lacks, downloaded here as files for Python 3.12 on x86-64
# into .whl/ (git-ignored locally: `echo /.whl/ >> .git/info/exclude`), to travel with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
pip() { python3 -m pip download -q --no-deps -d .whl "$@"; }
plat=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any --only-binary=:all:)
pip "${plat[@]}" bitsandbytes gguf jsonschema jsonschema-specifications referencing rpds-py attrs hypothesis sortedcontainers \
    nltk absl-py regex click joblib tqdm
pip --no-binary=:all: rouge-score==0.1.2  # published as a source archive only
ls .whl | wc -l
