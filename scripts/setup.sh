#!/usr/bin/env bash
# Installs what gcpgpu's demo and tests need on a fresh Debian machine; fast when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=$(grep -hv '^\s*#' .ci/apt-packages.txt 2>/dev/null | sort -u | tr '\n' ' ')
missing=""
for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "note: missing Debian packages:$missing (test nodes will be skipped)" >&2
  fi
fi
extra=$(grep -hv '^\s*#' .ci/pip-packages.txt 2>/dev/null | sort -u | tr '\n' ' ')
python3 -m pip install -q --disable-pip-version-check -e '.[test]' $extra 2>&1 \
  | { grep -v "as the 'root' user" || true; }   # pipefail keeps pip's exit status
