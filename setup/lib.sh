# Shared by the setup scripts (sourced): the cache root and the venv-with-a-stamp shape every engine
# venv has. A stamp is written only after the install succeeded, so an interrupted setup starts over
# instead of leaving a half-built venv that looks done.
cache="${SGTUI_CACHE:-$HOME/.cache/sgtui}"

# pip_in VENV ARGS...: quiet pip install into VENV
pip_in() {
  local venv="$1"
  shift
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
}

# make_venv VENV WHAT INSTALL_FN: unless VENV's stamp exists, create it afresh and run INSTALL_FN VENV
make_venv() {
  local venv="$1" what="$2" install="$3"
  [ -f "$venv/.sgtui-ok" ] && return 0
  echo "setup: creating $venv ($what)" >&2
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  pip_in "$venv" --upgrade pip
  "$install" "$venv"
  touch "$venv/.sgtui-ok"
}
