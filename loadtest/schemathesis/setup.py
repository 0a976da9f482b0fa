"""Creates what a schemathesis run needs on a fresh push-service: an app, a
notifier (P-256 key), a device registration (DPoP) and a second notifier to
delete; writes their ids and keys to the state file given as argv[2]."""

import json
import sys
import urllib.request

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

base, state_path, admin_token, audience = sys.argv[1:5]


def pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def call(method, path, body=None, headers=None):
    request = urllib.request.Request(
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"null")


admin = {"Authorization": "Bearer " + admin_token}
notifier_key = ec.generate_private_key(ec.SECP256R1())
device_key = ec.generate_private_key(ec.SECP256R1())
state = {
    "admin_token": admin_token,
    "audience": audience,
    "public_url": base,
    "notifier_kid": "st-1",
    "notifier_key_pem": pem(notifier_key),
    "device_key_pem": pem(device_key),
}
with open(state_path, "w", encoding="utf-8") as f:
    json.dump(state, f)

import pushauth  # noqa: E402  (reads the state written above)

app = call("POST", "/v1/apps", {"name": "schemathesis"}, admin)["id"]
jwk = {**pushauth.public_jwk(notifier_key), "kid": "st-1", "alg": "ES256"}
notifier = call(
    "POST",
    f"/v1/apps/{app}/notifiers",
    {"name": "st", "jwks": {"keys": [jwk]},
     "scopes": ["notify", "registrations:read", "registrations:delete"]},
    admin,
)["id"]
path = f"/v1/apps/{app}/registrations"
registration = call(
    "POST",
    path,
    {"provider": "direct", "platform": "linux"},
    {"DPoP": pushauth.dpop("POST", base + path)},
)["id"]
state.update({"app": app, "notifier_id": notifier, "registration": registration})
with open(state_path, "w", encoding="utf-8") as f:
    json.dump(state, f)
print(json.dumps({"app": app, "notifier": notifier, "registration": registration}))
