#!/usr/bin/env bash
# Air-gapped GPU host that already has torch (e.g. 2.11+cu130): install an engine from wheels carried in
# (downloaded elsewhere with `pip download --no-deps -r setup/gpu/<engine>.txt`), into its own --target
# directory, and write a `python` wrapper that puts it on PYTHONPATH. Pass the wrapper as --vllm-python /
# --sglang-python. Usage: install_offline.sh NAME WHEEL_DIR [DEST]
set -euo pipefail
name="$1"; wheels="$2"; dest="${3:-$HOME/.cache/sgtui/offline}"
site="$dest/$name-site"
mkdir -p "$site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
wrapper="$dest/$name-python"
cat > "$wrapper" <<EOW
#!/usr/bin/env bash
export PYTHONPATH="\${PYTHONPATH:+\$PYTHONPATH:}$site"
export PATH="$site/bin:\$PATH"
exec python3 "\$@"
EOW
chmod +x "$wrapper"
echo "$wrapper"
