//! The crate's layering, checked: no module of `src/` names a module above
//! it, and no two modules of one layer name each other, so the modules form
//! no circle. `make lint` runs this test.
//!
//! Layers, top to bottom (a module may use only the ones below its own):
//!
//! ```text
//! server → master → worker → driver → http → ipc, lifeline, listen → config, sys
//! ```
//!
//! A path counts wherever it appears in code (`use`, a full path, a
//! `super::` that climbs out of a top-level module); comments do not count.
//! Names re-exported at the crate root (`crate::Event`) count as the module
//! they come from. `lib.rs` (the root's re-exports) and `src/bin/` (which
//! sees only the public API) are outside the layers.

use std::collections::BTreeMap;
use std::path::Path;

/// Each top-level module and its layer (higher is above).
const LAYERS: &[(&str, u32)] = &[
    ("server", 6),
    ("master", 5),
    ("worker", 4),
    ("driver", 3),
    ("http", 2),
    ("ipc", 1),
    ("lifeline", 1),
    ("listen", 1),
    ("config", 0),
    ("sys", 0),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

/// The top-level module a file under `src/` belongs to, if it is layered.
fn module_of(rel: &str) -> Option<&str> {
    let first = rel.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    layer(name).map(|_| name)
}

/// Whether `rel` is the root file of its top-level module (where `super::`
/// means the crate root).
fn is_module_root(rel: &str) -> bool {
    !rel.contains('/') || rel.ends_with("/mod.rs")
}

/// Code without comments: `//` to the end of a line and `/* ... */`.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while !rest.is_empty() {
        let line_c = rest.find("//");
        let block_c = rest.find("/*");
        match (line_c, block_c) {
            (Some(l), b) if b.map_or(true, |b| l < b) => {
                out.push_str(&rest[..l]);
                rest = &rest[l..];
                let end = rest.find('\n').unwrap_or(rest.len());
                rest = &rest[end..];
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                rest = &rest[b + 2..];
                let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
                rest = &rest[end..];
            }
            _ => {
                out.push_str(rest);
                rest = "";
            }
        }
    }
    out
}

/// The names `crate::<name>` (or, in a module root, `super::<name>`) that
/// `code` refers to, including the braces of `use crate::{a, b::c}`.
fn referenced(code: &str, module_root: bool) -> Vec<String> {
    let mut names = Vec::new();
    let mut prefixes = vec!["crate::"];
    if module_root {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        let mut at = 0;
        while let Some(i) = code[at..].find(prefix) {
            let start = at + i;
            at = start + prefix.len();
            // `foo_crate::x` is not `crate::x`.
            if code[..start].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let tail = &code[at..];
            if let Some(group) = tail.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for part in group[..end].split(',') {
                    let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() {
                        names.push(name);
                    }
                }
            } else {
                let name: String = tail.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    names.push(name);
                }
            }
        }
    }
    names
}

/// Root re-exports (`pub use module::{A, B}` in lib.rs): name → module.
fn root_exports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let code = strip_comments(lib);
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(path) = stmt.strip_prefix("pub use ") else { continue };
        let Some((module, items)) = path.split_once("::") else { continue };
        if layer(module).is_none() {
            continue;
        }
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.trim().rsplit("::").next().unwrap_or("").split(" as ").last().unwrap_or("").trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    map
}

/// Every violation in `files` (paths relative to `src/`, and contents).
fn violations(files: &[(String, String)]) -> Vec<String> {
    let exports = files.iter().find(|(p, _)| p == "lib.rs").map(|(_, s)| root_exports(s)).unwrap_or_default();
    let mut found = Vec::new();
    for (rel, src) in files {
        let Some(module) = module_of(rel) else { continue };
        let own = layer(module).unwrap();
        let code = strip_comments(src);
        for name in referenced(&code, is_module_root(rel)) {
            let target = match exports.get(&name) {
                Some(m) => m.clone(),
                None => name.clone(),
            };
            let Some(theirs) = layer(&target) else { continue };
            if target != module && theirs >= own {
                found.push(format!(
                    "src/{rel}: `{module}` (layer {own}) names `{target}` (layer {theirs}) via `{name}`"
                ));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn no_module_names_a_module_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&src, &src, &mut files);
    // Every top-level module of the crate has a layer.
    for (rel, _) in &files {
        let top = rel.split('/').next().unwrap();
        let name = top.strip_suffix(".rs").unwrap_or(top);
        assert!(
            matches!(name, "lib" | "bin") || layer(name).is_some(),
            "src/{rel}: module `{name}` has no layer; add it to LAYERS in tests/layers.rs"
        );
    }
    let bad = violations(&files);
    assert!(bad.is_empty(), "{} layering violation(s):\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn the_check_catches_upward_and_sideways_imports() {
    let files = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect()
    };
    let lib = "pub use master::{Event, Ctl};\npub use http::Handler;";
    let cases: &[(&str, &str, bool)] = &[
        ("http/conn.rs", "use crate::config::Limits;\nuse crate::ipc::Counters;", true),
        ("http/conn.rs", "use crate::server::Timeouts;", false),
        ("http/mod.rs", "use super::driver::Link;", false),
        ("http/conn.rs", "use super::date::DateCache;", true),
        ("worker/mod.rs", "use crate::{driver::Inbox, master::Hooks};", false),
        ("worker/mod.rs", "fn f() { let _ = crate::Event::Fork; }", false),
        ("driver/mod.rs", "use crate::Handler;", true),
        ("ipc/ring.rs", "use crate::listen::bind;", false),
        ("ipc/ring.rs", "// see crate::server::Server\n/* crate::master */ use crate::config::RingOptions;", true),
        ("config.rs", "let x = my_crate::server::y;", true),
    ];
    for &(path, src, ok) in cases {
        let bad = violations(&files(&[("lib.rs", lib), (path, src)]));
        assert_eq!(bad.is_empty(), ok, "{path}: {src:?} -> {bad:?}");
    }
}
