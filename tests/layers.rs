//! The crate's layering and the size of its files, checked. `make lint`
//! runs this test.
//!
//! Between the top-level modules of `src/`: no module names a module above
//! it, and no two modules of one layer name each other, so the modules form
//! no circle. Layers, top to bottom (a module may use only the ones below
//! its own):
//!
//! ```text
//! server → master → worker → driver → http → ipc, lifeline, listen → config, sys
//! ```
//!
//! A path counts wherever it appears in code (`use`, a full path, a
//! `super::` that climbs out of a top-level module); comments and string
//! literals do not count. Names re-exported at the crate root
//! (`crate::Event`) count as the module they come from. `lib.rs` (the
//! root's re-exports) is outside the layers.
//!
//! Inside every module with files of its own (`http`, `http/conn`,
//! `driver/uring`, ...): its children form no circle. Each child module (a
//! file, or a directory taken whole) is a node; a child that names another
//! by a path (`super::x`, `crate::m::x`, `self::x`) is an edge, `use`
//! included, test modules aside. The module's own file (`mod.rs`) is the
//! module itself, not one of its children: it declares them and may hold
//! the state they share (`master/mod.rs` holds the supervisor's `Master`,
//! which every unit of `master/` extends), so a child naming it, or it
//! naming a child, is the module tree and not a circle. A name `mod.rs`
//! re-exports from a child counts as that child, so two children cannot
//! hide a circle behind the module's face.
//!
//! And no file under `src/` holds more than [`MAX_CODE_LINES`] lines of
//! code, test modules, comment lines and blank lines aside.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module and its layer (higher is above).
const LAYERS: &[(&str, u32)] = &[
    // Documentation only (the guide): above everything, imports nothing.
    ("guide", 7),
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

/// `src` with every comment blanked out (`//` to the end of the line,
/// `/* ... */` nested), and with `strings` the insides of string and
/// character literals too. Bytes become spaces and newlines stay, so
/// offsets and line numbers are those of `src`.
fn mask(src: &str, strings: bool) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').map_or(b.len(), |e| i + e);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0usize, i);
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if let Some((open, close)) = raw_string_at(b, i) {
            if strings {
                blank(&mut out, open, close);
            }
            i = close + 1;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            if strings {
                blank(&mut out, i + 1, j.min(b.len()));
            }
            i = j + 1;
        } else if b[i] == b'\'' && literal_may_start(b, i) {
            // A character literal, or a lifetime (`'a` not closed by a quote
            // right after its first character).
            let end = if b.get(i + 1) == Some(&b'\\') {
                b.get(i + 3..).and_then(|r| r.iter().position(|&c| c == b'\'')).map(|e| i + 3 + e)
            } else {
                let len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
            };
            match end {
                Some(end) => {
                    if strings {
                        blank(&mut out, i + 1, end);
                    }
                    i = end + 1;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("whole characters blanked")
}

/// A raw string (`r"..."`, `r#"..."#`, `br"..."`) starting at `i`: the
/// offsets of its opening and closing quotes.
fn raw_string_at(b: &[u8], i: usize) -> Option<(usize, usize)> {
    if ident_byte(i.checked_sub(1).map(|p| b[p])) {
        return None;
    }
    let mut j = i;
    if b.get(j) == Some(&b'b') {
        j += 1;
    }
    if b.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
    j += hashes;
    if b.get(j) != Some(&b'"') {
        return None;
    }
    let open = j;
    let mut k = j + 1;
    while k < b.len() {
        if b[k] == b'"' && b[k + 1..].iter().take(hashes).filter(|&&c| c == b'#').count() == hashes {
            return Some((open, k + hashes));
        }
        k += 1;
    }
    Some((open, b.len() - 1))
}

/// Whether the quote at `i` may open a character literal: not the end
/// of an identifier, but maybe a byte literal's `b'`.
fn literal_may_start(b: &[u8], i: usize) -> bool {
    let before = |n: usize| i.checked_sub(n).map(|p| b[p]);
    !ident_byte(before(1)) || (before(1) == Some(b'b') && !ident_byte(before(2)))
}

fn ident_byte(c: Option<u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Code without comments and without what string literals hold: what the
/// path checks read.
fn code_of(src: &str) -> String {
    mask(src, true)
}

/// The byte ranges of test modules in `code` (masked): a `mod` item with a
/// `#[cfg(...)]` that names `test` (`#[cfg(test)]`, `#[cfg(all(loom,
/// test))]`), from its attribute to its closing brace.
fn test_modules(code: &str) -> Vec<(usize, usize)> {
    let b = code.as_bytes();
    let mut spans = Vec::new();
    let mut at = 0;
    while let Some(found) = code[at..].find("#[cfg(") {
        let start = at + found;
        let Some(close) = code[start..].find(']').map(|e| start + e) else { break };
        at = close + 1;
        let cond = &code[start..close];
        let names_test = cond.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|w| w == "test");
        if !names_test {
            continue;
        }
        // Further attributes may follow before the item.
        let mut item = close + 1;
        loop {
            let rest = code[item..].trim_start();
            item = code.len() - rest.len();
            if rest.starts_with("#[") {
                item = code[item..].find(']').map_or(code.len(), |e| item + e + 1);
            } else {
                break;
            }
        }
        let rest = &code[item..];
        let rest = rest.strip_prefix("pub(crate) ").or_else(|| rest.strip_prefix("pub ")).unwrap_or(rest);
        if !rest.starts_with("mod ") {
            continue;
        }
        let Some(open) = code[item..].find('{').map(|e| item + e) else { continue };
        if code[item..open].contains(';') {
            // `mod tests;`: a file of its own.
            continue;
        }
        let mut depth = 0usize;
        let mut end = b.len();
        for (k, &c) in b.iter().enumerate().skip(open) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        spans.push((start, end));
        at = end;
    }
    spans
}

/// `code` with its test modules blanked out.
fn without_tests(code: &str) -> String {
    let mut out = code.as_bytes().to_vec();
    for (from, to) in test_modules(code) {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    }
    String::from_utf8(out).expect("whole characters blanked")
}

/// Lines of code in `src`: test modules, comment lines and blank lines
/// aside (a string literal's lines are code).
fn code_lines(src: &str) -> usize {
    let tests = test_modules(&mask(src, true));
    let mut code = mask(src, false).into_bytes();
    for (from, to) in tests {
        for c in &mut code[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    }
    String::from_utf8(code).expect("whole characters blanked").lines().filter(|l| !l.trim().is_empty()).count()
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
    let code = code_of(lib);
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
        let code = code_of(src);
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

/// A token of masked code, as far as paths go.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A word: an identifier or a keyword.
    Ident(String),
    /// `::`
    Path,
    /// `{`
    Open,
    /// `}`
    Close,
    /// `,`
    Comma,
    /// `*`
    Star,
    /// Anything else.
    Other(char),
}

/// `code` (masked) as tokens.
fn tokens(code: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut chars = code.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            c if c.is_alphanumeric() || c == '_' => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if !(d.is_alphanumeric() || d == '_') {
                        break;
                    }
                    end = j + d.len_utf8();
                    chars.next();
                }
                toks.push(Tok::Ident(code[i..end].to_owned()));
            }
            ':' if chars.peek().is_some_and(|&(_, d)| d == ':') => {
                chars.next();
                toks.push(Tok::Path);
            }
            '{' => toks.push(Tok::Open),
            '}' => toks.push(Tok::Close),
            ',' => toks.push(Tok::Comma),
            '*' => toks.push(Tok::Star),
            c => toks.push(Tok::Other(c)),
        }
    }
    toks
}

/// A path in code: its segments as written, and whether a `use` names it
/// (then `name` is what it is imported as).
#[derive(Debug)]
struct Named {
    segs: Vec<String>,
    used: bool,
    name: Option<String>,
}

/// Every path in `code` (masked, tests left out): `a::b::c`, `use
/// a::{b, c::d as e}`, and in a `use` a single name.
fn named_paths(code: &str) -> Vec<Named> {
    let toks = tokens(code);
    let mut out = Vec::new();
    let mut t = 0;
    while t < toks.len() {
        let Tok::Ident(word) = &toks[t] else {
            t += 1;
            continue;
        };
        let after_path = t > 0 && matches!(toks[t - 1], Tok::Path | Tok::Other('.'));
        if word == "use" && !after_path {
            t = path_at(&toks, t + 1, Vec::new(), true, &mut out);
        } else if !after_path && toks.get(t + 1) == Some(&Tok::Path) {
            t = path_at(&toks, t, Vec::new(), false, &mut out);
        } else {
            t += 1;
        }
    }
    out
}

/// Parses the path (or `use` tree) at `t`, whose segments so far are
/// `segs` (a `use` group's prefix); returns where it ends.
fn path_at(toks: &[Tok], mut t: usize, mut segs: Vec<String>, used: bool, out: &mut Vec<Named>) -> usize {
    if toks.get(t) == Some(&Tok::Path) {
        // `use ::std::x`: an outside crate.
        t += 1;
    }
    loop {
        match toks.get(t) {
            Some(Tok::Ident(s)) => segs.push(s.clone()),
            Some(Tok::Star) => {
                segs.push("*".into());
                out.push(Named { segs, used, name: None });
                return t + 1;
            }
            Some(Tok::Open) => {
                t += 1;
                while t < toks.len() && toks[t] != Tok::Close {
                    if toks[t] == Tok::Comma {
                        t += 1;
                        continue;
                    }
                    let before = t;
                    t = path_at(toks, t, segs.clone(), used, out);
                    if t == before {
                        t += 1;
                    }
                }
                return t + 1;
            }
            _ => return t,
        }
        t += 1;
        if toks.get(t) == Some(&Tok::Path) {
            t += 1;
        } else {
            break;
        }
    }
    let mut name = segs.last().cloned();
    if toks.get(t) == Some(&Tok::Ident("as".into())) {
        if let Some(Tok::Ident(alias)) = toks.get(t + 1) {
            name = Some(alias.clone());
            t += 2;
        }
    }
    if name.as_deref() == Some("self") {
        name = segs.len().checked_sub(2).map(|i| segs[i].clone());
    }
    out.push(Named { segs, used, name });
    t
}

/// The module path of a file under `src/` (`http/conn/mod.rs` is
/// `http::conn`); `None` for `src/bin/`, outside the crate's modules.
fn module_path(rel: &str) -> Option<Vec<String>> {
    if rel.starts_with("bin/") {
        return None;
    }
    if rel == "lib.rs" {
        return Some(Vec::new());
    }
    let mut parts: Vec<String> = rel.trim_end_matches(".rs").split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

/// The crate's modules: each module path with the names of its child
/// modules.
fn module_tree(files: &[(String, String)]) -> BTreeMap<Vec<String>, BTreeSet<String>> {
    let mut tree: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    for (rel, _) in files {
        let Some(path) = module_path(rel) else { continue };
        for n in 0..=path.len() {
            let entry = tree.entry(path[..n].to_vec()).or_default();
            if n < path.len() {
                entry.insert(path[n].clone());
            }
        }
    }
    tree
}

/// `segs` as a path from the crate root, seen from the module `here`; `None`
/// for a path outside the crate (`std::`, a local item, a variant).
fn absolute(segs: &[String], here: &[String], children: &BTreeSet<String>) -> Option<Vec<String>> {
    let first = segs.first()?;
    let mut path = match first.as_str() {
        "crate" => segs[1..].to_vec(),
        "self" => [here, &segs[1..]].concat(),
        "super" => {
            let ups = segs.iter().take_while(|s| *s == "super").count();
            let base = here.get(..here.len().checked_sub(ups)?)?;
            [base, &segs[ups..]].concat()
        }
        name if children.contains(name) => [here, segs].concat(),
        _ => return None,
    };
    path.retain(|s| s != "self");
    Some(path)
}

/// Each module with child modules, and the circles between its children:
/// for module `m`, a node per child module (`x.rs` or `x/`); an edge where
/// one names the other. `m`'s own file (`mod.rs`) is no node (see the
/// module's text); a name it re-exports from a child counts as that child.
fn circles(files: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let tree = module_tree(files);
    // Per file: its module path and every crate path it names.
    let mut refs: Vec<(&str, Vec<String>, Vec<Named>)> = Vec::new();
    for (rel, src) in files {
        let Some(here) = module_path(rel) else { continue };
        let code = without_tests(&code_of(src));
        refs.push((rel, here, named_paths(&code)));
    }
    let empty = BTreeSet::new();
    let mut found = BTreeMap::new();
    for (module, children) in &tree {
        if module.is_empty() || children.is_empty() {
            // The top level is the layering check's.
            continue;
        }
        // What the module's own file re-exports from its children.
        let mut exports: BTreeMap<String, String> = BTreeMap::new();
        for (_, here, paths) in refs.iter().filter(|(_, here, _)| here == module) {
            for p in paths.iter().filter(|p| p.used) {
                let Some(abs) = absolute(&p.segs, here, tree.get(here).unwrap_or(&empty)) else { continue };
                if abs.len() > module.len() + 1 && abs.starts_with(module) && children.contains(&abs[module.len()]) {
                    if let Some(name) = &p.name {
                        exports.insert(name.clone(), abs[module.len()].clone());
                    }
                }
            }
        }
        let node = |path: &[String]| -> String {
            match path.get(module.len()) {
                None => "mod.rs".into(),
                Some(c) if children.contains(c) => node_name(&tree, module, c),
                Some(name) => exports.get(name).map_or_else(|| "mod.rs".into(), |c| node_name(&tree, module, c)),
            }
        };
        // Edges, each with one example of why.
        let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
        for (rel, here, paths) in &refs {
            if !here.starts_with(module) {
                continue;
            }
            let from = node(here);
            for p in paths {
                let Some(abs) = absolute(&p.segs, here, tree.get(here).unwrap_or(&empty)) else { continue };
                if !abs.starts_with(module) {
                    continue;
                }
                let to = node(&abs);
                if to != from && from != "mod.rs" && to != "mod.rs" {
                    edges.entry((from.clone(), to)).or_insert_with(|| format!("src/{rel} names {}", p.segs.join("::")));
                }
            }
        }
        for group in strongly_connected(&edges) {
            let why: Vec<&str> = edges
                .iter()
                .filter(|((a, b), _)| group.contains(a) && group.contains(b))
                .map(|(_, why)| why.as_str())
                .collect();
            found.entry(module.join("/")).or_insert_with(Vec::new).push(format!(
                "{} ({})",
                group.iter().cloned().collect::<Vec<_>>().join(", "),
                why.join("; ")
            ));
        }
    }
    found
}

/// How the child `c` of `module` is shown: `c/` for a directory, `c.rs`.
fn node_name(tree: &BTreeMap<Vec<String>, BTreeSet<String>>, module: &[String], c: &str) -> String {
    let dir = tree.get(&[module, &[c.to_owned()]].concat()).is_some_and(|k| !k.is_empty());
    if dir {
        format!("{c}/")
    } else {
        format!("{c}.rs")
    }
}

/// The groups of two or more nodes that reach each other (a circle).
fn strongly_connected(edges: &BTreeMap<(String, String), String>) -> Vec<BTreeSet<String>> {
    let nodes: BTreeSet<&String> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for (a, b) in edges.keys() {
                if *a == n && seen.insert(b.clone()) {
                    todo.push(b.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut groups: Vec<BTreeSet<String>> = Vec::new();
    for n in &nodes {
        if !reached[n].contains(*n) || groups.iter().any(|g| g.contains(*n)) {
            continue;
        }
        let group: BTreeSet<String> = nodes
            .iter()
            .filter(|m| reached[n].contains(**m) && reached[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        groups.push(group);
    }
    groups
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

/// Most lines of code a file under `src/` may hold (test modules, comment
/// lines and blank lines aside).
const MAX_CODE_LINES: usize = 700;

/// Every `.rs` file under `src/`: its path relative to `src/`, and its text.
fn src_files() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&src, &src, &mut files);
    files.sort();
    files
}

#[test]
fn no_circle_between_the_files_of_a_module() {
    let bad: Vec<String> = circles(&src_files())
        .iter()
        .flat_map(|(module, groups)| groups.iter().map(move |g| format!("src/{module}: {g}")))
        .collect();
    assert!(bad.is_empty(), "{} circle(s) between the files of a module:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn the_circle_check_catches_a_circle_between_files() {
    let files = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect()
    };
    // Each case: the files of a tree, and the module with a circle.
    type Tree<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Tree<'_>, Option<&str>)] = &[
        // Two siblings name each other, by `super::` and by `crate::`.
        (&[("a/mod.rs", "mod x;\nmod y;"), ("a/x.rs", "use super::y::Y;"), ("a/y.rs", "fn f() { crate::a::x::go() }")], Some("a")),
        // One way only.
        (&[("a/mod.rs", "mod x;\nmod y;"), ("a/x.rs", "use super::y::Y;"), ("a/y.rs", "use std::fmt;")], None),
        // A child names what `mod.rs` defines, and `mod.rs` re-exports it:
        // the module tree, not a circle.
        (&[("a/mod.rs", "pub use x::X;\npub struct M;"), ("a/x.rs", "use super::M;")], None),
        // Two children through names `mod.rs` re-exports: a circle.
        (&[("a/mod.rs", "pub use x::X;\npub use y::Y;"), ("a/x.rs", "use super::Y;"), ("a/y.rs", "use super::X;")], Some("a")),
        // A name `mod.rs` re-exports counts as the child it comes from.
        (&[("a/mod.rs", "pub use x::{X as Z, W};"), ("a/x.rs", "pub struct X;"), ("a/y.rs", "use super::Z;")], None),
        // `mod.rs` calling a child by a bare path, and the child naming it.
        (&[("a/mod.rs", "fn f() { x::go() }\nfn helper() {}"), ("a/x.rs", "use super::helper;")], None),
        // Deeper: a file of `a/b/` and `a/d.rs`, in `a`.
        (
            &[("a/mod.rs", ""), ("a/b/mod.rs", ""), ("a/b/c.rs", "use super::super::d::D;"), ("a/d.rs", "use crate::a::b::c::C;")],
            Some("a"),
        ),
        // Comments, strings and tests do not count.
        (
            &[
                ("a/mod.rs", ""),
                ("a/x.rs", "// use super::y::Y;\nconst S: &str = \"super::y::Y\";\n#[cfg(test)]\nmod tests { use super::super::y::Y; }"),
                ("a/y.rs", "use super::x::X;"),
            ],
            None,
        ),
    ];
    for (tree, circle) in cases {
        let found = circles(&files(tree));
        assert_eq!(found.keys().next().map(String::as_str), *circle, "{tree:?} -> {found:?}");
    }
}

#[test]
fn no_file_holds_more_than_700_lines_of_code() {
    let large: Vec<String> = src_files()
        .iter()
        .map(|(rel, src)| (rel, code_lines(src)))
        .filter(|&(_, n)| n > MAX_CODE_LINES)
        .map(|(rel, n)| format!("src/{rel}: {n} lines of code"))
        .collect();
    assert!(large.is_empty(), "more than {MAX_CODE_LINES} lines of code:\n{}", large.join("\n"));
}

#[test]
fn the_line_count_leaves_out_tests_comments_and_blank_lines() {
    let src = r##"//! What the module is for.

/// Documented.
fn f() -> &'static str {
    // A comment.
    let s = "// not a comment, and
a string's second line";
    let c = '{'; /* a block
    comment */
    let r = r#"}"#;
    s
}

#[cfg(unix)]
mod sys {}

#[cfg(test)]
mod tests {
    fn g() { let c = '}'; let s = "}}"; let b = b'{'; }

    fn h() {}
}

#[cfg(all(loom, test))]
#[allow(dead_code)]
mod loom_tests {
    fn i() {}
}
"##;
    // `fn f`, `let s`, the string's second line, `let c`, `let r`, `s`,
    // `}`, and the two lines of `mod sys`.
    assert_eq!(code_lines(src), 9);
    assert_eq!(code_lines("fn a() {}\n\n// b\n/// c\n"), 1);
}
