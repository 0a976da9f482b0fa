#!/usr/bin/env python3
"""Runs every ```sh block of README.md, verbatim, twice in a row in a fresh folder.

The fresh folder is a copy of the repository's tracked files
(target/readme-check/tree) whose `target/` and `fuzz/target/` are the
repository's own, so what is built once is not built again. A comment on the line
before a block says how it runs (README.md, "The README runs as written"):

  server=PORT [scheme=https]  the block serves until stopped: it is ready when
                              /readyz on 127.0.0.1:PORT answers 200, then stopped
  name=NAME                   a server block other blocks can run `with`
  with=NAME                   that server block runs while this one does
  session=NAME                blocks sharing one shell, in README order
  env=K=V                     an environment variable for the block
  files=a,b                   stand-ins for files a reader brings (made by openssl)
  tools=cluster-dry-run       kubectl create → --dry-run=client, helm install →
                              helm template checked by kubernetes-validate
  once                        run once, not twice (the test suite: a second run
                              meets nothing the first left, and costs minutes)

The copy shares `target/`, so what cargo built in the checkout is reused (same
sources, same fingerprints); after editing the checkout, the copy is made again
at the next run.

A block without a comment runs as is. Every run must exit 0; a server must
become ready. Fails when a block fails, or on a shell fence not marked `sh`.
"""

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "target" / "readme-check" / "tree"
SHIMS = ROOT / "target" / "readme-check" / "shims"
READY_TIMEOUT = 1800  # the first server block runs the test suite first
RUN_TIMEOUT = 2400
OTHER_SHELLS = {"bash", "shell", "console", "zsh", "shell-session"}


@dataclass
class Block:
    line: int
    body: str
    options: dict


@dataclass
class Unit:
    blocks: list
    server: str | None = None
    scheme: str = "http"
    with_: str | None = None
    env: dict = field(default_factory=dict)
    files: list = field(default_factory=list)
    tools: list = field(default_factory=list)
    once: bool = False

    @property
    def line(self):
        return self.blocks[0].line

    def script(self):
        return "\n".join(b.body for b in self.blocks)

    def describe(self):
        kind = f"server :{self.server}" if self.server else "run"
        extra = [f"with {self.with_}"] if self.with_ else []
        extra += [f"{k}={v}" for k, v in self.env.items()]
        extra += [f"files {','.join(self.files)}"] if self.files else []
        extra += self.tools
        extra += ["once"] if self.once else []
        lines = ",".join(str(b.line) for b in self.blocks)
        return f"README lines {lines}: {kind}" + (f" ({'; '.join(extra)})" if extra else "")


def parse(text):
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = lines[i].strip()
        if fence.startswith("```") and fence[3:] in OTHER_SHELLS:
            sys.exit(f"README.md:{i + 1}: shell blocks are fenced ```sh (the check runs those)")
        if fence != "```sh":
            if fence.startswith("```"):  # skip other fenced blocks whole
                i += 1
                while i < len(lines) and lines[i].strip() != "```":
                    i += 1
            i += 1
            continue
        end = i + 1
        while lines[end].strip() != "```":
            end += 1
        prev = i - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        options = {"env": [], "files": [], "tools": []}
        found = re.fullmatch(r"<!-- check: (.*) -->", lines[prev].strip()) if prev >= 0 else None
        if found:
            for token in shlex.split(found.group(1)):
                key, _, value = token.partition("=")
                if token == "once":
                    options["once"] = True
                elif key in ("env", "files", "tools"):
                    options[key] += [value] if key == "env" else value.split(",")
                elif key in ("server", "scheme", "name", "with", "session"):
                    options[key] = value
                else:
                    sys.exit(f"README.md:{prev + 1}: unknown check option `{key}`")
        blocks.append(Block(i + 1, "\n".join(lines[i + 1:end]), options))
        i = end + 1
    return blocks


def units_of(blocks):
    units, sessions, named = [], {}, {}
    for block in blocks:
        o = block.options
        session = o.get("session")
        if session and session in sessions:
            unit = sessions[session]
            unit.blocks.append(block)
        else:
            unit = Unit(blocks=[block], server=o.get("server"), scheme=o.get("scheme", "http"),
                        with_=o.get("with"))
            units.append(unit)
            if session:
                sessions[session] = unit
        for pair in o["env"]:
            key, _, value = pair.partition("=")
            unit.env[key] = value
        unit.files += [f for f in o["files"] if f not in unit.files]
        unit.tools += [t for t in o["tools"] if t not in unit.tools]
        unit.once = unit.once or o.get("once", False)
        if "name" in o:
            named[o["name"]] = unit
        if unit.server and len(unit.blocks) > 1:
            sys.exit(f"README.md:{block.line}: a server block cannot be part of a session")
    for unit in units:
        if unit.with_ and unit.with_ not in named:
            sys.exit(f"README.md:{unit.line}: with={unit.with_}: no block is named that")
    return units, named


def fresh_tree():
    if TREE.exists():
        shutil.rmtree(TREE)
    TREE.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            target = TREE / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)  # mtimes kept: cargo's fingerprints hold
    (ROOT / "fuzz" / "target").mkdir(parents=True, exist_ok=True)
    (TREE / "target").symlink_to(ROOT / "target")
    (TREE / "fuzz" / "target").symlink_to(ROOT / "fuzz" / "target")


def openssl(*args):
    subprocess.run(["openssl", *args], cwd=TREE, check=True, capture_output=True)


def self_signed(name, subject, sans):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "30", "-subj", subject,
            "-addext", f"subjectAltName={sans}")


STAND_INS = {"push.p12", "p12.crt", "p12.key", "tls.crt", "tls.key", "auth.crt", "auth.key"}


def unignored_leftovers():
    """What the blocks wrote into the folder that .gitignore does not cover: run
    in a checkout, it would show up in `git status`."""
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, text=True,
                                 capture_output=True).stdout.splitlines())
    written = []
    for path in TREE.rglob("*"):
        relative = path.relative_to(TREE).as_posix()
        top = relative.split("/")[0]
        if relative in ("target", "fuzz/target") or relative.startswith(("target/", "fuzz/target/")):
            continue
        if path.is_file() and not path.is_symlink() and relative not in tracked \
                and top not in STAND_INS:
            written.append(relative)
    if not written:
        return []
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT,
                             input="\n".join(written), text=True, capture_output=True).stdout
    return sorted(set(written) - set(ignored.splitlines()))


def make_files(unit, env):
    """Stand-ins for what a reader brings (Apple's .p12, a TLS certificate, an
    auth server's client certificate); made once, kept for the second run."""
    for kind in unit.files:
        if kind == "p12":
            if not (TREE / "push.p12").exists():
                openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "p12.key",
                        "-out", "p12.crt", "-days", "30",
                        "-subj", "/UID=com.acme.auth/CN=Apple Push Services: com.acme.auth")
                openssl("pkcs12", "-export", "-inkey", "p12.key", "-in", "p12.crt",
                        "-out", "push.p12", "-passout", f"pass:{env['P12_PASSWORD']}")
        elif kind == "tls":
            if not (TREE / "tls.crt").exists():
                self_signed("tls", "/CN=push.example.com", "DNS:push.example.com,IP:127.0.0.1")
        elif kind == "auth-cert":
            if not (TREE / "auth.crt").exists():
                self_signed("auth", "/CN=auth.acme.example", "DNS:auth.acme.example")
        else:
            sys.exit(f"README.md:{unit.line}: unknown files kind `{kind}`")


def make_shims():
    """No cluster here: kubectl and helm as client-side dry runs of the real tools."""
    helm = ROOT / "target" / "deploy-tools" / "helm"
    kubectl = shutil.which("kubectl") or str(ROOT / "target" / "deploy-tools" / "kubectl")
    if not helm.exists() or not Path(kubectl).exists() or not shutil.which("kubernetes-validate"):
        sys.exit("tools=cluster-dry-run needs helm, kubectl and kubernetes-validate: "
                 "run deploy/validate.sh first (it fetches them)")
    SHIMS.mkdir(parents=True, exist_ok=True)
    (SHIMS / "kubectl").write_text(
        "#!/bin/sh\n# README check: no cluster, `kubectl create` as a client-side dry run.\n"
        f'[ "$1" = create ] || {{ echo "kubectl $1: no cluster in the README check" >&2; exit 1; }}\n'
        f'exec {kubectl} "$@" --dry-run=client -o yaml\n')
    (SHIMS / "helm").write_text(
        "#!/bin/sh\n# README check: no cluster, `helm install` rendered and validated.\n"
        f'[ "$1" = install ] || exec {helm} "$@"\n'
        'shift; out=$(mktemp)\n'
        f'{helm} template "$@" > "$out" && kubernetes-validate --strict --quiet -k 1.37.0 "$out"\n'
        'rc=$?; rm -f "$out"; exit $rc\n')
    for tool in ("kubectl", "helm"):
        (SHIMS / tool).chmod(0o755)


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", int(port))) != 0


# Lines worth repeating when a block fails: CI keeps only the end of the log, and a
# long block (the test suite, then the fuzz targets) pushes its failure out of it.
NOTABLE = re.compile(rb"panicked at|^---- .* ----$|^test .* FAILED$|^failures:|test result: FAILED"
                     rb"|^error(\[|:)|^thread '.*' panicked")
KEPT = 80


def start(script, env):
    """The block's output goes to ours as it comes; its notable lines are kept."""
    process = subprocess.Popen(["bash", "-c", "set -eo pipefail\n" + script], cwd=TREE, env=env,
                               start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    process.notable = []

    def copy():
        for line in process.stdout:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
            if NOTABLE.search(line.strip()) and len(process.notable) < KEPT:
                process.notable.append(line.decode(errors="replace").rstrip())

    process.copier = threading.Thread(target=copy, daemon=True)
    process.copier.start()
    return process


def failure(message, process):
    """The message, with what the block printed about its failure."""
    process.copier.join(timeout=5)  # the block has ended: its last lines are on their way
    if not process.notable:
        return message
    return message + "\n    " + "\n    ".join(process.notable)


def stop(process):
    """The block's whole process group: background jobs (`&`) included."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline:
            process.poll()  # reap the shell: a zombie leader keeps its group alive
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def serve(unit, env):
    if not port_free(unit.server):
        raise RuntimeError(f"port {unit.server} is in use before README line {unit.line} starts")
    process = start(unit.script(), env)
    url = f"{unit.scheme}://127.0.0.1:{unit.server}/readyz"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a probe, like the kubelet's
    deadline = time.time() + READY_TIMEOUT
    while time.time() < deadline:
        if process.poll() is not None:
            stop(process)
            raise RuntimeError(failure(f"README line {unit.line} exited ({process.returncode}) "
                                       f"before {url} was ready", process))
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                if response.status == 200:
                    return process
        except OSError:
            pass
        time.sleep(1)
    stop(process)
    raise RuntimeError(failure(f"README line {unit.line}: {url} not ready within {READY_TIMEOUT} s",
                               process))


def run(unit, named, round_, rounds):
    print(f"\n==== {unit.describe()} — run {round_} of {rounds}", flush=True)
    env = dict(os.environ)
    env.update(unit.env)
    if "cluster-dry-run" in unit.tools:
        make_shims()
        env["PATH"] = f"{SHIMS}:{env['PATH']}"
    make_files(unit, env)
    started = time.time()
    if unit.server:
        stop(serve(unit, env))
    else:
        helper = None
        if unit.with_:
            server = named[unit.with_]
            helper_env = dict(os.environ)
            helper_env.update(server.env)
            make_files(server, helper_env)
            helper = serve(server, helper_env)
        try:
            process = start(unit.script(), env)
            try:
                code = process.wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                code = "timeout"
            stop(process)
        finally:
            if helper:
                stop(helper)
        if code != 0:
            raise RuntimeError(failure(f"README line {unit.line}: exit {code}", process))
    print(f"==== README line {unit.line}: ok in {time.time() - started:.0f} s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="show the units and exit")
    parser.add_argument("--only", type=int, action="append",
                        help="run only the unit starting at this README line (repeatable)")
    args = parser.parse_args()
    units, named = units_of(parse((ROOT / "README.md").read_text()))
    if args.list:
        for unit in units:
            print(unit.describe())
        return
    chosen = [u for u in units if not args.only or u.line in args.only]
    fresh_tree()
    failed = []
    for unit in chosen:
        rounds = 1 if unit.once else 2
        for round_ in range(1, rounds + 1):
            try:
                run(unit, named, round_, rounds)
            except RuntimeError as error:
                print(f"==== FAILED: {error}", flush=True)
                failed.append(str(error))
                break
    leftovers = unignored_leftovers()
    if leftovers:
        failed.append("written by README commands but not in .gitignore: " + ", ".join(leftovers))
    if failed:
        sys.exit("README blocks failed:\n  " + "\n  ".join(failed))
    print(f"\nREADME: {len(chosen)} units ({sum(len(u.blocks) for u in chosen)} blocks), "
          "each run twice (once where marked) in a fresh folder: all passed")


if __name__ == "__main__":
    main()
