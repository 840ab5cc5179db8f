# shellcheck shell=bash
# Sourced by ./dev: makes sure the cached Python environment that provides
# libtorch (and the reference implementations for parity tests) exists, and
# exports what `tch` needs to build and run. Idempotent and quick when the
# environment is already there. It does not change the caller's shell
# options (no `set -e` leaks into an interactive shell).
#
#   CLISC_CACHE_DIR   where the environment lives (default ~/.cache/clisc)

_clisc_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLISC_CACHE_DIR="${CLISC_CACHE_DIR:-$HOME/.cache/clisc}"
CLISC_VENV="$CLISC_CACHE_DIR/torch-2.13.0"
_clisc_req="$_clisc_root/scripts/requirements.txt"
_clisc_req_built="$_clisc_root/scripts/requirements-torch-built.txt"
_clisc_stamp="$CLISC_VENV/.clisc-requirements"

if ! cat "$_clisc_req" "$_clisc_req_built" | cmp -s - "$_clisc_stamp" 2>/dev/null; then
    echo "clisc: preparing the Python/libtorch environment in $CLISC_VENV (one time)" >&2
    mkdir -p "$CLISC_CACHE_DIR" || return 1
    [ -x "$CLISC_VENV/bin/python" ] || python3 -m venv "$CLISC_VENV" || return 1
    "$CLISC_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$_clisc_req" || return 1
    SAM2_BUILD_CUDA=0 "$CLISC_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-build-isolation -r "$_clisc_req_built" || return 1
    cat "$_clisc_req" "$_clisc_req_built" > "$_clisc_stamp" || return 1
fi

export VIRTUAL_ENV="$CLISC_VENV"
export PATH="$CLISC_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
_clisc_torch_lib="$("$CLISC_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch/lib" || return 1
export LD_LIBRARY_PATH="$_clisc_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CLISC_PYTHON="$CLISC_VENV/bin/python"
