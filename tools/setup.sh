#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: apt packages for the native parts
# (installed when root, otherwise the exact command is printed), then .venv with the
# package and its test extras, every version from tools/requirements.lock. Re-running
# does nothing unless pyproject.toml or the lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.mfn-deploy-installed"
LOCK=tools/requirements.lock
# Extra apt packages to require here; the native build installs its own compilers and qemu.
APT_PACKAGES=(${MFN_APT_PACKAGES:-})

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]]; then
    echo "setup: installing apt packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing apt packages; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: $PYTHON is $("$PYTHON" --version 2>&1); Python 3.11 or newer is needed" >&2
  exit 1
fi
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
if [[ ! -f $STAMP || pyproject.toml -nt $STAMP || $LOCK -nt $STAMP ]]; then
  echo "setup: installing mfn-deploy and its dependencies into $VENV"
  # Every install is held to the lock, pip itself included: a new release of
  # anything cannot change what a fresh machine gets.
  "$VENV/bin/python" -m pip install -q -c "$LOCK" pip
  # torch first and pinned: any other spec would pull the multi-GB CUDA build.
  "$VENV/bin/python" -m pip install -q -c "$LOCK" torch
  "$VENV/bin/python" -m pip install -q -c "$LOCK" -e '.[test]'
  touch "$STAMP"
fi
