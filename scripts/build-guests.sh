#!/usr/bin/env bash
# Builds the example guests (guest-examples/) as wasm32-wasip2 components into
# guest-examples/out/<name>.wasm, and writes packable directories for `counter`,
# `hello` and `temperature` into guest-examples/out/pkg/<name>/ (`wasmdm pack <dir>` adds the
# sha256). Idempotent; runs from any cwd.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
guests="$root/guest-examples"
out="$guests/out"
target=wasm32-wasip2
names=(hello counter spinner blocker memhog trapper escaper failer crasher flooder binder filler temperature)

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target"
fi

# cd so guest-examples/.cargo/config.toml applies; --target is explicit anyway.
cd "$guests"
cargo build --release --target "$target" --target-dir "$guests/target" --quiet

mkdir -p "$out"
# Component-model binaries start with this preamble (core modules say 01 00 00 00).
component_magic="0061736d0d000100"
for name in "${names[@]}"; do
    src="$guests/target/$target/release/$name.wasm"
    magic="$(head -c 8 "$src" | od -An -tx1 | tr -d ' \n')"
    if [[ "$magic" != "$component_magic" ]]; then
        echo "error: $src is not a component (preamble $magic)" >&2
        exit 1
    fi
    cp "$src" "$out/$name.wasm"
    printf '%-8s %8d bytes  %s\n' "$name" "$(stat -c %s "$out/$name.wasm")" "$out/$name.wasm"
done

# Package directories: manifest.toml + the component it names.
write_pkg() {
    local name="$1" manifest="$2"
    local dir="$out/pkg/$name"
    mkdir -p "$dir"
    printf '%s' "$manifest" > "$dir/manifest.toml"
    cp "$out/$name.wasm" "$dir/$name.wasm"
    echo "package  $dir"
}

write_pkg counter 'manifest-version = 1

[package]
name = "counter"
version = "1.0.0"
description = "A counter service that keeps its count in /data"

[config]
greeting = "hello from the counter package"
interval-ms = "200"

[[component]]
id = "counter"
file = "counter.wasm"
world = "wasmdm:device/app"

[component.sandbox]
memory = "16MiB"
restart = { policy = "on-failure", max-retries = 3, backoff-ms = 500 }
'

write_pkg hello 'manifest-version = 1

[package]
name = "hello"
version = "1.0.0"
description = "Prints a greeting, its args and $GREETING, then exits"

[[component]]
id = "hello"
file = "hello.wasm"
world = "wasi:cli/command"

[component.sandbox]
env = { GREETING = "hi" }
'

write_pkg temperature 'manifest-version = 1

[package]
name = "temperature"
version = "1.0.0"
description = "A simulated temperature sensor serving IPSO Temperature (3303) over LwM2M"

[config]
interval-ms = "1000"

[[component]]
id = "temperature"
file = "temperature.wasm"
world = "wasmdm:device/app"

[component.sandbox]
memory = "16MiB"
objects = [3303]
restart = { policy = "on-failure", max-retries = 3, backoff-ms = 500 }
'
