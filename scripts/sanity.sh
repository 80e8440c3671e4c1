#!/usr/bin/env bash
# ansible-test must run from a path ending in ansible_collections/<ns>/<name>; the repo
# root is the collection, so sanity runs on a copy of the tracked (and new, not ignored)
# files laid out that way.  Offline: the pip bootstrap comes from `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=${ETSF_SANITY_DIR:-/tmp/etsf-sanity}
dest="$work/ansible_collections/etsf/sip"
rm -rf "$work"
mkdir -p "$dest"
git ls-files -co --exclude-standard | grep -v '^collections/' | while read -r f; do
  [ -e "$f" ] && printf '%s\n' "$f"
done > "$work/files.txt"
rsync -a --files-from="$work/files.txt" "$root/" "$dest/"
cd "$dest"
git init -q . && git add -A >/dev/null && git -c user.name=sanity -c user.email=sanity@invalid commit -qm sanity
echo "[sanity] ansible-test sanity in $dest"
exec "$root/.venv/bin/ansible-test" sanity --python 3.11 --requirements --color no "$@"
