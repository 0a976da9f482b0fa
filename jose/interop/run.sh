#!/usr/bin/env bash
# push-jose against an independent JOSE implementation (PyPI jwcrypto): JWEs
# each one seals, the other opens, for RSA-OAEP-256 (2048 and 4096 bits) and
# ECDH-ES+A256KW (P-256, X25519), all with A256GCM. Then the same through the
# service and push-client: content the service sealed opened by jwcrypto, and
# content jwcrypto sealed end to end opened by push-client (a node on SQLite
# in a temporary folder, on loopback).
#
#   jose/interop/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/jose-interop-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import jwcrypto' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
(cd "$root" && cargo build --quiet --locked --workspace --examples)
"$venv/bin/python" "$here/jwcrypto_check.py" "$root/target/debug/examples/jwe"
(cd "$root" && cargo build --quiet --release --locked -p push-service -p sdk-client)
"$venv/bin/python" "$here/service_check.py" "$root/target/release"
