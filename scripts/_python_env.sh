# shellcheck shell=bash
# Sourced by scripts/demo.sh, scripts/test.sh and scripts/install_deps.sh: picks the Python interpreter
# they install into and run with, and exports it as PYTHON (so nested scripts pick the same one) and PY.
#
#   PYTHON=/path/to/python   that interpreter, as it is: you manage its environment
#   $VIRTUAL_ENV (activated) the active virtual environment's python
#   neither                  the repo's .venv (SDPA_VENV overrides the path), created on first use by
#                            `$SDPA_BASE_PYTHON -m venv --system-site-packages` (SDPA_BASE_PYTHON defaults
#                            to python3; CI sets /usr/bin/python3, the distribution's own)
#
# A venv, because Debian/Ubuntu's python3 is "externally managed" (PEP 668) and pip refuses to install
# into it. --system-site-packages, so a CUDA torch already installed system-wide on a GPU machine is
# reused instead of pulling a second torch.

SDPA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

sdpa_die() { echo "error: $*" >&2; exit 1; }

# sdpa_apt_install <package...>: Debian/Ubuntu packages, as root or through sudo.
sdpa_apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || return 1
    sudo="sudo"
  fi
  command -v apt-get >/dev/null || return 1
  echo "== apt-get install $*"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null
}

# A venv whose pip runs is complete; a failed `python3 -m venv` leaves one without pip behind.
_sdpa_venv_ok() { [ -x "$1/bin/python" ] && "$1/bin/python" -m pip --version >/dev/null 2>&1; }

_sdpa_make_venv() {
  local venv=$1 base=${SDPA_BASE_PYTHON:-python3}
  _sdpa_venv_ok "$venv" && return 0
  command -v "$base" >/dev/null || sdpa_die "no '$base' found: install Python 3.10+ or set SDPA_BASE_PYTHON"
  echo "== creating $venv from $(command -v "$base") ($("$base" --version 2>&1))"
  rm -rf "$venv"
  if "$base" -m venv --system-site-packages "$venv" && _sdpa_venv_ok "$venv"; then
    return 0
  fi
  rm -rf "$venv"
  # Debian/Ubuntu split ensurepip (needed by venv) into python3.X-venv.
  local ver
  ver=$("$base" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  if "$base" -c 'import ensurepip' 2>/dev/null || ! sdpa_apt_install "python$ver-venv"; then
    sdpa_die "could not create a virtual environment with $base. On Debian/Ubuntu: apt-get install" \
             "python$ver-venv (as root); or create and activate one yourself, or set PYTHON=/path/to/python."
  fi
  if ! { "$base" -m venv --system-site-packages "$venv" && _sdpa_venv_ok "$venv"; }; then
    sdpa_die "$base -m venv failed even with python$ver-venv installed"
  fi
}

if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ]; then
  PY=$VIRTUAL_ENV/bin/python
else
  SDPA_VENV=$(realpath -m "${SDPA_VENV:-$SDPA_ROOT/.venv}")  # absolute: the scripts change directory
  _sdpa_make_venv "$SDPA_VENV"
  PY=$SDPA_VENV/bin/python
fi
command -v "$PY" >/dev/null || sdpa_die "Python interpreter '$PY' not found"

# An interpreter chosen by hand may be the system's own: say what to do instead of pip's refusal.
if [ "${PIP_BREAK_SYSTEM_PACKAGES:-0}" = 0 ] && ! "$PY" - <<'EOF'
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(1 if managed and not in_venv else 0)
EOF
then
  sdpa_die "$PY is externally managed (PEP 668): pip cannot install into it. Unset PYTHON to use the repo's .venv," \
           "or point PYTHON at a virtual environment's python."
fi
export PYTHON=$PY
# The interpreter's scripts directory first on PATH: the cmake and ninja that pip installed there.
PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH
