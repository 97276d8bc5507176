#!/usr/bin/env bash
# Browser tests drive Debian's headless Chromium; install it when it is missing and we may.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "could not install chromium: browser tests will skip (they fail under CI=true)"
else
  echo "chromium is not installed and apt-get is not usable here: browser tests will skip"
fi
exit 0
