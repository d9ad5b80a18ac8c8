#!/usr/bin/env bash
# Debian packages the test suite needs: mosquitto (real MQTT broker), mosquitto-clients,
# postgresql (the fleet store), systemd (systemd-analyze for the unit tests).
# Installs what is missing: directly as root, through sudo otherwise; says what it does.
# Never skip the tests that need them: fail here, with the command to run, instead.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
echo "system-deps: installing Debian packages the tests need: ${need[*]}" >&2
if [ "$(id -u)" = 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "system-deps: not root and no sudo; run as root: apt-get install ${need[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: no apt-get; install these with your package manager: ${need[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
