#!/usr/bin/env bash
# Property-based API testing of push-service with schemathesis (PyPI):
# requests generated from the live /openapi.json, with valid admin, notifier
# and device (DPoP) credentials, checked for server errors and for responses
# that break the document (status codes, content types, headers, schemas).
#
#   loadtest/schemathesis/run.sh [max-examples-per-operation]   (default 40)
#
# Needs target/release/push-service (built if missing) and Python 3 with venv.
# The service runs on SQLite in a temporary directory, on loopback only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
examples="${1:-40}"
venv="$root/target/schemathesis-venv"
bin="$root/target/release/push-service"

if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
[ -x "$bin" ] || (cd "$root" && cargo build --release --locked -p push-service)

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
admin="schemathesis-admin-token-$(date +%s)"
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Rate limits off: one address drives thousands of requests, and a 429 would
# only measure the limiter (it has its own tests).
PUSH_LISTEN="127.0.0.1:$port" PUSH_PUBLIC_URL="$base" PUSH_DATA_DIR="$work/data" \
PUSH_ADMIN_TOKEN="$admin" PUSH_NOTIFIER_AUDIENCE="schemathesis" PUSH_LOG_LEVEL=error \
PUSH_DISPATCH_WORKERS=2 \
PUSH_RATE_LIMIT_NOTIFIER_REQUESTS_PER_SECOND=0 PUSH_RATE_LIMIT_NOTIFIER_NOTIFICATIONS_PER_SECOND=0 \
PUSH_RATE_LIMIT_APP_NOTIFICATIONS_PER_SECOND=0 PUSH_RATE_LIMIT_DEVICE_REQUESTS_PER_MINUTE=0 \
PUSH_RATE_LIMIT_ADDRESS_REQUESTS_PER_SECOND=0 \
  "$bin" serve > "$work/service.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$base/readyz" > /dev/null 2>&1 && break
  sleep 0.1
done

export PUSH_ST_STATE="$work/state.json"
export PYTHONPATH="$here"
ids="$("$venv/bin/python" "$here/setup.py" "$base" "$PUSH_ST_STATE" "$admin" schemathesis)"
export PUSH_ST_APP="$(echo "$ids" | python3 -c 'import json,sys; print(json.load(sys.stdin)["app"])')"
export PUSH_ST_NOTIFIER="$(echo "$ids" | python3 -c 'import json,sys; print(json.load(sys.stdin)["notifier"])')"
export PUSH_ST_REGISTRATION="$(echo "$ids" | python3 -c 'import json,sys; print(json.load(sys.stdin)["registration"])')"

# The event stream never ends by design (Server-Sent Events), so it is left out;
# its errors are covered by the integration tests.
set +e
SCHEMATHESIS_HOOKS=pushauth "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run \
  "$base/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,ignored_auth \
  --phases examples,coverage,fuzzing \
  --max-examples "$examples" \
  --exclude-path /v1/registrations/{id}/events \
  --seed 20261129 \
  --report junit --report-dir "$root/target/schemathesis-report" \
  --warnings off
status=$?
set -e
errors="$(grep -c '"level":"ERROR"' "$work/service.log" || true)"
metrics="$(curl -fsS "$base/metrics")"
count() { echo "$metrics" | awk -v re="$1" '/^push_http_requests_total/ && $0 ~ re {n += $NF} END {print n + 0}'; }
fivexx="$(count 'status="5')"
[ -n "${PUSH_ST_DEBUG:-}" ] && echo "$metrics" | grep "^push_http_requests_total" | grep "status=\"401" || true
echo "schemathesis: exit $status; the service answered $(count .) requests:" \
  "$(count 'status="2') 2xx, $(count 'status="401') 401, $(count 'status="404') 404," \
  "$(count 'status="4') 4xx in all, $fivexx 5xx; $errors error log lines"
[ "$status" -eq 0 ] && [ "$fivexx" -eq 0 ]
