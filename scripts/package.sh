#!/usr/bin/env bash
# Debian packages of wasmdm (issue 15): the binary, wasmdm-device.service and
# wasmdm-server.service, /etc/wasmdm/{device.toml,server.env}, maintainer
# scripts (packaging/). Built with dpkg-deb alone, no cargo-deb to compile.
#
#   scripts/package.sh deb ARCH BINARY OUTDIR   # ARCH: amd64 | arm64 | armhf; prints the .deb's path
#   scripts/package.sh check DEB                # contents, control data, units (systemd-analyze
#                                               # verify); then runs both units' ExecStart lines by
#                                               # hand (arm64/armhf under qemu-user), as an
#                                               # unprivileged user, until the device registers with
#                                               # the server and de-registers on SIGTERM
#   scripts/package.sh install-test DEB         # root, MUTATES THIS SYSTEM: dpkg -i, an installed
#                                               # app, upgrade, remove, reinstall, purge (see README
#                                               # "Packages"); leaves nothing installed
#
# VERSION (default: the workspace version) overrides the package version.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PKG="$ROOT/packaging"

die() { echo "package.sh: $*" >&2; exit 1; }
note() { echo "package.sh: $*" >&2; }
# shellcheck source=scripts/arch.sh
. "$ROOT/scripts/arch.sh"

workspace_version() {
  sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml"
}

# The cross (or native) objdump for a Debian architecture.
objdump_for() {
  case "$1" in
    amd64) echo objdump ;;
    arm64) echo aarch64-linux-gnu-objdump ;;
    armhf) echo arm-linux-gnueabihf-objdump ;;
    *) die "unknown architecture $1 (amd64, arm64, armhf)" ;;
  esac
}

# ELF machine name readelf reports for each Debian architecture.
elf_machine() {
  case "$1" in
    amd64) echo "X86-64" ;;
    arm64) echo "AArch64" ;;
    armhf) echo "ARM" ;;
  esac
}

# Depends: the newest glibc symbol version the binary needs, libgcc_s if linked.
depends_of() {
  local arch="$1" bin="$2" od glibc deps
  od="$(objdump_for "$arch")"
  command -v "$od" >/dev/null || die "$od not found (scripts/cross.sh setup installs it)"
  glibc="$("$od" -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
  deps="libc6 (>= ${glibc:-2.31})"
  if "$od" -p "$bin" | grep -q 'NEEDED.*libgcc_s'; then
    deps="$deps, libgcc-s1"
  fi
  echo "$deps, passwd"
}

cmd_deb() {
  [ $# = 3 ] || die "usage: package.sh deb ARCH BINARY OUTDIR"
  local arch="$1" bin="$2" out="$3" version stage size
  [ -x "$bin" ] || die "no binary at $bin"
  version="${VERSION:-$(workspace_version)}"
  stage="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$stage'" RETURN
  chmod 0755 "$stage" # the package's "./" entry: never a 0700 root
  install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" \
    "$stage/etc/wasmdm" "$stage/usr/share/doc/wasmdm"
  install -m 0755 "$bin" "$stage/usr/bin/wasmdm"
  "$(strip_of "$arch")" --strip-unneeded "$stage/usr/bin/wasmdm"
  install -m 0644 "$PKG/systemd/wasmdm-device.service" "$PKG/systemd/wasmdm-server.service" \
    "$stage/lib/systemd/system/"
  install -m 0644 "$PKG/etc/device.toml" "$PKG/etc/server.env" "$stage/etc/wasmdm/"
  if [ "$arch" = arm64 ]; then
    # Raspberry Pi OS and many arm64 kernels give a process 512 GiB of
    # address space (39-bit VA): a 4 GiB reservation per memory would not fit
    # 100 pool slots (README "Device configuration").
    cat >>"$stage/etc/wasmdm/device.toml" <<'EOF'

# arm64: reserve only what a memory may use (39-bit VA kernels, e.g. Raspberry Pi OS).
memory-reservation = 268435456
EOF
  fi
  install -m 0644 "$ROOT/README.md" "$stage/usr/share/doc/wasmdm/README.md"
  printf 'wasmdm\nLicense: Apache-2.0\n' >"$stage/usr/share/doc/wasmdm/copyright"
  install -m 0755 "$PKG/debian/postinst" "$PKG/debian/prerm" "$PKG/debian/postrm" "$stage/DEBIAN/"
  install -m 0644 "$PKG/debian/conffiles" "$stage/DEBIAN/"
  size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
  sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@DEPENDS@/$(depends_of "$arch" "$stage/usr/bin/wasmdm")/" \
    "$PKG/debian/control.in" >"$stage/DEBIAN/control"
  mkdir -p "$out"
  local deb="$out/wasmdm_${version}_${arch}.deb"
  dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
  echo "$deb"
}

# The ExecStart= line of a unit, with `$VAR` expanded from the unit's
# EnvironmentFile as systemd does (word-split, unquoted).
exec_start() {
  sed -n 's/^ExecStart=//p' "$1"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

free_tcp_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits up to $3 s for $2 (a fixed string) in file $1, while process $4 lives.
wait_for() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -qF -- "$2" "$1" 2>/dev/null && return 0
    kill -0 "$4" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Runs a command as the unprivileged user the units name when we are root
# (with no new privileges, like NoNewPrivileges=), else as ourselves.
# Whether the service user's `wasmdm list` shows the counter app. The listing
# is read whole before it is searched: `grep -q` in a pipe may close it early.
counter_listed() {
  local listing
  listing="$(as_service_user wasmdm /usr/bin/wasmdm list --data-dir /var/lib/wasmdm)" || return 1
  grep -q counter <<<"$listing"
}

as_service_user() {
  local user="$1"
  shift
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid="$(id -u "$user")" --regid="$(id -g "$user")" --clear-groups --no-new-privs -- "$@"
  else
    "$@"
  fi
}

# As `as_service_user`, replacing this (background sub)shell so that `$!`
# is the service's own pid.
exec_as_service_user() {
  local user="$1"
  shift
  if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid="$(id -u "$user")" --regid="$(id -g "$user")" --clear-groups --no-new-privs -- "$@"
  else
    exec "$@"
  fi
}

# Starts `wasmdm server` and `wasmdm device` from the units' ExecStart lines
# (paths under $root, data under $state, the server on free loopback ports),
# waits for the registration and a clean stop. $1: user; $2: root of the
# binary/config ("" = installed paths); $3: state dir prefix ("" = /var/lib).
run_units() {
  local user="$1" root="$2" state="$3" log coap coaps http dev_line srv_line spid dpid rc
  log="$(mktemp -d)"
  chmod 0755 "$log"
  coap="$(free_port)"; coaps="$(free_port)"; http="$(free_tcp_port)"
  srv_line="$(exec_start "$root/lib/systemd/system/wasmdm-server.service")"
  dev_line="$(exec_start "$root/lib/systemd/system/wasmdm-device.service")"
  # The operator's edits: ports, a lab server accepting NoSec.
  local env_file="$root/etc/wasmdm/server.env" conf="$root/etc/wasmdm/device.toml"
  sed -i "s|^WASMDM_SERVER_ARGS=.*|WASMDM_SERVER_ARGS=\"--coap 127.0.0.1:$coap --coaps 127.0.0.1:$coaps --http 127.0.0.1:$http --no-bootstrap --allow-nosec\"|" "$env_file"
  sed -i "s|^server = .*|server = \"coap://127.0.0.1:$coap\"|" "$conf"
  grep -q "^endpoint" "$conf" || echo 'endpoint = "deb-check"' >>"$conf"
  local WASMDM_SERVER_ARGS
  # shellcheck disable=SC1090
  WASMDM_SERVER_ARGS="$(. "$env_file"; echo "$WASMDM_SERVER_ARGS")"
  srv_line="${srv_line//\$WASMDM_SERVER_ARGS/$WASMDM_SERVER_ARGS}"
  if [ -n "$root" ]; then
    srv_line="${srv_line//\/usr\/bin\//$root/usr/bin/}"
    dev_line="${dev_line//\/usr\/bin\//$root/usr/bin/}"
    dev_line="${dev_line//\/etc\/wasmdm\//$root/etc/wasmdm/}"
  fi
  if [ -n "${EMULATOR:-}" ]; then
    srv_line="$EMULATOR $srv_line"
    dev_line="$EMULATOR $dev_line"
  fi
  if [ -n "$state" ]; then
    srv_line="${srv_line//\/var\/lib\//$state/}"
    dev_line="${dev_line//\/var\/lib\//$state/}"
  fi
  note "server: $srv_line"
  note "device: $dev_line"
  # shellcheck disable=SC2086
  RUST_LOG=info exec_as_service_user "$user" $srv_line >"$log/server.log" 2>&1 &
  spid=$!
  sleep 0.5
  # shellcheck disable=SC2086
  RUST_LOG=info exec_as_service_user "$user" $dev_line >"$log/device.log" 2>&1 &
  dpid=$!
  rc=0
  if ! wait_for "$log/device.log" "registered" 60 "$dpid"; then
    note "the device did not register; logs:"
    cat "$log/server.log" "$log/device.log" >&2
    rc=1
  fi
  # The device installs its SIGTERM handler as its main loop first runs: a
  # TERM in the very first moments kills it outright (systemd counts that as
  # a clean stop too); give it a moment so the test sees its own shutdown.
  sleep 2
  kill -TERM "$dpid" 2>/dev/null || true
  local drc=0
  wait "$dpid" || drc=$?
  kill -TERM "$spid" 2>/dev/null || true
  wait "$spid" || true
  kill -KILL "$dpid" "$spid" 2>/dev/null || true
  if [ "$rc" = 0 ] && [ "$drc" != 0 ]; then
    note "the device exited with $drc on SIGTERM (Restart=on-failure would restart it); log:"
    cat "$log/device.log" >&2
    rc=1
  fi
  if [ "$rc" = 0 ] && ! grep -qF "de-registered" "$log/device.log"; then
    note "the device did not de-register on SIGTERM; log:"
    cat "$log/device.log" >&2
    rc=1
  fi
  rm -rf "$log"
  return "$rc"
}

cmd_check() {
  [ $# = 1 ] || die "usage: package.sh check DEB"
  local deb="$1" x arch f
  [ -f "$deb" ] || die "no package at $deb"
  x="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$x'" RETURN
  arch="$(dpkg-deb --field "$deb" Architecture)"
  [ "$(dpkg-deb --field "$deb" Package)" = wasmdm ] || die "$deb: Package is not wasmdm"
  dpkg-deb --field "$deb" Depends | grep -q 'libc6 (>= ' || die "$deb: no libc6 dependency"
  local contents
  contents="$(dpkg-deb --contents "$deb")"
  for f in ./usr/bin/wasmdm ./lib/systemd/system/wasmdm-device.service \
    ./lib/systemd/system/wasmdm-server.service ./etc/wasmdm/device.toml \
    ./etc/wasmdm/server.env ./usr/share/doc/wasmdm/copyright; do
    grep -q " $f\$" <<<"$contents" || die "$deb lacks $f"
  done
  grep -q '^-rwxr-xr-x root/root .* ./usr/bin/wasmdm$' <<<"$contents" || die "$deb: /usr/bin/wasmdm not root-owned 0755"
  grep -q '^drwxr-xr-x root/root .* \./$' <<<"$contents" || die "$deb: its root directory is not 0755"
  dpkg-deb --control "$deb" "$x/DEBIAN"
  for f in postinst prerm postrm conffiles control; do
    [ -f "$x/DEBIAN/$f" ] || die "$deb lacks DEBIAN/$f"
  done
  grep -qx /etc/wasmdm/device.toml "$x/DEBIAN/conffiles" || die "device.toml is not a conffile"
  sh -n "$x/DEBIAN/postinst" && sh -n "$x/DEBIAN/prerm" && sh -n "$x/DEBIAN/postrm"
  dpkg-deb --extract "$deb" "$x/root"
  readelf -h "$x/root/usr/bin/wasmdm" | grep -q "Machine:.*$(elf_machine "$arch")" ||
    die "$deb: /usr/bin/wasmdm is not an $arch binary"
  # The hardening the issue asks for, in both units.
  for f in "$x"/root/lib/systemd/system/*.service; do
    for key in 'User=wasmdm' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'PrivateTmp=yes' \
      'Restart=on-failure' 'StateDirectory=wasmdm'; do
      grep -q "^$key" "$f" || die "$(basename "$f") lacks $key"
    done
  done
  grep -q '^ExecStart=/usr/bin/wasmdm device --config /etc/wasmdm/device.toml --data-dir /var/lib/wasmdm$' \
    "$x/root/lib/systemd/system/wasmdm-device.service" || die "device unit: unexpected ExecStart"
  if command -v systemd-analyze >/dev/null 2>&1; then
    # Verified as installed, but with ExecStart= pointing into the extracted
    # tree (verify checks that the command exists). Any message fails: an
    # unknown or misspelt key is only a warning to systemd.
    local out
    mkdir "$x/units"
    for f in "$x"/root/lib/systemd/system/wasmdm-*.service; do
      sed "s|/usr/bin/wasmdm|$x/root/usr/bin/wasmdm|" "$f" >"$x/units/$(basename "$f")"
    done
    if ! out="$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$x"/units/*.service 2>&1)" ||
      [ -n "$out" ]; then
      echo "$out" >&2
      die "systemd-analyze verify: the units have problems"
    fi
    note "systemd-analyze verify: ok"
  else
    note "systemd-analyze not installed: units not verified"
  fi
  # A foreign package's binary runs under qemu-user where it is installed.
  local EMULATOR=""
  case "$arch" in
    arm64) command -v qemu-aarch64 >/dev/null && EMULATOR="qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
    armhf) command -v qemu-arm >/dev/null && EMULATOR="qemu-arm -L /usr/arm-linux-gnueabihf" ;;
  esac
  if [ "$arch" = "$(dpkg --print-architecture)" ] || [ -n "$EMULATOR" ]; then
    local user
    user="$(id -un)"
    if [ "$(id -u)" = 0 ]; then user=nobody; fi
    mkdir -p "$x/state/wasmdm" "$x/state/wasmdm-server"
    chmod 0750 "$x/state/wasmdm" "$x/state/wasmdm-server"
    if [ "$(id -u)" = 0 ]; then
      chown nobody: "$x/state/wasmdm" "$x/state/wasmdm-server"
      chmod 0755 "$x" "$x/state"
    fi
    run_units "$user" "$x/root" "$x/state" || die "running the units' ExecStart lines failed"
    note "ExecStart lines (as $user${EMULATOR:+, under ${EMULATOR%% *}}): the device registered with the server and de-registered on SIGTERM"
  else
    note "$arch is not this machine's architecture and qemu-user is missing: ExecStart lines not run"
  fi
  echo "package.sh: $deb: ok"
}

cmd_install_test() {
  [ $# = 1 ] || die "usage: package.sh install-test DEB"
  local deb="$1" deb2 work
  [ "$(id -u)" = 0 ] || die "install-test needs root (it installs the package)"
  [ -f "$deb" ] || die "no package at $deb"
  # Never replace or purge a real installation: skip, saying why.
  if dpkg-query -W -f='${Status}' wasmdm 2>/dev/null | grep -q installed ||
    [ -e /var/lib/wasmdm ] || [ -e /var/lib/wasmdm-server ] || [ -e /etc/wasmdm ]; then
    note "SKIPPED install-test: wasmdm is installed here (or /var/lib/wasmdm, /etc/wasmdm exist)"
    return 0
  fi
  local bin_dir="$ROOT/guest-examples/out/pkg/counter"
  [ -d "$bin_dir" ] || die "no $bin_dir: run scripts/build-guests.sh first"
  work="$(mktemp -d)"
  chmod 0755 "$work"
  # On success (RETURN) and on `die` (EXIT): never leave this test's install behind.
  # shellcheck disable=SC2064
  trap "dpkg --purge wasmdm >/dev/null 2>&1 || true; rm -rf '$work'" RETURN EXIT
  # A second version of the same package: the upgrade.
  local tree
  tree="$(mktemp -d)"
  dpkg-deb --raw-extract "$deb" "$tree"
  sed -i 's/^Version: \(.*\)$/Version: \1+upgrade/' "$tree/DEBIAN/control"
  deb2="$work/wasmdm-upgrade.deb"
  dpkg-deb --root-owner-group --build "$tree" "$deb2" >/dev/null
  rm -rf "$tree"

  DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null
  getent passwd wasmdm >/dev/null || die "no wasmdm system user"
  [ "$(stat -c %U:%a /var/lib/wasmdm)" = wasmdm:750 ] || die "/var/lib/wasmdm is not wasmdm 0750"
  /usr/bin/wasmdm --help >/dev/null
  # An app installed and activated as the service would (its user, its data dir).
  local wdm="$work/counter.wdm"
  /usr/bin/wasmdm pack "$bin_dir" -o "$wdm" >/dev/null
  chmod 0644 "$wdm"
  as_service_user wasmdm /usr/bin/wasmdm install --data-dir /var/lib/wasmdm "$wdm" >/dev/null
  as_service_user wasmdm /usr/bin/wasmdm activate --data-dir /var/lib/wasmdm counter >/dev/null
  counter_listed ||
    die "the app is not listed after install"

  # The device and server units' ExecStart lines, installed paths, as wasmdm.
  run_units wasmdm "" "" || die "running the installed units' ExecStart lines failed"
  if [ -d /run/systemd/system ]; then
    systemctl start wasmdm-server.service wasmdm-device.service
    sleep 5
    systemctl is-active --quiet wasmdm-device.service || die "wasmdm-device.service is not active"
    systemctl is-active --quiet wasmdm-server.service || die "wasmdm-server.service is not active"
    note "systemd: both units started"
  else
    note "no systemd here: the units' ExecStart lines were run by hand instead"
  fi
  local edited
  edited="$(grep '^server = ' /etc/wasmdm/device.toml)"

  # Upgrade: the app, its activation and the edited config stay.
  DEBIAN_FRONTEND=noninteractive dpkg --force-confold -i "$deb2" >/dev/null
  counter_listed ||
    die "the upgrade lost the app"
  [ "$(grep '^server = ' /etc/wasmdm/device.toml)" = "$edited" ] || die "the upgrade lost the config edit"

  # Remove: binary gone; apps, data and config stay.
  dpkg --remove wasmdm >/dev/null
  [ ! -e /usr/bin/wasmdm ] || die "remove left /usr/bin/wasmdm"
  ls /var/lib/wasmdm/* >/dev/null 2>&1 || die "remove deleted the apps"
  [ -f /etc/wasmdm/device.toml ] || die "remove deleted the config"

  # Reinstall after remove: the app is still there.
  DEBIAN_FRONTEND=noninteractive dpkg --force-confold -i "$deb" >/dev/null 2>&1 ||
    DEBIAN_FRONTEND=noninteractive dpkg --force-confold --force-downgrade -i "$deb" >/dev/null
  counter_listed ||
    die "reinstall after remove lost the app"

  # Purge: apps, data, server store and config gone.
  if [ -d /run/systemd/system ]; then systemctl stop wasmdm-device wasmdm-server || true; fi
  dpkg --purge wasmdm >/dev/null
  [ ! -e /var/lib/wasmdm ] || die "purge left /var/lib/wasmdm"
  [ ! -e /var/lib/wasmdm-server ] || die "purge left /var/lib/wasmdm-server"
  [ ! -e /etc/wasmdm ] || die "purge left /etc/wasmdm"
  echo "package.sh: install-test $deb: install, app, ExecStart lines, upgrade, remove, reinstall, purge: ok"
}

case "${1:-}" in
  deb) shift; cmd_deb "$@" ;;
  check) shift; cmd_check "$@" ;;
  install-test) shift; cmd_install_test "$@" ;;
  *) die "usage: package.sh deb ARCH BINARY OUTDIR | check DEB | install-test DEB" ;;
esac
