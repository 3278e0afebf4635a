#!/usr/bin/env bash
# Install Debian's chromium for the real-browser tests (tests/browser).
#
# Idempotent: does nothing when chromium is already present. Uses the distro
# package only -- never `playwright install` or any downloaded browser build,
# so it works offline-from-CDN machines with an apt mirror and in CI as root.
#
# Exit 0 when chromium is present afterwards, non-zero (with one clear line)
# otherwise.
set -u

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

found() {
    if [ -x "$CHROMIUM" ]; then
        echo "$CHROMIUM"
        return 0
    fi
    command -v chromium 2>/dev/null && return 0
    return 1
}

if path="$(found)"; then
    echo "install-browser: chromium already present at $path; nothing to do."
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-browser: ERROR chromium missing and not root; run 'sudo apt-get install -y chromium'." >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: ERROR chromium missing and apt-get unavailable; install chromium manually." >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-browser: chromium missing; running apt-get update ..."
aptlog="$(mktemp)"
if ! apt-get update -qq >"$aptlog" 2>&1; then
    cat "$aptlog" >&2
    echo "install-browser: ERROR apt-get update failed; cannot install chromium." >&2
    exit 1
fi
echo "install-browser: running apt-get install -y chromium ..."
if ! apt-get install -y -qq chromium >"$aptlog" 2>&1; then
    cat "$aptlog" >&2
    echo "install-browser: ERROR apt-get install chromium failed." >&2
    exit 1
fi
rm -f "$aptlog"

if path="$(found)"; then
    echo "install-browser: installed chromium at $path ($("$path" --version 2>/dev/null || echo 'version unknown'))."
    exit 0
fi
echo "install-browser: ERROR apt-get reported success but chromium is still not found." >&2
exit 1
