//! The import graph flows one way: HTTP (`api/`, `web/`, with `app.rs`,
//! `cli.rs`, `bench/`, `main.rs` above them) → services (`rights`, `relay`,
//! `collector`, `systems`, …, which take `Services` or narrower pieces) →
//! store and view → `yinyom-core`. No module below HTTP may name `crate::app`
//! (ARCHITECTURE.md, "Layers").

use std::path::{Path, PathBuf};

/// Files and folders (relative to `src/`) allowed to use `crate::app`.
const ABOVE: &[&str] = &["api/", "web/", "bench/", "cli.rs", "main.rs", "app.rs"];

fn sources(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// Whether Rust source names the `app` module of the crate: `crate::app`,
/// or `app` inside a `crate::{…}` group.
fn names_app(source: &str) -> bool {
    let text: String = source.split_whitespace().collect();
    if text.contains("crate::app") {
        return true;
    }
    let mut rest = text.as_str();
    while let Some(at) = rest.find("crate::{") {
        let group = &rest[at + "crate::{".len()..];
        let mut depth = 1;
        let end = group
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(group.len(), |(i, _)| i);
        // Top-level items of the group: `app`, `app::App`, `app::{…}`.
        let mut depth = 0;
        let mut item = String::new();
        for c in group[..end].chars().chain([',']) {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    if item == "app" || item.starts_with("app::") {
                        return true;
                    }
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        rest = &group[end..];
    }
    false
}

#[test]
fn the_check_sees_every_spelling() {
    assert!(names_app("use crate::app::App;"));
    assert!(names_app("fn f(a: &crate::app::App) {}"));
    assert!(names_app(
        "use crate::{\n    app::{self, App},\n    store::Store,\n};"
    ));
    assert!(names_app("use crate::{store::Store, app};"));
    assert!(!names_app("use crate::{store::{Store, StoreError}, apps};"));
    assert!(!names_app("use crate::services::Services; // the app"));
}

#[test]
fn nothing_below_http_names_the_app() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut below = 0;
    let mut offenders = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if ABOVE
            .iter()
            .any(|a| rel == *a || (a.ends_with('/') && rel.starts_with(a)))
        {
            continue;
        }
        below += 1;
        if names_app(&std::fs::read_to_string(path).expect("read")) {
            offenders.push(rel);
        }
    }
    // The walk did find the service modules.
    assert!(below > 30, "only {below} files below HTTP");
    for rel in [
        "rights.rs",
        "relay.rs",
        "services.rs",
        "systems/mod.rs",
        "view/mod.rs",
        "transfer.rs",
    ] {
        assert!(files.iter().any(|p| p.ends_with(rel)), "{rel} not found");
    }
    assert!(
        offenders.is_empty(),
        "modules below HTTP name crate::app (take Services or narrower pieces): {offenders:?}"
    );
}
