#!/usr/bin/env bash
# Checks the simulators against independent client libraries: npm apns2 for APNs,
# Google's google-auth (+ requests) for FCM. Needs npm and pip (registries only),
# and port 443 on 127.0.0.1 free (apns2 always connects to port 443).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cargo build -q --release --locked --manifest-path "$root/Cargo.toml" -p push-service -p loadtest --bins
bin="$root/target/release"
# The client libraries come from the registries; if those cannot be reached, say so loudly.
if ! (cd "$here" && npm install --no-audit --no-fund --silent) || ! python3 -m pip install -q -r "$here/requirements.txt"; then
  echo "interop: WARNING: npm/PyPI unreachable; the independent client check did not run" >&2
  exit 0
fi

openssl ecparam -genkey -name prime256v1 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$work/apns.p8"
openssl pkey -in "$work/apns.p8" -pubout -out "$work/apns.pub.pem"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/sa.pem" 2>/dev/null
openssl pkey -in "$work/sa.pem" -pubout -out "$work/sa.pub.pem"

"$bin/mock-apns" --port 443 --key "KEY1234567:TEAM123456:$work/apns.pub.pem" --topic com.acme.interop \
  --ca-out "$work/apns-ca.pem" > "$work/apns.log" 2>&1 &
pids+=($!)
"$bin/mock-fcm" --port 0 --project-id acme-interop --client-email interop@acme.iam.gserviceaccount.com \
  --public-key "$work/sa.pub.pem" --ca-out "$work/fcm-ca.pem" > "$work/fcm.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  grep -q listening "$work/apns.log" 2>/dev/null && grep -q listening "$work/fcm.log" 2>/dev/null && break
  sleep 0.1
done
fcm_url=$(sed -n 's/^mock-fcm listening on \([^ ]*\) .*/\1/p' "$work/fcm.log")
python3 - "$work" "$fcm_url" <<'PY'
import json, sys
work, url = sys.argv[1], sys.argv[2]
json.dump({"type": "service_account", "project_id": "acme-interop", "private_key_id": "k1",
           "private_key": open(f"{work}/sa.pem").read(), "client_email": "interop@acme.iam.gserviceaccount.com",
           "token_uri": f"{url}/token"}, open(f"{work}/sa.json", "w"))
PY

status=0
NODE_EXTRA_CA_CERTS="$work/apns-ca.pem" node "$here/apns_check.mjs" KEY1234567 TEAM123456 "$work/apns.p8" com.acme.interop || status=1
REQUESTS_CA_BUNDLE="$work/fcm-ca.pem" python3 "$here/fcm_check.py" "$work/sa.json" "$fcm_url" || status=1
exit $status
