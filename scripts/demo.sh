#!/usr/bin/env bash
# The main job, end to end on this machine: start the bundled GCP emulator with local test nodes,
# `gcpgpu up` the example cluster (create, wait for SSH, configure), show status and inventory,
# run a command on every node through ad-hoc Ansible, then `gcpgpu down`. Nothing leaves the
# machine: as root it runs inside a network namespace that has only loopback and the test bridge.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${GCPGPU_DEMO_INNER:-}" != 1 ]; then
  bash scripts/setup.sh
  if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
    exec unshare --net env GCPGPU_DEMO_INNER=1 sh -c 'ip link set lo up && exec bash scripts/demo.sh'
  fi
fi
example=examples/quickstart.yaml
work=$(mktemp -d /tmp/gcpgpu-demo.XXXXXX)
export GCPGPU_STATE_DIR="$work/state" GCPGPU_KEYS_DIR="$work/keys" ANSIBLE_LOCAL_TEMP="$work/ansible"
gcpgpu emulator --port 0 --latency 1 --nodes "$work/nodes" >"$work/emulator.log" 2>&1 &
emulator_pid=$!
cleanup() { kill "$emulator_pid" 2>/dev/null; wait "$emulator_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q "listening on" "$work/emulator.log" && break; sleep 0.1; done
cat "$work/emulator.log"
GCPGPU_ENDPOINT=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$work/emulator.log")
export GCPGPU_ENDPOINT GCPGPU_CLUSTER="$example"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "gcpgpu validate $example"; gcpgpu validate "$example"
step "gcpgpu plan $example";     gcpgpu plan "$example"
if grep -q "test nodes: on" "$work/emulator.log"; then
  step "gcpgpu up $example"; gcpgpu up "$example"
  echo "(expected: the test nodes have no GPU, so gpu_health reports them as it would a real VM"
  echo " whose driver is missing; everything else is configured)"
  step "gcpgpu status $example"; gcpgpu status "$example"
  step "the inventory, through Ansible itself"
  ansible-inventory -i "$(command -v gcpgpu-inventory)" --graph
  step "a command on every node (ad-hoc Ansible)"
  ansible -i "$(command -v gcpgpu-inventory)" all -m ansible.builtin.command \
    -a "cat /opt/quickstart/train.py /var/log/gcpgpu/startup.log"
  step "configure again: nothing changes"; gcpgpu configure "$example"
else
  reason=$(sed -n 's/^test nodes: off: //p' "$work/emulator.log")
  step "gcpgpu up $example --no-configure"
  echo "configuration skipped: test nodes cannot be made here ($reason)"
  gcpgpu up "$example" --no-configure
  step "gcpgpu status $example"; gcpgpu status "$example"
fi
step "gcpgpu down $example"; gcpgpu down "$example"
gcpgpu status "$example"
