#!/usr/bin/env python3
"""Runs deploy/compose.yaml's processes without a Docker engine: the same
binaries (the release build), the same commands and environment the file gives
each service (the image's ENV under it), started in the order its depends_on
conditions say, gated on the same health checks. Only what a container network
provides is mapped: service host names and ports to 127.0.0.1 and free ports,
volumes to folders, PostgreSQL to a fresh database on the machine's server and
Redis to the machine's server under a key prefix of its own.

Checks: the simulators become healthy; push-1 generates the admin token and
master key into the shared data volume and push-2 (started after push-1 is
healthy) uses them; both nodes pass the image's HEALTHCHECK; the simulators'
APNs key and FCM service account upload as README says; every service stops on
SIGTERM within 10 s; the published ports bind 127.0.0.1 only.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
PG_ADMIN = os.environ.get("PUSH_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_env(dockerfile, target):
    """The ENV lines of one Dockerfile stage."""
    env, stage = {}, None
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"FROM \S+ AS (\S+)", line)
        if m:
            stage = m.group(1)
        elif line.startswith("ENV ") and stage == target:
            for key, value in re.findall(r"(\w+)=(\S+)", line[4:]):
                env[key] = value
    return env


def wait(what, check, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    sys.exit(f"compose check: {what} not within {seconds} s")


def main():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    for name in ("push-1", "push-2"):
        for port in services[name].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
    work = pathlib.Path(tempfile.mkdtemp(prefix="compose-check-"))
    database = f"compose{os.getpid()}"
    admin_url = PG_ADMIN.rsplit("/", 1)[0]
    subprocess.run(["psql", PG_ADMIN, "-qc", f"CREATE DATABASE {database}"], check=True)
    ports = {"mock-apns": free_port(), "mock-fcm": free_port(), "push-1": free_port(), "push-2": free_port()}
    rewrites = [
        ("postgres://push:push@postgres:5432/push", f"{admin_url}/{database}"),
        ("redis://redis:6379", "redis://127.0.0.1:6379"),
        ("mock-apns:2197", f"127.0.0.1:{ports['mock-apns']}"),
        ("mock-fcm:4443", f"127.0.0.1:{ports['mock-fcm']}"),
        ("localhost:8081", f"127.0.0.1:{ports['push-1']}"),
        ("localhost:8082", f"127.0.0.1:{ports['push-2']}"),
        ("/keys", str(work / "keys")),
        ("/var/lib/push-service", str(work / "data")),
    ]
    (work / "keys").mkdir()
    (work / "data").mkdir()

    def mapped(value):
        value = str(value)
        for old, new in rewrites:
            value = value.replace(old, new)
        return value

    def environment(name):
        env = {"PATH": os.environ.get("PATH", "")}
        if name.startswith("push-"):
            env.update(image_env(ROOT / "deploy" / "Dockerfile", "push-service"))
            env["PUSH_LISTEN"] = f"127.0.0.1:{ports[name]}"  # the container's 0.0.0.0:8080
            env["PUSH_REDIS_KEY_PREFIX"] = f"compose{os.getpid()}:"
        for key, value in (services[name].get("environment") or {}).items():
            env[key] = mapped(value)
        return env

    children = {}

    def start(name):
        service = services[name]
        if name.startswith("push-"):
            argv = [str(RELEASE / "push-service"), "serve"]
        else:
            argv = [mapped(a) for a in service["command"]]
            argv[0] = str(RELEASE / argv[0])
            i = argv.index("--port")
            argv[i + 1] = str(ports[name])
        log = open(work / f"{name}.log", "w")
        children[name] = subprocess.Popen(argv, env=environment(name), cwd=work, stdout=log, stderr=log)

    def healthy(name):
        test = services[name].get("healthcheck", {}).get("test")
        if name.startswith("push-"):
            # The image's HEALTHCHECK: `push-service health` with the service's environment.
            return subprocess.run([str(RELEASE / "push-service"), "health"], env=environment(name)).returncode == 0
        return subprocess.run([mapped(a) for a in test[1:]]).returncode == 0

    try:
        order = ["mock-apns", "mock-fcm", "push-1", "push-2"]
        for name in order:
            for dep, rule in (services[name].get("depends_on") or {}).items():
                if dep in children and rule.get("condition") == "service_healthy":
                    wait(f"{dep} healthy (for {name})", lambda dep=dep: healthy(dep))
            start(name)
        for name in order:
            wait(f"{name} healthy", lambda name=name: healthy(name))
        token_file = work / "data" / "admin.token"
        assert token_file.exists(), "push-1 generated the admin token"
        token = token_file.read_text().strip()
        for name in ("push-1", "push-2"):
            request = urllib.request.Request(
                f"http://127.0.0.1:{ports[name]}/v1/apps", headers={"Authorization": f"Bearer {token}"})
            assert urllib.request.urlopen(request, timeout=5).status == 200, name

        def call(method, path, body):
            request = urllib.request.Request(
                f"http://127.0.0.1:{ports['push-1']}{path}", method=method, data=json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)

        app = call("POST", "/v1/apps", {"name": "compose"})["id"]
        call("PUT", f"/v1/apps/{app}/credentials/apns", {
            "auth": "token", "team_id": "TEAM123456", "key_id": "KEY1234567",
            "private_key": (work / "keys" / "apns-key.p8").read_text(),
            "topic": "com.example.app", "environment": "production"})
        call("PUT", f"/v1/apps/{app}/credentials/fcm", {
            "service_account": json.loads((work / "keys" / "service-account.json").read_text())})
        print("compose check: both nodes healthy on the generated secrets; simulator credentials accepted")
        for name in reversed(order):
            children[name].send_signal(signal.SIGTERM)
            try:
                code = children[name].wait(timeout=10)
            except subprocess.TimeoutExpired:
                sys.exit(f"compose check: {name} did not stop on SIGTERM within 10 s")
            assert code == 0, f"{name} exited {code} on SIGTERM"
        print("compose check: every service stopped on SIGTERM")
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
        subprocess.run(["psql", PG_ADMIN, "-qc", f"DROP DATABASE IF EXISTS {database}"], check=False)


if __name__ == "__main__":
    main()
