#!/usr/bin/env bash
# The whole test suite. As root on Linux it runs inside a network namespace with only loopback
# (`unshare --net`), so nothing can leave this machine whatever a test does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
  exec unshare --net sh -c 'ip link set lo up && exec python3 -m pytest "$@"' pytest "$@"
fi
echo "note: not root or no unshare: running without a private network namespace" >&2
exec python3 -m pytest "$@"
