#!/usr/bin/env python3
"""Fails when one of the builds CI (and README) runs would compile a dependency
again that another build of the same profile already compiled differently.

Cargo settles a dependency's features, and the profile of a crate used both at
compile time (by a derive macro) and at run time, per command, from the
packages and targets that command builds. So `cargo run -p push-service` after
`cargo build -p push-service -p loadtest` may compile a dependency a second
time — and everything above it: sqlx, redis, the service; minutes on two
cores. This compares cargo's unit graphs (what each command would compile,
with features, profile and dependencies), not the builds themselves: it takes
seconds. `--unit-graph` is unstable; RUSTC_BOOTSTRAP lets the stable cargo
print it, as it lets cargo-fuzz pass the sanitizer flags.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Per profile: the reference build, and the others README.md and .ci/run's
# scripts make, each of which must need no dependency the reference did not build.
GROUPS = [
    ("cargo build --release -p push-service -p loadtest --bins", [
        "cargo build --release -p push-service",                 # cargo run --release -p push-service
        "cargo build --release -p push-service -p sdk-client",   # README, jose/interop
    ]),
    ("cargo test --workspace", [
        "cargo build --workspace",                               # the bindings' scripts
        "cargo build --workspace --examples",                    # jose/interop
        "cargo test -p push-service --test it",                  # README, one area at a time
        "cargo test -p push-service",
    ]),
]


def units(command):
    """The dependency units (crates.io packages) `command` would compile, each
    with a key that holds everything cargo tells artifacts apart by."""
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    out = subprocess.run([*command.split(), "--locked", "--unit-graph", "-Z", "unstable-options"],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    graph = json.loads(out)["units"]
    keys = {}

    def key(index):
        if index not in keys:
            unit = graph[index]
            profile = {k: v for k, v in unit["profile"].items() if k != "name"}
            keys[index] = (unit["pkg_id"].rsplit("#", 1)[-1], unit["target"]["name"], unit["mode"],
                           json.dumps(profile, sort_keys=True), tuple(unit["features"]),
                           unit.get("platform"),
                           tuple(sorted(key(d["index"]) for d in unit["dependencies"])))
        return keys[index]

    registry = (key(i) for i, unit in enumerate(graph) if "registry" in unit["pkg_id"])
    return {k[:3] + (hash(k),) for k in registry}


def main():
    failures = []
    for reference, others in GROUPS:
        built = units(reference)
        for command in others:
            again = sorted({u[:3] for u in units(command) - built})
            if again:
                shown = ", ".join(package for package, _, _ in again[:12])
                failures.append(f"`{command}` would compile {len(again)} units `{reference}` "
                                f"built otherwise: {shown}")
    if failures:
        sys.exit("dependencies compiled twice:\n  " + "\n  ".join(failures)
                 + "\n(see README's dependency notes: one feature set per profile)")
    print("every build reuses its profile's dependencies: ok")


if __name__ == "__main__":
    main()
