#!/usr/bin/env bash
# Debian packages bodycam's scripts need, installed when missing: directly as root, through sudo
# otherwise; says what it installs. Never lets a test skip for want of them: fails here, with the
# command to run, instead.
#   scripts/system-deps.sh            what the test suite shells out to: mosquitto (real MQTT broker),
#                                     mosquitto-clients (mosquitto_pub/_sub), postgresql (initdb,
#                                     pg_ctl: the fleet store), systemd (systemd-analyze, -sysusers,
#                                     -tmpfiles for the unit tests), gcc (builds the stand-in
#                                     libedgetpu the Coral tests load), chromium (the dashboard's
#                                     browser tests drive it through playwright), plus python3-venv
#   scripts/system-deps.sh PKG...     just these (scripts/setup.sh asks for python3-venv)
set -euo pipefail
PY=${PYTHON:-python3}

present() {  # PACKAGE -> 0 when what we use from it is there
    case "$1" in
        mosquitto) command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] ;;
        mosquitto-clients) command -v mosquitto_sub >/dev/null 2>&1 && command -v mosquitto_pub >/dev/null 2>&1 ;;
        systemd) command -v systemd-analyze >/dev/null 2>&1 && command -v systemd-sysusers >/dev/null 2>&1 \
                     && command -v systemd-tmpfiles >/dev/null 2>&1 ;;
        postgresql) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 ;;
        gcc) command -v gcc >/dev/null 2>&1 ;;
        chromium) [ -x /usr/bin/chromium ] ;;
        # Debian's python3 has no ensurepip without python3-venv: try the real thing
        python3-venv) d=$(mktemp -d) && "$PY" -m venv "$d/v" >/dev/null 2>&1; rc=$?; rm -rf "$d"; return $rc ;;
        *) dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed" ;;
    esac
}

if [ $# -gt 0 ]; then
    wanted=("$@")
else
    wanted=(mosquitto mosquitto-clients postgresql systemd gcc chromium python3-venv)
fi
need=()
for p in "${wanted[@]}"; do
    present "$p" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "system-deps: installing Debian packages bodycam needs: ${need[*]}" >&2
if [ "$(id -u)" = 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
    echo "system-deps: (through sudo)" >&2
else
    echo "system-deps: not root and no sudo; run as root: apt-get install ${need[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: no apt-get; install these with your package manager: ${need[*]}" >&2
    exit 1
fi
log=$(mktemp)
if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
        >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "system-deps: apt-get failed (above); run: apt-get install ${need[*]}" >&2
    rm -f "$log"
    exit 1
fi
rm -f "$log"
for p in "${need[@]}"; do
    if ! present "$p"; then
        echo "system-deps: $p installed but still not usable" >&2
        exit 1
    fi
done
