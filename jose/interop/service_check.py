"""The service and its client module against jwcrypto, end to end:

1. the service seals plaintext content to a device's registered key; jwcrypto,
   given the device's private key, opens what the inbox returns;
2. jwcrypto seals content end to end to the key the registration shows the
   auth server; the service stores it, and push-client (sdk-client) opens it.

For an RSA-2048 key (RSA-OAEP-256) and a P-256 key (ECDH-ES+A256KW).

    service_check.py <target/release>
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from jwcrypto import jwe, jwk


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(method, url, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def run(*args):
    return subprocess.run(args, capture_output=True, check=True, text=True).stdout


def main(bin_dir):
    service, client = os.path.join(bin_dir, "push-service"), os.path.join(bin_dir, "push-client")
    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        admin = "jose-interop-admin-token-0123"
        env = dict(os.environ, PUSH_LISTEN=f"127.0.0.1:{port}", PUSH_PUBLIC_URL=base,
                   PUSH_DATA_DIR=os.path.join(work, "data"), PUSH_ADMIN_TOKEN=admin,
                   PUSH_NOTIFIER_AUDIENCE=base, PUSH_LOG_LEVEL="error")
        node = subprocess.Popen([service, "serve"], env=env, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(work, "service.log"), "w"))
        try:
            for _ in range(300):
                try:
                    http("GET", f"{base}/readyz")
                    break
                except OSError:
                    time.sleep(0.1)
            app = http("POST", f"{base}/v1/apps", admin, {"name": "interop"})["id"]
            notifier_key = os.path.join(work, "notifier.pem")
            jwks = json.loads(run(service, "notifier-key", "--out", notifier_key, "--kid", "k1"))
            notifier = http("POST", f"{base}/v1/apps/{app}/notifiers", admin,
                            {"name": "auth", "jwks": jwks, "scopes": ["notify", "registrations:read"]})["id"]

            def token(scope="notify"):
                return run(service, "token", "--key", notifier_key, "--notifier", notifier,
                           "--kid", "k1", "--audience", base, "--scope", scope).strip()

            for kind in ["rsa2048", "p256"]:
                device_key = os.path.join(work, f"device-{kind}.pem")
                enc_key = os.path.join(work, f"encryption-{kind}.jwk")
                run(client, "keygen", "--out", device_key, "--kind", "p256")
                run(client, "encryption-keygen", "--out", enc_key, "--kind", kind)
                conn = ["--server", base, "--key", device_key]
                reg = json.loads(run(client, "register", *conn, "--app", app, "--provider", "direct",
                                     "--platform", "linux", "--encryption-key", enc_key))["id"]
                private = jwk.JWK.from_json(open(enc_key).read())

                # 1. The service seals; jwcrypto opens.
                data = {"request": "sign", "marker": f"interop-{kind}"}
                item = http("POST", f"{base}/v1/apps/{app}/notifications", token(),
                            {"targets": {"registrations": [reg]},
                             "content": {"media_type": "application/json", "data": data}})["id"]
                sealed = json.loads(run(client, "inbox", "fetch", *conn, "--id", reg, "--item", item,
                                        "--jwe"))["jwe"]
                token_ = jwe.JWE(algs=["RSA-OAEP-256", "ECDH-ES+A256KW", "A256GCM"])
                token_.deserialize(sealed, key=private)
                opened = json.loads(token_.payload)
                assert opened == {"media_type": "application/json", "data": data}, opened
                expected_alg = "RSA-OAEP-256" if kind.startswith("rsa") else "ECDH-ES+A256KW"
                assert token_.jose_header["alg"] == expected_alg, token_.jose_header

                # 2. jwcrypto seals end to end to the key the auth server reads; push-client opens.
                registration = http("GET", f"{base}/v1/apps/{app}/registrations/{reg}",
                                    token("registrations:read"))
                public = jwk.JWK(**registration["encryption_key"])
                assert public.thumbprint() == registration["encryption_key_thumbprint"]
                secret = {"challenge": f"only the device reads this ({kind})"}
                e2e = jwe.JWE(json.dumps(secret).encode(), protected=json.dumps(
                    {"alg": expected_alg, "enc": "A256GCM", "kid": public.thumbprint(),
                     "cty": "application/json"}))
                e2e.add_recipient(public)
                item = http("POST", f"{base}/v1/apps/{app}/notifications", token(),
                            {"targets": {"registrations": [reg]},
                             "content": {"sealed": {reg: e2e.serialize(compact=True)}}})["id"]
                fetched = json.loads(run(client, "inbox", "fetch", *conn, "--id", reg, "--item", item,
                                         "--encryption-key", enc_key, "--out", work))
                assert fetched["data"] == secret, fetched
                print(f"{expected_alg} ({kind}): service-sealed opened by jwcrypto, "
                      "jwcrypto-sealed opened by push-client")
        finally:
            node.terminate()
            node.wait(timeout=30)


if __name__ == "__main__":
    main(sys.argv[1])
