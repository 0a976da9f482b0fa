//! The layers, checked in the sources: the delivery domain depends on nothing
//! of the service, the store on no layer above it, and HTTP types (axum,
//! `ApiError`, `AppState`) stay in `api/`. Files outside `api/` that still use
//! them are listed: the list may only shrink (a file that stops needing them
//! must leave it, a new file may not join it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn relative(path: &Path) -> String {
    path.strip_prefix(src())
        .expect("under src")
        .to_string_lossy()
        .replace('\\', "/")
}

/// Lines of code (comments left out) that mention one of `needles`.
fn mentions(path: &Path, needles: &[&str]) -> bool {
    std::fs::read_to_string(path)
        .expect("readable")
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with("//"))
        .any(|l| needles.iter().any(|n| l.contains(n)))
}

#[test]
fn the_delivery_domain_depends_on_nothing_of_the_service() {
    for path in sources(&src().join("delivery")) {
        let text = std::fs::read_to_string(&path).expect("readable");
        for line in text.lines().filter(|l| l.contains("crate::")) {
            assert!(
                line.contains("crate::delivery"),
                "{} reaches outside the delivery domain: {line}",
                relative(&path)
            );
        }
        assert!(
            !mentions(&path, &["tokio::", "sqlx::", "axum::", "reqwest::"]),
            "{} does I/O",
            relative(&path)
        );
    }
}

#[test]
fn the_store_imports_no_layer_above_it() {
    for path in sources(&src().join("store")) {
        assert!(
            !mentions(
                &path,
                &[
                    "crate::dispatch",
                    "crate::api",
                    "crate::notify",
                    "crate::providers",
                    "AppState"
                ]
            ),
            "{} imports a layer above the store",
            relative(&path)
        );
    }
}

#[test]
fn http_types_stay_in_the_api_layer() {
    // Left to move (issue 17); lib.rs defines AppState, error.rs ApiError.
    let still: BTreeSet<&str> = [
        "audit.rs",
        "auth/dpop.rs",
        "auth/notifier.rs",
        "auth/replay.rs",
        "config.rs",
        "dispatch/attempt.rs",
        "dispatch/mod.rs",
        "dispatch/sweep.rs",
        "dispatch/wake.rs",
        "error.rs",
        "lib.rs",
        "limits.rs",
        "notify/mod.rs",
        "providers/http.rs",
        "telemetry.rs",
    ]
    .into();
    let found: BTreeSet<String> = sources(&src())
        .into_iter()
        .filter(|p| !relative(p).starts_with("api/"))
        .filter(|p| mentions(p, &["axum::", "ApiError", "AppState", "crate::api"]))
        .map(|p| relative(&p))
        .collect();
    let found: BTreeSet<&str> = found.iter().map(String::as_str).collect();
    let joined: Vec<_> = found.difference(&still).collect();
    let left: Vec<_> = still.difference(&found).collect();
    assert!(
        joined.is_empty(),
        "outside api/, these now use axum, ApiError or AppState: {joined:?}"
    );
    assert!(
        left.is_empty(),
        "these no longer do: take them off the list: {left:?}"
    );
}
