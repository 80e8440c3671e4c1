#!/usr/bin/env bash
# eTSF development/controller set-up for a fresh Debian 12 machine (run as root).
# Idempotent: installs only what is missing (apt), (re)builds the project venv only
# when its inputs changed, and provides ansible-test's offline pip bootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # eBPF toolchain (controller builds objects for tests; hosts build their own)
  clang llvm libbpf-dev bpftool make gcc libc6-dev
  # lab: booted Debian hosts in network namespaces
  debootstrap systemd-container iproute2 netcat-openbsd rsync git
  # SIP peers and packet tools
  sip-tester sipsak kamailio iptables nftables conntrack tcpdump ethtool
  # Python for the venv and the agent; the agent's runtime modules come from Debian as on the
  # hosts (the tests run the exporter as another user from the wheel installed beside them)
  python3 python3-venv python3-dev python3-pip python3-yaml python3-prometheus-client python3-bcrypt
  # ansible-test sanity; promtool (package prometheus) checks the exporter's output
  shellcheck prometheus
  # bench/jitprof.py samples the BPF programs with perf
  linux-perf
  # appliance builder (make appliance): GPT, ESP, ext4 from a directory, GRUB for BIOS and
  # UEFI; make appliance-qemu boots the raw image under software emulation
  gdisk dosfstools mtools e2fsprogs grub-pc-bin grub-efi-amd64-bin zstd qemu-system-x86 qemu-utils ovmf
)

log() { printf '[setup] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: must run as root (apt, BPF, namespaces)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != "installed" ]; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || log "apt-get update reported errors (continuing with the lists it fetched)"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "apt: all ${#APT_PACKAGES[@]} packages present"
fi

# Project venv with Debian's python3 (the same interpreter the lab hosts run).
VENV=.venv
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
have=$(cat "$VENV/.etsf-setup" 2>/dev/null || true)
if [ ! -x "$VENV/bin/python" ]; then
  log "venv: creating $VENV"
  /usr/bin/python3 -m venv "$VENV"
  have=""
fi
if [ "$want" != "$have" ]; then
  log "venv: installing etsf-agent (editable) and dev tools"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -c 'import etsf, ansible, molecule, pytest' 
  echo "$want" > "$VENV/.etsf-setup"
else
  log "venv: up to date"
fi

# ansible-test downloads a pip bootstrap script; provide an offline one.
mkdir -p "$HOME/.ansible/test/cache"
for v in 24_2 24_0 25_0; do
  install -m 0644 scripts/get_pip.py "$HOME/.ansible/test/cache/get_pip_${v}.py"
done

log "done"
