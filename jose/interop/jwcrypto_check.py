"""Interoperability of push-jose with jwcrypto, both ways, for each key type.

    jwcrypto_check.py <jwe-tool>            live check (run.sh)
    jwcrypto_check.py --vectors <out.json>  writes the fixed vectors the Rust
                                            tests open (jose/tests/vectors.json)

<jwe-tool> is push-jose's example program: `seal <public-jwk-file>` and
`open <private-jwk-file>`, plaintext and JWE on stdin/stdout.
"""
import json
import os
import subprocess
import sys
import tempfile

from jwcrypto import jwe, jwk

KEYS = {
    "RSA-2048": lambda: jwk.JWK.generate(kty="RSA", size=2048),
    "RSA-4096": lambda: jwk.JWK.generate(kty="RSA", size=4096),
    "P-256": lambda: jwk.JWK.generate(kty="EC", crv="P-256"),
    "X25519": lambda: jwk.JWK.generate(kty="OKP", crv="X25519"),
}


def alg_of(key):
    return "RSA-OAEP-256" if key["kty"] == "RSA" else "ECDH-ES+A256KW"


def seal(key, plaintext):
    header = {"alg": alg_of(key), "enc": "A256GCM", "kid": key.thumbprint()}
    token = jwe.JWE(plaintext, protected=json.dumps(header))
    token.add_recipient(key)
    return token.serialize(compact=True)


def unseal(key, compact):
    token = jwe.JWE(algs=["RSA-OAEP-256", "ECDH-ES+A256KW", "A256GCM"])
    token.deserialize(compact, key=key)
    return token.payload


def vectors(out):
    plaintext = b'{"media_type":"application/json","data":"interop \xe2\x9c\x93"}'
    entries = []
    for name, make in KEYS.items():
        key = make()
        entries.append({
            "key": name,
            "private_jwk": json.loads(key.export_private()),
            "jwe": seal(key, plaintext),
            "plaintext": plaintext.decode(),
        })
    with open(out, "w") as f:
        json.dump({"made_by": "jwcrypto 1.6.1", "vectors": entries}, f, indent=1)
        f.write("\n")


def live(tool):
    plaintext = os.urandom(3000) + b"interop-marker" + os.urandom(70000)
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in KEYS.items():
            key = make()
            public, private = os.path.join(tmp, "public.jwk"), os.path.join(tmp, "private.jwk")
            with open(public, "w") as f:
                f.write(key.export_public())
            with open(private, "w") as f:
                f.write(key.export_private())
            # push-jose seals, jwcrypto opens.
            sealed = subprocess.run([tool, "seal", public], input=plaintext,
                                    capture_output=True, check=True).stdout.decode().strip()
            assert unseal(key, sealed) == plaintext, f"{name}: jwcrypto read another plaintext"
            # jwcrypto seals, push-jose opens.
            opened = subprocess.run([tool, "open", private], input=seal(key, plaintext).encode(),
                                    capture_output=True, check=True).stdout
            assert opened == plaintext, f"{name}: push-jose read another plaintext"
            # jwcrypto seals to another key: push-jose refuses.
            other = make()
            refused = subprocess.run([tool, "open", private], input=seal(other, plaintext).encode(),
                                     capture_output=True)
            assert refused.returncode != 0, f"{name}: a JWE for another key opened"
            print(f"{name}: push-jose -> jwcrypto ok, jwcrypto -> push-jose ok, other key refused")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--vectors"]:
        vectors(sys.argv[2])
    else:
        live(sys.argv[1])
