#!/usr/bin/env python3
"""Fails when two of the builds CI (and README) run would compile a shared dependency
with different features.

Cargo resolves features per invocation, for the packages it was asked for: when
`cargo build -p a` turns on fewer features of a dependency than
`cargo build -p a -p b` did, the dependency and everything above it is compiled
again, as a second artifact. On two cores that is minutes per extra feature
set. The selections below are those of README.md and the scripts .ci/run
calls; each must resolve every shared dependency exactly as the reference
selection of its profile does.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = ("push-service ", "push-jose ", "push-client-ffi ", "sdk-client ", "loadtest ")

# (reference, others that must match it), with the dependency kinds each build uses.
GROUPS = [
    # Release: README's build, the Dockerfile's, deploy/validate.sh, the interop checks.
    (("-p push-service -p loadtest", "normal,build"),
     [("-p push-service", "normal,build"),              # cargo run --release -p push-service
      ("-p push-service -p sdk-client", "normal,build")]),  # README, jose/interop
    # Debug: README's test command, and the bindings' and jose's scripts.
    (("--workspace", "normal,build,dev"),
     [("--workspace", "normal,build"),                  # the bindings' scripts
      ("-p push-service", "normal,build,dev")]),        # what `cargo test -p push-service` would build
]


def feature_sets(selection, edges):
    out = subprocess.run(
        ["cargo", "tree", "-q", "--locked", "-e", edges, "--prefix", "none", "-f", "{p}|{f}",
         *selection.split()],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    sets = set()
    for line in out.splitlines():
        line = line.replace(" (*)", "").strip()
        if "|" in line and not line.startswith(MEMBERS):
            sets.add(tuple(line.split("|", 1)))
    return sets


def main():
    failures = []
    for (ref_selection, ref_edges), others in GROUPS:
        reference = feature_sets(ref_selection, ref_edges)
        for selection, edges in others:
            extra = sorted(feature_sets(selection, edges) - reference)
            if extra:
                shown = "\n    ".join(f"{package}: [{features}]" for package, features in extra[:10])
                failures.append(f"`{selection}` ({edges}) builds, unlike `{ref_selection}`:\n    {shown}")
    if failures:
        sys.exit("dependencies compiled twice with different features:\n  " + "\n  ".join(failures)
                 + "\nname the missing features in the package's own [dependencies] "
                 "(see push-service/Cargo.toml)")
    print("one feature set per profile: ok")


if __name__ == "__main__":
    main()
