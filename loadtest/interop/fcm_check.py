"""Google's own auth library (google-auth) against mock-fcm: the JWT-bearer grant
and messages:send. Usage: REQUESTS_CA_BUNDLE=ca.pem python3 fcm_check.py sa.json URL"""
import json
import sys

from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2 import service_account

info = json.load(open(sys.argv[1]))
base = sys.argv[2]
failures = 0


def check(name, ok, detail=""):
    global failures
    print(f"{'ok  ' if ok else 'FAIL'} google-auth: {name}{f' ({detail})' if detail else ''}")
    failures += 0 if ok else 1


creds = service_account.Credentials.from_service_account_info(
    info, scopes=["https://www.googleapis.com/auth/firebase.messaging"]
)
creds.refresh(Request())
check("the service-account grant yields an access token", bool(creds.token), creds.token[:12])
session = AuthorizedSession(creds)
url = f"{base}/v1/projects/{info['project_id']}/messages:send"
ok = session.post(url, json={"message": {"token": "device-token-interop", "notification": {"title": "interop"}}})
check("a valid message is accepted", ok.status_code == 200 and "name" in ok.json(), ok.text[:80])
bad = session.post(url, json={"message": {"token": "device-token-interop", "data": {"n": 1}}})
body = bad.json().get("error", {})
check("a non-string data value is refused as INVALID_ARGUMENT", bad.status_code == 400 and body.get("status") == "INVALID_ARGUMENT", bad.text[:80])
gone = session.post(url, json={"message": {"token": "unregistered-interop-token"}})
codes = [d.get("errorCode") for d in gone.json().get("error", {}).get("details", [])]
check("an unregistered token is 404 UNREGISTERED", gone.status_code == 404 and "UNREGISTERED" in codes, gone.text[:80])
sys.exit(1 if failures else 0)
