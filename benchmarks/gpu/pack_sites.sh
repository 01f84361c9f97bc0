#!/usr/bin/env bash
# Here (with PyPI): vLLM 0.26 and SGLang 0.5.17 for the offline GPU host (Python 3.12, torch 2.11+cu130
# preinstalled), as two pre-installed site directories in one zstd tar cut into pieces that each fit one
# device call beside the working tree (64 MiB a call), plus the few small wheels sgtui's core and trainer
# need there. Then see send_pieces.md: one piece per call into /tmp/w, record_rl_loop.sh in the last.
#
#   .gpu/pNN      the pieces of sites.tar.zst (tar of vllm-site/ and sglang-site/, unpacked in /tmp/gpuw there)
#   .gpu/sums     sha256 of each piece and of the whole (carried in every call: a lost machine shows at once)
#   .gpu/w/*.whl  zstandard (the host may have no zstd binary), orjson, megatron-core, sniffio, and textual with
#                 the two of its dependencies rich does not bring (the observer-effect benchmark's live UI): absent there
#   .gpu/w/opt/   typer, rich, nvidia-ml-py: the host has them; installed there only if importing them fails
#
# Each site is made by `pip install --no-deps --target` of the wheel set of setup/gpu/<engine>.txt (as
# setup/gpu/install_offline.sh did on the GPU host; exec bits and *.data/ are kept as pip lays them), then:
#   - files dropped, none of them importable or imported at startup:
#     vLLM: vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so (~300 MB): on Hopper vLLM uses FA3 and imports FA2
#       only inside a try (as before, in the pieces of the vllm-sleep1-h200 session);
#     SGLang: sgl_kernel/infllm_ops.cpython-310-*.so (29 MB; a CPython 3.10 build that 3.12 cannot load
#       anyway, opened only by sgl_kernel/infllm_v2/_loader.py inside the InfLLM-V2 attention call) and
#       xgrammar/lib/libxgrammar.a (65 MB; a static library for C++ builds, never opened by Python).
#     Kept although large: sgl_kernel/flash_ops.abi3.so (1.1 GB: SGLang's default fa3 attention on Hopper).
#   - files identical in both sites (same path, same bytes) hard-linked, so the tar stores them once;
#   - the tar lists both sites' files interleaved by path, so two versions of one package lie side by side.
# zstd -19 --long=30 (ZSTD_LEVEL, ZSTD_LONG): ~10 min on 2 cores, ~15% smaller than -15 --long=27 (one or
# two pieces, i.e. device calls, fewer). The host decodes with --long=31 / max_window_size=2**31, which
# admits any window up to 2 GiB. Pieces of PIECE_MIB (default: 61 MiB less the working tree, which travels
# in every call and grows with each committed GPU session: 22 MiB on 2026-12-06 gave 38 MiB pieces, 13 calls)
# so that a call stays under the 64 MiB the device tool carries; the script prints each call's size.
# Env: WORK (default /tmp/gpuw), PIECE_MIB, ZSTD_LEVEL (19), ZSTD_LONG (30); PIECES_ONLY=1 cuts an existing
# $WORK/sites.tar.zst again (another PIECE_MIB) and refreshes .gpu/w, without the 10 minutes before.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
work="${WORK:-/tmp/gpuw}"
# The working tree travels in every call: tracked files plus untracked files git does not ignore.
tree_b=$(git ls-files -z -c -o --exclude-standard | python3 -c "
import os, sys
print(sum(os.path.getsize(p) for p in sys.stdin.read().split('\0') if p and os.path.isfile(p)))")
tree_mib=$(( (tree_b + 1048575) / 1048576 ))
piece="${PIECE_MIB:-$(( 61 - tree_mib ))}" level="${ZSTD_LEVEL:-19}" long="${ZSTD_LONG:-30}"
req_of() { case "$1" in vllm) echo setup/gpu/vllm-0.26.0-py312-cu130.txt ;; sglang) echo setup/gpu/sglang-0.5.17-py312-cu130.txt ;; esac; }
drops_of() {  # paths relative to the site; see above why each is safe to leave out
  case "$1" in
    vllm) echo vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so ;;
    sglang) echo sgl_kernel/infllm_ops.cpython-310-x86_64-linux-gnu.so xgrammar/lib/libxgrammar.a ;;
  esac
}
pipq() { python3 -m pip "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }

plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform any)
for n in $(seq 17 39); do plat+=(--platform "manylinux_2_${n}_x86_64"); done
plat+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
stamp() { echo "[$(date +%H:%M:%S)] $*"; }

mkdir -p "$work" .gpu
if [ "${PIECES_ONLY:-0}" = 1 ] && [ -f "$work/sites.tar.zst" ]; then
  stamp "PIECES_ONLY=1: cutting the existing $work/sites.tar.zst again"
else
for eng in vllm sglang; do
  req="$(req_of "$eng")"
  stamp "$eng: download $(grep -c '^[^#]' "$req") wheels ($req)"
  rm -rf "$work/wheels-$eng" "$work/$eng-site"
  grep -v '^#' "$req" | grep . > "$work/req-$eng.txt"
  pipq download -q --no-deps "${plat[@]}" -d "$work/wheels-$eng" -r "$work/req-$eng.txt"
  stamp "$eng: $(find "$work/wheels-$eng" -name '*.whl' | wc -l) wheels, $(du -sm "$work/wheels-$eng" | cut -f1) MiB; install into $work/$eng-site"
  pipq install -q --no-deps --no-index --no-compile --no-warn-script-location --root-user-action=ignore \
    "${plat[@]}" --target "$work/$eng-site" "$work/wheels-$eng"/*.whl
  for f in $(drops_of "$eng"); do
    [ -e "$work/$eng-site/$f" ] || { echo "pack_sites: $eng-site/$f not found (list out of date?)" >&2; exit 1; }
    rm -rf "${work:?}/$eng-site/$f"; echo "  dropped $eng-site/$f"
  done
  find "$work/$eng-site" -name __pycache__ -prune -exec rm -rf {} +
  stamp "$eng-site: $(du -sm "$work/$eng-site" | cut -f1) MiB, $(find "$work/$eng-site" -type f | wc -l) files"
done

stamp "hard-link identical files, list both sites interleaved by path"
python3 - "$work" <<'EOF'
import filecmp, os, sys
work = sys.argv[1]
sites = ["vllm-site", "sglang-site"]
rel = {s: set() for s in sites}
for s in sites:
    root = os.path.join(work, s)
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            rel[s].add(os.path.relpath(os.path.join(d, name), root))
linked = saved = 0
for r in sorted(rel["vllm-site"] & rel["sglang-site"]):
    a, b = (os.path.join(work, s, r) for s in sites)
    if os.path.islink(a) or os.path.islink(b) or not (os.path.isfile(a) and os.path.isfile(b)):
        continue
    sa = os.stat(a)
    if sa.st_ino == os.stat(b).st_ino:
        continue
    if sa.st_size == os.path.getsize(b) and filecmp.cmp(a, b, shallow=False):
        os.unlink(b)
        os.link(a, b)
        linked += 1
        saved += sa.st_size
print(f"  {linked} files shared by both sites hard-linked ({saved / 2**20:.0f} MiB stored once)")
with open(os.path.join(work, "tar-list.txt"), "w") as f:
    for s in sites:
        f.write(s + "\n")
    for r, s in sorted((r, s) for s in sites for r in rel[s]):
        f.write(f"{s}/{r}\n")
EOF
stamp "tar | zstd -T0 -$level --long=$long (minutes on 2 cores)"
tar cf - -C "$work" --no-recursion --verbatim-files-from -T "$work/tar-list.txt" \
  | zstd -T0 "-$level" "--long=$long" -q -f -o "$work/sites.tar.zst"
fi
total_mib=$(( ($(stat -c %s "$work/sites.tar.zst") + 1048575) / 1048576 ))
stamp "sites.tar.zst: $total_mib MiB"

rm -f .gpu/p[0-9][0-9] .gpu/sums
split -b "${piece}M" -d -a 2 "$work/sites.tar.zst" .gpu/p
(cd .gpu && sha256sum p[0-9][0-9] && echo "$(sha256sum < "$work/sites.tar.zst" | cut -d' ' -f1)  sites.tar.zst") > .gpu/sums

stamp "small wheels for sgtui's core and trainer: .gpu/w"
rm -rf .gpu/w && mkdir -p .gpu/w/opt
pipq download -q --no-deps "${plat[@]}" -d .gpu/w zstandard==0.25.0 orjson==3.13.0 megatron-core==0.19.2 sniffio==1.3.1 \
  textual==8.2.8 mdit-py-plugins==0.7.0 platformdirs==4.14.9
pipq download -q --no-deps "${plat[@]}" -d .gpu/w/opt typer rich nvidia-ml-py
ls -la .gpu/w .gpu/w/opt
w_mib=$(( ($(du -sb .gpu/w | cut -f1) + 1048575) / 1048576 ))

echo
echo "working tree that travels: $tree_mib MiB; .gpu/w: $w_mib MiB; .gpu/sums: 1 KiB"
n=0
for p in .gpu/p[0-9][0-9]; do
  mib=$(( ($(stat -c %s "$p") + 1048575) / 1048576 ))
  echo "  $p  $(stat -c %s "$p") B  (a call with it: ~$(( mib + tree_mib )) MiB)"
  n=$((n + 1))
done
last_mib=$(( ($(stat -c %s "$p") + 1048575) / 1048576 ))
echo "$n pieces of at most $piece MiB, $total_mib MiB in all"
[ $(( piece + tree_mib )) -le 62 ] || echo "pack_sites: $piece MiB pieces + $tree_mib MiB tree leave under 2 MiB of the 64: lower PIECE_MIB" >&2
if [ $(( last_mib + w_mib + tree_mib )) -le 62 ]; then
  echo "last call: carry $p, .gpu/sums and .gpu/w (~$(( last_mib + w_mib + tree_mib )) MiB)"
else
  echo "pack_sites: $p + .gpu/w + tree = $(( last_mib + w_mib + tree_mib )) MiB: carry .gpu/w in a call of its own before the last" >&2
fi
