# Shared by the setup scripts (sourced): the cache root, the installer, and the venv-with-a-stamp shape every
# engine venv has. A stamp is written only after the install succeeded, so an interrupted setup starts over
# instead of leaving a half-built venv that looks done.
# These scripts ship inside the sgtui package (sgtui/setup_scripts/); `sgtui setup` runs them, and a checkout's
# setup/setup.sh runs `sgtui setup` after making .venv/.
cache="${SGTUI_CACHE:-$HOME/.cache/sgtui}"

# uv when present (SGTUI_INSTALLER=uv|pip chooses), pip otherwise. uv makes the venvs with --seed, so every
# engine venv has pip either way.
installer="${SGTUI_INSTALLER:-}"
if [ -z "$installer" ]; then
  if command -v uv >/dev/null 2>&1; then installer=uv; else installer=pip; fi
fi

# shown: PATH with $HOME as ~ (the "ready" lines)
shown() { case "$1" in "$HOME"/*) echo "~${1#"$HOME"}" ;; *) echo "$1" ;; esac; }

# pip_in VENV ARGS...: quiet install into VENV
pip_in() {
  local venv="$1"
  shift
  if [ "$installer" = uv ]; then
    uv pip install -q --python "$venv/bin/python" "$@"
  else
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
  fi
}

# pip_out VENV PACKAGES...: uninstall from VENV what is there (missing ones are fine)
pip_out() {
  local venv="$1"
  shift
  if [ "$installer" = uv ]; then
    uv pip uninstall -q --python "$venv/bin/python" "$@" >/dev/null 2>&1 || true
  else
    "$venv/bin/python" -m pip uninstall -q -y "$@" >/dev/null 2>&1 || true
  fi
}

# make_venv NAME VENV WHAT INSTALL_FN: unless VENV's stamp exists, create it afresh and run INSTALL_FN VENV.
# Says on stdout either "NAME: VENV ready" (found done, nothing installed) or "NAME: VENV made".
make_venv() {
  local name="$1" venv="$2" what="$3" install="$4"
  if [ -f "$venv/.sgtui-ok" ]; then
    echo "$name: $(shown "$venv") ready"
    return 0
  fi
  echo "setup: creating $venv ($what, with $installer)" >&2
  rm -rf "$venv"
  if [ "$installer" = uv ]; then
    uv venv -q --seed --python "${PYTHON:-python3}" "$venv"
  else
    "${PYTHON:-python3}" -m venv "$venv"
    pip_in "$venv" --upgrade pip
  fi
  "$install" "$venv"
  touch "$venv/.sgtui-ok"
  echo "$name: $(shown "$venv") made"
}
