#!/usr/bin/env bash
# The Kotlin bindings on the JVM, end to end: builds the library
# (libpush_client), generates its Kotlin with uniffi-bindgen, compiles the test
# program (test/*.kt) and the Android example with kotlinc (npm `kotlin-compiler`, pinned in
# package-lock.json) and runs it with JNA (Debian `libjna-java`) against a
# push-service node it starts on SQLite in a temporary folder, on loopback.
#
#   bindings/kotlin/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$root/target/kotlin"
mkdir -p "$work/toolchain"

# The compiler: kotlinc, the Kotlin standard library and kotlinx-coroutines.
if ! cmp -s "$here/package-lock.json" "$work/toolchain/package-lock.json" \
  || [ ! -x "$work/toolchain/node_modules/kotlin-compiler/bin/kotlinc" ]; then
  cp "$here/package.json" "$here/package-lock.json" "$work/toolchain/"
  (cd "$work/toolchain" && npm ci --no-audit --no-fund --silent)
fi
lib="$work/toolchain/node_modules/kotlin-compiler/lib"
kotlinc="$work/toolchain/node_modules/kotlin-compiler/bin/kotlinc"

# JNA, through which the generated Kotlin calls the library.
jna=/usr/share/java/jna.jar
if [ ! -f "$jna" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -q libjna-java >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libjna-java >/dev/null 2>&1; } || true
fi
[ -f "$jna" ] || { echo "JNA is required: apt-get install libjna-java" >&2; exit 1; }

# The library and the service; the Kotlin generated from the library itself.
(cd "$root" && cargo build --quiet --locked --workspace && cargo build --quiet --locked --release -p push-service)
rm -rf "$work/generated"
"$root/target/debug/uniffi-bindgen" generate --config "$root/bindings/uniffi.toml" --library "$root/target/debug/libpush_client.so" \
  --language kotlin --no-format --out-dir "$work/generated"

# Compiled again only when the generated or the test sources changed. The
# Android example is compiled too (a type check against the generated API,
# with stubs of the two Android classes it uses; it does not run here).
sources=$(find "$work/generated" "$here/test" "$here/examples" "$here/android-stubs" -name '*.kt' | sort)
sum=$(cat $sources | sha256sum | cut -d' ' -f1)
if [ "$(cat "$work/test.sum" 2>/dev/null)" != "$sum" ] || [ ! -f "$work/test.jar" ]; then
  "$kotlinc" -nowarn -cp "$jna:$lib/kotlinx-coroutines-core-jvm.jar" -d "$work/test.jar" $sources
  echo "$sum" > "$work/test.sum"
fi

# A node, an app and a notifier.
tmp="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
admin="kotlin-binding-test-admin-token"
service="$root/target/release/push-service"
PUSH_LISTEN="127.0.0.1:$port" PUSH_PUBLIC_URL="$base" PUSH_DATA_DIR="$tmp/data" \
  PUSH_ADMIN_TOKEN="$admin" PUSH_NOTIFIER_AUDIENCE="$base" PUSH_LOG_LEVEL=error \
  "$service" serve >/dev/null 2>"$tmp/service.log" &
node=$!
trap 'kill $node 2>/dev/null; wait $node 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 300); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.1; done
app=$(curl -sf -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name":"kotlin"}' "$base/v1/apps" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
jwks=$("$service" notifier-key --out "$tmp/notifier.pem" --kid k1)
notifier=$(curl -sf -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d "{\"name\":\"auth\",\"jwks\":$jwks,\"scopes\":[\"notify\"]}" "$base/v1/apps/$app/notifiers" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

java -Djna.library.path="$root/target/debug" \
  -cp "$work/test.jar:$jna:$lib/kotlin-stdlib.jar:$lib/kotlinx-coroutines-core-jvm.jar" \
  pushservice.clienttest.ClientTestKt "$base" "$app" "$service" "$tmp/notifier.pem" "$notifier"
