# Debian architecture names (amd64, arm64, armhf) mapped to what the cross
# tools call them. Sourced by cross.sh, package.sh and bench-arm.sh.

# The Rust target triple.
triple_of() {
  case "$1" in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    armhf) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "unknown architecture $1 (amd64, arm64, armhf)" >&2; return 1 ;;
  esac
}

# The strip that understands its binaries.
strip_of() {
  case "$1" in
    arm64) echo aarch64-linux-gnu-strip ;;
    armhf) echo arm-linux-gnueabihf-strip ;;
    *) echo strip ;;
  esac
}

# How to run one of its binaries here (nothing for amd64).
qemu_of() {
  case "$1" in
    arm64) echo "qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
    armhf) echo "qemu-arm -L /usr/arm-linux-gnueabihf" ;;
  esac
}
