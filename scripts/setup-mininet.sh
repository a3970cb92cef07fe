#!/usr/bin/env bash
# Installs Debian's wired Mininet (mnexec and its Python package for the system python3), for the `mininet` link
# backend and its test. Optional: without it that test is skipped and `testbed doctor` says the backend is absent.
# mininet-wifi itself needs mac80211_hwsim and a source build: the Vagrantfile does that inside a VM.
set -euo pipefail
command -v mnexec >/dev/null && /usr/bin/python3 -c "import mininet.net" 2>/dev/null && exit 0
[ "$(id -u)" -eq 0 ] || { echo "not root: skipping Mininet" >&2; exit 0; }
command -v apt-get >/dev/null || { echo "no apt-get: skipping Mininet" >&2; exit 0; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends mininet >/dev/null
echo "mininet: $(dpkg-query -W -f='${Version}' mininet)"
