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

# Ray wheelhouse (tests/test_ray_e2e.py): the test nodes have no internet, so the wheels are
# downloaded here, before the tests run inside `unshare --net`. Quick when already there.
for extras in --no-dashboard --dashboard; do
  python3 -c 'from gcpgpu.cli import main; main()' ray wheelhouse $extras \
    || echo "note: no Ray wheelhouse (no PyPI?): the Ray end-to-end tests will be skipped" >&2
done
