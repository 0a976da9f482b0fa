//! The documentation links only inside the repository, to files that exist.

use std::path::{Path, PathBuf};

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    for dir in ["docs", "helm/push-service"] {
        let mut stack = vec![root.join(dir)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("readable folder").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "md") {
                    files.push(path);
                }
            }
        }
    }
    files
}

/// Targets of `[text](target)` links.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(rest[..end].trim().to_owned());
        }
    }
    targets
}

#[test]
fn every_link_stays_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .canonicalize()
        .expect("root");
    let mut checked = 0;
    for file in markdown_files(&root) {
        let text = std::fs::read_to_string(&file).expect("readable");
        for target in link_targets(&text) {
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() {
                continue; // an anchor in the same page
            }
            assert!(
                !path.contains("://") && !path.starts_with("mailto:") && !path.starts_with('/'),
                "{}: `{target}` points outside the repository",
                file.display()
            );
            let resolved = file
                .parent()
                .expect("folder")
                .join(path)
                .canonicalize()
                .unwrap_or_else(|_| panic!("{}: `{target}` does not exist", file.display()));
            assert!(
                resolved.starts_with(&root),
                "{}: `{target}` leaves the repository",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 5, "links were found and checked ({checked})");
}
