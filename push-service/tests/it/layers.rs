//! The layers, checked in the sources: the delivery domain depends on nothing
//! of the service, the store on no layer above it, HTTP types (axum,
//! `ApiError`, `AppState`) stay in `api/`, and no two modules import each
//! other, directly or around a circle.

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
    let found: Vec<String> = sources(&src())
        .into_iter()
        .filter(|p| !relative(p).starts_with("api/"))
        .filter(|p| mentions(p, &["axum::", "ApiError", "AppState", "crate::api"]))
        .map(|p| relative(&p))
        .collect();
    assert!(
        found.is_empty(),
        "outside api/, these use axum, ApiError or AppState: {found:?}"
    );
}

/// The top-level module a source file belongs to (`dispatch` for
/// `dispatch/wake.rs`, `config` for `config.rs`); none for the crate roots
/// and for test-only files (`tests.rs`, `testing.rs`), which are not built
/// into the service.
fn module_of(path: &Path) -> Option<String> {
    let rel = relative(path);
    if path
        .file_name()
        .is_some_and(|n| n == "tests.rs" || n == "testing.rs")
    {
        return None;
    }
    let first = rel.split('/').next().unwrap_or_default();
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The top-level modules a file names as `crate::<module>`, outside comments.
fn imports(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).expect("readable");
    let mut found = BTreeSet::new();
    for line in text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with("//"))
    {
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn the_modules_import_each_other_without_a_cycle() {
    let mut graph: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for path in sources(&src()) {
        let Some(module) = module_of(&path) else {
            continue;
        };
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(imports(&path).into_iter().filter(|m| *m != module));
    }
    // Depth-first search; a module met again while still on the path closes a cycle.
    fn visit(
        node: &str,
        graph: &std::collections::BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let cycle = visit(module, &graph, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
    assert!(
        graph.contains_key("dispatch") && graph["api"].contains("dispatch"),
        "the graph was read"
    );
}

#[test]
fn sources_stay_small_typed_and_without_macros_in_the_store() {
    for path in sources(&src()) {
        let text = std::fs::read_to_string(&path).expect("readable");
        let lines = text.lines().count();
        assert!(
            lines <= 500,
            "{} has {lines} lines (at most 500)",
            relative(&path)
        );
        let code: Vec<&str> = text
            .lines()
            .map(str::trim_start)
            .filter(|l| !l.starts_with("//"))
            .collect();
        if relative(&path).starts_with("store/") {
            assert!(
                !code.iter().any(|l| l.contains("macro_rules!")),
                "{} defines a macro",
                relative(&path)
            );
        }
        // An error is a type that says what failed, not a bare string.
        let joined = code.join(" ");
        for (at, _) in joined.match_indices("Result<") {
            let args = generic_arguments(&joined[at + "Result".len()..]);
            assert!(
                !args.replace(' ', "").ends_with(",String"),
                "{} returns Result<{args}>",
                relative(&path)
            );
        }
    }
}

/// The text between `<` and its matching `>` at the start of `text`.
fn generic_arguments(text: &str) -> &str {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => {
                depth -= 1;
                if depth == 0 {
                    return &text[1..i];
                }
            }
            _ => {}
        }
    }
    text
}

#[test]
fn generic_arguments_match_their_brackets() {
    assert_eq!(
        generic_arguments("<Vec<String>, String> x"),
        "Vec<String>, String"
    );
    assert_eq!(generic_arguments("<(), E>"), "(), E");
}
