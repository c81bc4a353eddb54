#!/usr/bin/env bash
# Makes sure Debian's Chromium and ChromeDriver are installed (/usr/bin/chromium,
# /usr/bin/chromedriver), as the browser tests expect (CRISP_RELAY_CHROMEDRIVER, see README).
# A no-op where both are already there; otherwise installs the packages chromium and
# chromium-driver with apt-get (through sudo when not root). Prints both versions.
set -euo pipefail

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if ! have; then
  echo "installing chromium and chromium-driver"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
have || { echo "chromium or chromedriver still missing after the install" >&2; exit 1; }
echo "chromium: $(chromium --version 2>/dev/null || echo '?')"
echo "chromedriver: $(chromedriver --version 2>/dev/null || echo '?')"
