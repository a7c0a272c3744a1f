#!/usr/bin/env bash
# Download the pinned PyPI source releases (sdists) used by the real-world check, verify
# their sha256, and unpack each to examples/realworld/src/NAME-VERSION/.
#
#   examples/realworld/fetch.sh                 # all pinned projects
#   examples/realworld/fetch.sh more-itertools  # one of them
#
# Needs python3 with pip and access to PyPI. Idempotent: an unpacked tree is kept as is.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python3}

# name  version  sdist file  sha256 (from PyPI, checked on download)
PINS=(
  "more-itertools 11.2.1 more_itertools-11.2.1.tar.gz cbf08fd0af284dc69718b9b76a8e6203df624d70209ea511e4219d350c856f63"
  "idna 3.20 idna-3.20.tar.gz a7db850025b95ded1eae8a46181a1a6c56c92c96f0e2b005d9ff8dc0210cab44"
)

want=("$@")
found_any=0
for pin in "${PINS[@]}"; do
  read -r name version file sha <<<"$pin"
  if ((${#want[@]})); then
    match=0
    for w in "${want[@]}"; do [[ $w == "$name" ]] && match=1; done
    ((match)) || continue
  fi
  found_any=1
  dest="$here/src/$name-$version"
  if [[ -f $dest.ok && -d $dest ]]; then
    echo "fetch: $name $version already at ${dest#"$PWD"/}" >&2
    continue
  fi
  mkdir -p "$here/dl"
  if [[ ! -f $here/dl/$file ]]; then
    echo "fetch: downloading $name==$version (sdist) from PyPI" >&2
    "$PYTHON" -m pip download --quiet --disable-pip-version-check \
      --no-deps --no-binary :all: "$name==$version" -d "$here/dl"
  fi
  got=$(sha256sum "$here/dl/$file" | cut -d' ' -f1)
  if [[ $got != "$sha" ]]; then
    echo "fetch: sha256 mismatch for $file: expected $sha, got $got" >&2
    rm -f "$here/dl/$file"
    exit 1
  fi
  # The archive's top directory is the file name without .tar.gz (PEP 625 normalised name).
  top=${file%.tar.gz}
  tmp=$(mktemp -d "$here/src.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  tar -xzf "$here/dl/$file" -C "$tmp" --no-same-owner --no-same-permissions
  [[ -d $tmp/$top ]] || { echo "fetch: $file has no top-level $top/" >&2; exit 1; }
  mkdir -p "$here/src"
  rm -rf "$dest" "$dest.ok"
  mv "$tmp/$top" "$dest"
  rm -rf "$tmp"
  trap - EXIT
  echo "$sha  $file" >"$dest.ok"   # marker kept outside the tree the job sees
  echo "fetch: $name $version unpacked to ${dest#"$PWD"/}" >&2
done
((found_any)) || { echo "fetch: no pinned project named: ${want[*]}" >&2; exit 2; }
