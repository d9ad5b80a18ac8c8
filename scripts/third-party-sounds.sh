#!/usr/bin/env bash
# Download and unpack the Debian game-data packages whose sounds model_compile/third_party_sounds.tsv
# lists (about 4 GB; for `bodycam-model evaluate-library`, never needed by the tests or the camera).
# Usage: scripts/third-party-sounds.sh [DEST]   (default build/third-party)
set -euo pipefail
dest="${1:-build/third-party}"
pkgs=(freedoom teeworlds-data redeclipse-data supertuxkart-data warzone2100-data 0ad-data
      wesnoth-1.16-data cube2-data hedgewars-data nexuiz-data)
mkdir -p "$dest/deb"
cd "$dest/deb"
if ! apt-get download "${pkgs[@]}"; then
    echo "third-party-sounds: apt-get download failed; run 'apt-get update' first (as root)" >&2
    exit 1
fi
for f in *.deb; do
    dpkg-deb -x "$f" ..
done
for f in *.deb; do dpkg-deb -f "$f" Package Version | paste -sd' '; done
echo "unpacked under $dest/usr/share/games: bodycam-model evaluate-library --root $dest/usr/share/games"
