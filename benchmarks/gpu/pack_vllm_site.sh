#!/usr/bin/env bash
# Here (with PyPI): vLLM's wheel set for the GPU host (setup/gpu/vllm-*.txt), unzipped into one site
# directory, compressed and cut into pieces that fit one device call (64 MiB with the working tree).
# Unzipping here and zstd (--long) bring 9 pieces of wheels down to 5; FA2's kernels (305 MB) are left
# out: on Hopper vLLM uses FA3 and imports FA2 only inside a try. Pieces: .gpu/p00.. (ignored by git),
# plus .gpu/w (zstandard and orjson for python3.12: the host may lack zstd, and has no orjson) and
# .gpu/src.tar (this commit, without sessions/). Then carry .gpu/p00 .. p03 one per call (copy to /tmp/w
# there) and run record_vllm_sleep1.sh in the call that carries the last piece.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
work="${WORK:-/tmp/gpuw}"
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform any)
for n in 17 24 27 28 31 34 35; do plat+=(--platform "manylinux_2_${n}_x86_64"); done
plat+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
mkdir -p "$work/wheels" "$work/site" .gpu/w
grep -v '^#' setup/gpu/vllm-0.26.0-py312-cu130.txt | grep . > "$work/req.txt"
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/wheels" -r "$work/req.txt"
python3 -m pip download -q --no-deps "${plat[@]}" -d .gpu/w zstandard orjson
for w in "$work"/wheels/*.whl; do python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$w" "$work/site"; done
rm -f "$work/site/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"
tar cf - -C "$work/site" . | zstd -T0 -15 --long=27 -q -f -o "$work/site.tar.zst"
rm -f .gpu/p0*
split -b 51M -d "$work/site.tar.zst" .gpu/p
git archive HEAD --format=tar -o .gpu/src.tar -- . ':!sessions'
ls -la .gpu
