#!/usr/bin/env bash
# Checks a built levee .deb (CI runs it after `packaging/build-deb.sh --debug`):
#   - control data: name, dependencies, the conffile, maintainer scripts that stop the service
#     on removal;
#   - contents: binary, unit, default config, man pages, completions, docs;
#   - the unit passes `systemd-analyze verify` inside the unpacked package;
#   - the packaged binary accepts the packaged config, its man pages render, its bash completion
#     loads;
#   - install, remove and purge with dpkg into a throwaway root: the config survives removal
#     and purge removes it.
# Needs dpkg, man-db, bash; systemd-analyze when present. Usage: packaging/check-deb.sh [DEB]
set -euo pipefail
cd "$(dirname "$0")/.."

deb="${1:-$(ls -t "${CARGO_TARGET_DIR:-target}"/debian/levee_*.deb 2>/dev/null | head -n1)}"
[ -f "$deb" ] || { echo "check-deb: no .deb (run packaging/build-deb.sh first)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }
echo "check-deb: $deb"

echo "-- dpkg-deb --info"
dpkg-deb --info "$deb"
[ "$(dpkg-deb --field "$deb" Package)" = levee ] || fail "package name"
dpkg-deb --field "$deb" Depends | grep -q 'libc6' || fail "Depends has no libc6"
dpkg-deb --control "$deb" "$work/control"
[ "$(cat "$work/control/conffiles")" = /etc/levee/levee.toml ] || fail "conffiles: $(cat "$work/control/conffiles")"
grep -q 'deb-systemd-invoke stop levee.service' "$work/control/prerm" || fail "prerm does not stop the service"
grep -q 'try-restart levee.service' "$work/control/postinst" || fail "postinst does not restart on upgrade"
grep -q 'rmdir /etc/levee' "$work/control/postrm" || fail "postrm does not clean /etc/levee on purge"
for s in postinst prerm postrm; do sh -n "$work/control/$s" || fail "$s is not valid sh"; done

echo "-- dpkg-deb --contents"
dpkg-deb --contents "$deb" | awk '{print $NF}' | sed 's#^\./#/#' >"$work/contents"
cat "$work/contents"
for f in /usr/bin/levee /usr/lib/systemd/system/levee.service /etc/levee/levee.toml \
    /usr/share/man/man1/levee.1.gz /usr/share/man/man1/levee-run.1.gz \
    /usr/share/man/man1/levee-check.1.gz /usr/share/bash-completion/completions/levee \
    /usr/share/zsh/vendor-completions/_levee /usr/share/fish/vendor_completions.d/levee.fish \
    /usr/share/doc/levee/README.md /usr/share/doc/levee/config.example.toml \
    /usr/share/doc/levee/copyright /usr/share/doc/levee/grafana/levee.json \
    /usr/share/doc/levee/prometheus/alerts.yml; do
    grep -qx "$f" "$work/contents" || fail "missing $f"
done

root="$work/root"
mkdir -p "$root"
dpkg-deb -x "$deb" "$root"
unit="$root/usr/lib/systemd/system/levee.service"
grep -q '^ExecStart=/usr/bin/levee run --config /etc/levee/levee.toml$' "$unit" || fail "unit ExecStart"
grep -q '^ExecStartPre=/usr/bin/levee check --config /etc/levee/levee.toml$' "$unit" || fail "unit ExecStartPre"
if grep -q /usr/local "$unit"; then fail "unit still names /usr/local"; fi
# The packaged unit is systemd/levee.service with the binary's path, nothing else.
diff <(sed 's#/usr/local/bin/levee#/usr/bin/levee#g' systemd/levee.service) "$unit" \
    || fail "the packaged unit differs from systemd/levee.service beyond the binary's path"

echo "-- the packaged binary, config, man pages and completion"
version="$(dpkg-deb --field "$deb" Version)"
"$root/usr/bin/levee" --version | grep -qx "levee ${version%-*}" \
    || fail "levee --version is not $version without the revision"
# Relative paths in the config resolve against its directory; none of the example's do.
"$root/usr/bin/levee" check --config "$root/etc/levee/levee.toml"
if command -v man >/dev/null 2>&1; then
    for page in "$root"/usr/share/man/man1/*.1.gz; do
        # man -l renders the page; --warnings makes groff report what it could not format.
        out="$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)" || fail "man -l $page"
        [ -z "$out" ] || fail "man -l $page warns: $out"
    done
    page="$(MANWIDTH=80 man -l "$root/usr/share/man/man1/levee.1.gz")"
    grep -q 'SIGHUP' <<<"$page" || fail "levee(1) has no SIGNALS"
else
    echo "WARNING: man-db not installed: man pages not rendered"
fi
completion="$(bash -c "source '$root/usr/share/bash-completion/completions/levee' && complete -p levee")"
grep -q '_levee' <<<"$completion" || fail "bash completion does not load"

if command -v systemd-analyze >/dev/null 2>&1; then
    echo "-- systemd-analyze verify (inside the unpacked package)"
    # The unit's ExecStart must exist and the targets it names must resolve, relative to the
    # root: give the root the system's standard units and /usr/bin/kill (ExecReload).
    [ -e "$root/bin" ] || ln -s usr/bin "$root/bin"
    [ -e "$root/lib" ] || ln -s usr/lib "$root/lib"
    cp -L /bin/kill "$root/usr/bin/kill"
    for u in /usr/lib/systemd/system/*.target /usr/lib/systemd/system/*.slice \
        /usr/lib/systemd/system/*.socket; do
        [ -e "$root/usr/lib/systemd/system/${u##*/}" ] || cp -P "$u" "$root/usr/lib/systemd/system/"
    done
    out="$(systemd-analyze verify --root="$root" /usr/lib/systemd/system/levee.service 2>&1)" \
        || fail "systemd-analyze verify: $out"
    [ -z "$out" ] || fail "systemd-analyze verify warns: $out"
else
    echo "-- systemd-analyze not installed: unit not verified"
fi

echo "-- dpkg --root: install, remove, purge in a throwaway root"
# A root with just enough for the maintainer scripts (sh, rm, rmdir and the libc they need) and
# a dpkg database that has the host's libc6, so Depends is checked for real. No systemd runs
# there, so the scripts' systemctl and deb-systemd-helper branches are skipped.
t="$work/dpkgroot"
mkdir -p "$t/var/lib/dpkg/info" "$t/var/lib/dpkg/updates" "$t/usr/bin" "$t/dev" "$t/tmp"
ln -s usr/bin "$t/bin"
ln -s usr/lib "$t/lib"
ln -s usr/lib64 "$t/lib64"
for bin in sh dash rm rmdir; do cp -L "$(command -v "$bin")" "$t/usr/bin/$bin"; done
for lib in $(ldd "$t/usr/bin/dash" "$t/usr/bin/rm" "$t/usr/bin/rmdir" | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do
    mkdir -p "$t/usr$(dirname "${lib#/usr}")"
    cp -L "$lib" "$t/usr${lib#/usr}"
done
mknod -m 666 "$t/dev/null" c 1 3 2>/dev/null || true
libc="$(dpkg-query -W -f='${Version}' libc6)"
arch="$(dpkg --print-architecture)"
printf 'Package: libc6\nStatus: install ok installed\nMaintainer: test\nArchitecture: %s\nMulti-Arch: same\nVersion: %s\nDescription: the host libc, registered for the test\n\n' \
    "$arch" "$libc" >"$t/var/lib/dpkg/status"
touch "$t/var/lib/dpkg/info/libc6:$arch.list"
dpkg --root="$t" --install "$deb"
[ "$(dpkg --root="$t" -s levee | sed -n 's/^Status: //p')" = "install ok installed" ] || fail "not installed"
[ -x "$t/usr/bin/levee" ] || fail "no /usr/bin/levee after install"
cmp -s "$t/etc/levee/levee.toml" "$root/etc/levee/levee.toml" || fail "no default /etc/levee/levee.toml"
echo "# edited by the operator" >>"$t/etc/levee/levee.toml"
dpkg --root="$t" --remove levee
[ ! -e "$t/usr/bin/levee" ] || fail "/usr/bin/levee left after remove"
grep -q 'edited by the operator' "$t/etc/levee/levee.toml" || fail "remove did not keep the edited config"
dpkg --root="$t" --purge levee
[ ! -e "$t/etc/levee" ] || fail "/etc/levee left after purge: $(ls -A "$t/etc/levee")"
echo "check-deb: OK"
