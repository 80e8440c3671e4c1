#!/usr/bin/env bash
# The main job: boot the lab fleet (Debian 12 hosts under systemd-nspawn, each in its own
# network namespace) and roll eTSF out to it with playbooks/site.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=${1:-3}
PY=.venv/bin/python
step() { printf '\n== %s\n' "$*"; }

start=$(date +%s)
step "lab: booting $hosts SBC hosts (cached Debian 12 rootfs, systemd-nspawn --boot)"
$PY -m lab up --hosts "$hosts"

step "ansible: reaching the fleet over SSH (inventory/lab/hosts.yml)"
.venv/bin/ansible -i inventory/lab/hosts.yml sbc -m ansible.builtin.ping -o

step "ansible-playbook playbooks/site.yml"
.venv/bin/ansible-playbook -i inventory/lab/hosts.yml playbooks/site.yml

step "done in $(( $(date +%s) - start ))s"
$PY -m lab status
cat <<'TXT'

Where to look:
  inventory/lab/hosts.yml         generated inventory (group sbc)
  .venv/bin/python -m lab ssh sbc1  a shell on a fleet host (systemd, journald, sshd are real)
  .venv/bin/python -m lab status    hosts, namespaces, addresses
  make lab-down                   remove every namespace, link, mount and process of the lab
TXT
