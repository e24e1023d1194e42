#!/usr/bin/env bash
# Builds the Debian package of eastwall with cargo-deb: target/debian/eastwall_<version>_<arch>.deb
#   scripts/package-deb.sh            release build (what you ship)
#   scripts/package-deb.sh --dev      from the dev-profile binary already built (the tests)
# Needs cargo-deb (`cargo install cargo-deb --locked`; scripts/test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
fast=()
if [ "${1:-}" = "--dev" ]; then
  # The tests' binary: no new build, and quick compression of a large unoptimized binary.
  profile=dev
  fast=(--fast)
else
  cargo build -q --release -p eastwall-node --bin eastwall
fi
bindir=target/$([ "$profile" = dev ] && echo debug || echo release)
extra=deploy/debian/generated
rm -rf "$extra"
mkdir -p "$extra/completions" "$extra/man"
"$bindir/eastwall" completions bash > "$extra/completions/eastwall.bash"
"$bindir/eastwall" completions zsh > "$extra/completions/_eastwall"
"$bindir/eastwall" completions fish > "$extra/completions/eastwall.fish"
"$bindir/eastwall" man "$extra/man"
if [ "$profile" = dev ]; then
  # cargo-deb packages release builds; the dev binary stands in for one in a target folder
  # of its own (a hard link: no copy of 150 MB).
  stage=target/deb-stage
  mkdir -p "$stage/release"
  ln -f "$bindir/eastwall" "$stage/release/eastwall"
  CARGO_TARGET_DIR=$stage cargo deb -p eastwall-node --no-build "${fast[@]}" --no-strip \
    --output target/debian/
else
  cargo deb -p eastwall-node --no-build
fi
