#!/usr/bin/env bash
# Builds the Debian package into target/debian/levee_VERSION-1_ARCH.deb (packaging/README.md).
#
#   packaging/build-deb.sh           release build (lto = "fat": ~6 minutes on 2 idle cores), packaged
#                                    with its debug symbols in levee-dbgsym_*.ddeb
#   packaging/build-deb.sh --debug   packages the debug binary `cargo build`/`cargo test` made:
#                                    seconds, for CI to check the package's contents
#
# Needs cargo-deb (`cargo install cargo-deb`). The man pages, completions and the unit are made
# here because they come from the built binary (`levee man`, `levee completions`) and from
# systemd/levee.service; Cargo.toml's [package.metadata.deb] takes them from target/packaging/.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
# The release profile keeps line tables (Cargo.toml); Debian-style, they go into a separate
# levee-dbgsym package and /usr/bin/levee is stripped (38 MB -> about 15 MB).
options=(--dbgsym)
case "${1:-}" in
    # --fast: gzip instead of xz; this package is checked, not shipped.
    --debug) profile=dev options=(--fast) ;;
    "") ;;
    *) echo "usage: $0 [--debug]" >&2; exit 2 ;;
esac
target="${CARGO_TARGET_DIR:-target}"
if [ "$profile" = release ]; then
    cargo build --release --locked
    bin="$target/release/levee"
else
    bin="$target/debug/levee"
    [ -x "$bin" ] || cargo build --locked
fi

out="$target/packaging"
rm -rf "$out"
mkdir -p "$out/man" "$out/completions" "$out/systemd"
"$bin" man --dir "$out/man"
gzip -9n "$out"/man/*.1
"$bin" completions bash >"$out/completions/levee"
"$bin" completions zsh >"$out/completions/_levee"
"$bin" completions fish >"$out/completions/levee.fish"
# The one unit, with the binary where the package puts it.
sed 's#/usr/local/bin/levee#/usr/bin/levee#g' systemd/levee.service >"$out/systemd/levee.service"

# --no-build: the binary above is the one packaged; cargo-deb maps target/release/ in the asset
# list to the profile's directory and strips its own copy.
# (cargo-deb warns that the dev profile is unusual for a release: it is, on purpose, for CI.)
cargo deb --no-build --locked --profile "$profile" "${options[@]}" --output "$target/debian/"
