"""Credentials for schemathesis runs against push-service.

Every operation gets what its OpenAPI `security` names: the admin token, a
fresh notifier JWT (its `jti` is single-use, so one per request), or a fresh
DPoP proof for the request's method and URL. `setup.py` wrote the identities
this uses to $PUSH_ST_STATE.
"""

import base64
import hashlib
import json
import os
import time
import uuid

import schemathesis
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

with open(os.environ["PUSH_ST_STATE"], encoding="utf-8") as f:
    STATE = json.load(f)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    return serialization.load_pem_private_key(pem.encode(), password=None)


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64u(numbers.x.to_bytes(32, "big")),
        "y": b64u(numbers.y.to_bytes(32, "big")),
    }


def sign_es256(key: ec.EllipticCurvePrivateKey, header: dict, claims: dict) -> str:
    signing_input = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


NOTIFIER_KEY = load_key(STATE["notifier_key_pem"])
DEVICE_KEY = load_key(STATE["device_key_pem"])


def notifier_jwt() -> str:
    now = int(time.time())
    return sign_es256(
        NOTIFIER_KEY,
        {"alg": "ES256", "typ": "JWT", "kid": STATE["notifier_kid"]},
        {
            "iss": STATE["notifier_id"],
            "aud": STATE["audience"],
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
            "scope": "notify registrations:read registrations:delete",
        },
    )


def dpop(method: str, url: str) -> str:
    return sign_es256(
        DEVICE_KEY,
        {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(DEVICE_KEY)},
        {"htm": method, "htu": url, "iat": int(time.time()), "jti": uuid.uuid4().hex},
    )


def kinds(case) -> set:
    security = case.operation.definition.raw.get("security") or []
    return {name for requirement in security for name in requirement}


@schemathesis.auth(refresh_interval=None)
class PushAuth:
    def get(self, case, ctx):
        return True

    def set(self, case, data, ctx):
        case.headers = dict(case.headers or {})
        wanted = kinds(case)
        if "admin_token" in wanted:
            case.headers["Authorization"] = "Bearer " + STATE["admin_token"]
        elif "notifier_jwt" in wanted:
            case.headers["Authorization"] = "Bearer " + notifier_jwt()
        elif "dpop" in wanted:
            url = STATE["public_url"].rstrip("/") + case.formatted_path
            case.headers["DPoP"] = dpop(case.method.upper(), url)


def thumbprint(jwk: dict) -> str:
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return b64u(hashlib.sha256(canonical.encode()).digest())
