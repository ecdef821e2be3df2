#!/usr/bin/env bash
# What bench/gpu_check.sh needs on a GPU machine that cannot reach a package index: the tool's
# dependencies that a CUDA PyTorch image lacks, downloaded here as files for Python 3.12 on x86-64
# into .whl/ (git-ignored locally: `echo /.whl/ >> .git/info/exclude`), to travel with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl  # one version of each: two stop the whole install there
pip() { python3 -m pip download -q --no-deps -d .whl "$@"; }
plat=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any --only-binary=:all:)
# bitsandbytes: the manylinux_2_24 wheels carry the CUDA 13 library (libbitsandbytes_cuda130.so) that a
# torch built for CUDA 13 loads, in 43 MB; without that platform tag pip falls back to 0.42.0, a 105 MB
# wheel from before CUDA 13, over the 64 MiB that travels to the GPU machine.
pip "${plat[@]}" bitsandbytes==0.50.2 gguf jsonschema jsonschema-specifications referencing rpds-py attrs hypothesis \
    sortedcontainers nltk defusedxml absl-py regex click joblib tqdm  # defusedxml: nltk needs it, CUDA images lack it
pip --no-binary=:all: rouge-score==0.1.2  # published as a source archive only
ls .whl | wc -l
