#!/usr/bin/env bash
# Builds the Debian package with cargo-deb: the binary, the systemd unit, a starter
# /etc/portico/portico.toml, the example configs, man pages (clap_mangen, from the
# command line itself) and shell completions (clap_complete).
#
#   packaging/build-deb.sh            # release build: target/debian/portico_*.deb
#   PROFILE=dev packaging/build-deb.sh  # package a debug build (CI's test)
#   NO_BUILD=1 PROFILE=dev packaging/build-deb.sh  # package the binary already in target/
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
case "$profile" in
  dev) dir=target/debug ;;
  *) dir=target/$profile ;;
esac
# CI packages the binary its tests built: building the package alone resolves the
# dependencies' features without the dev-dependencies, which recompiles half of them.
if [ "${NO_BUILD:-}" != 1 ]; then
  cargo build --profile "$profile" --bin portico
fi
bin=$dir/portico
[ -x "$bin" ] || { echo "build-deb: no $bin (build it, or drop NO_BUILD)" >&2; exit 1; }

out=target/package
rm -rf "$out"
mkdir -p "$out/man" "$out/completions" "$out/units"
"$bin" man "$out/man"
gzip -9n "$out"/man/*.1
"$bin" completions bash > "$out/completions/portico.bash"
"$bin" completions zsh > "$out/completions/_portico"
"$bin" completions fish > "$out/completions/portico.fish"
# The unit in config/ is for a hand install under /usr/local; the package installs
# the binary in /usr/bin.
sed 's|/usr/local/bin/portico|/usr/bin/portico|g' config/portico.service > "$out/units/portico.service"

# Pinned: packaging a debug build (CI) is a warning in this version.
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb --version 3.8.0
cargo deb --no-build --profile "$profile" "$@"
