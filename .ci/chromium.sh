#!/usr/bin/env bash
# Debian's chromium for the chat page's end-to-end test (Playwright drives it; nothing is
# downloaded from Playwright's CDN). Needs root, as CI has; without it that test is skipped.
set -euo pipefail
if ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi
chromium --version
