//! The library's public surface, as a listing held in `tests/public-api.txt`:
//! every item a dependent can name (types, traits, functions, constants,
//! modules), with its declaration (fields, variants, a trait's methods), its
//! inherent methods and constants, and the traits it implements (auto traits
//! included: losing `Send` breaks users too). A change to the surface shows
//! as a diff of that file, to be read and committed on purpose; the test
//! fails with the diff while the file and the code differ.
//!
//! The test also fails when a type of another crate (other than std's)
//! appears in a public signature: a major release of that crate would break
//! forkring's API. Such a type shows in the docs as a name that is not a
//! link (the dependencies' docs are not built), or as a link into another
//! crate.
//!
//! How: it builds the library's docs with rustdoc (stable; `cargo doc
//! --no-deps`, in `target/surface` so the usual builds are left alone) and
//! reads the HTML: `all.html` for the items, each item's page for its
//! declaration, methods and implementations. The `internals` feature is off,
//! as for any dependent.
//!
//! To accept a change of the surface, regenerate the listing and commit it:
//!
//! ```text
//! FORKRING_BLESS=1 cargo test --test surface
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const LISTING: &str = "tests/public-api.txt";

/// Crates whose types may appear in the API.
const OWN_AND_STD: &[&str] = &["forkring", "std", "core", "alloc"];

/// Traits rustdoc lists among a type's implementations that stable Rust
/// cannot name: left out, so the listing does not change with the
/// toolchain.
const UNSTABLE_MARKERS: &[&str] = &["Freeze", "UnsafeUnpin", "StructuralPartialEq"];

/// Words of a signature that are not types.
const KEYWORDS: &[&str] = &[
    "pub", "fn", "struct", "enum", "trait", "type", "impl", "for", "where", "dyn", "mut", "const", "unsafe", "extern",
    "self", "Self", "crate", "super", "as", "in", "ref", "static", "union", "async", "move", "use", "mod", "true",
    "false",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the docs into `target/surface/doc` and returns that directory.
fn build_docs() -> PathBuf {
    let target = root().join("target/surface");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .current_dir(root())
        .args(["doc", "--no-deps", "--quiet", "-p", "forkring"])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTDOCFLAGS")
        .output()
        .expect("run cargo doc");
    assert!(out.status.success(), "cargo doc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    target.join("doc/forkring")
}

/// Replaces HTML entities rustdoc writes in signatures.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
}

/// The text of an HTML fragment, tags removed, whitespace collapsed.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    // An attribute is a block of its own: `#[non_exhaustive] pub enum`.
    let html = html.replace("</div>", " </div>").replace("<div", " <div");
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push('\u{0}');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    // `ⓘ` marks rustdoc's "notable traits" pop-up.
    let out = unescape(&out.replace(['\u{0}', 'ⓘ'], ""));
    out.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace("( ", "(")
        .replace(", )", ")")
}

/// Every `<tag ...>...</tag>` fragment starting with `open` (the inner HTML).
fn fragments<'a>(html: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(open) {
        let after = &rest[i..];
        let Some(start) = after.find('>') else { break };
        let Some(end) = after[start..].find(close) else { break };
        found.push(&after[start + 1..start + end]);
        rest = &after[start + end..];
    }
    found
}

/// Removes `<summary class="hideme">...</summary>` (rustdoc's "Show N
/// variants" toggles) from an item declaration.
fn drop_toggles(html: &str) -> String {
    let mut out = html.to_owned();
    while let Some(i) = out.find("<summary class=\"hideme\">") {
        let Some(end) = out[i..].find("</summary>") else { break };
        out.replace_range(i..i + end + "</summary>".len(), "");
    }
    out
}

/// The slice of `html` from the element with `id` to the next `</div>` that
/// closes a list rustdoc opens with that id, or "" when absent.
fn list<'a>(html: &'a str, id: &str) -> &'a str {
    let Some(i) = html.find(&format!("id=\"{id}\"")) else { return "" };
    let rest = &html[i..];
    let end = [
        "id=\"synthetic-implementations\"",
        "id=\"blanket-implementations\"",
        "id=\"trait-implementations\"",
        "id=\"implementors\"",
        "id=\"object-safety\"",
        "id=\"dyn-compatibility\"",
        "<script",
    ]
    .iter()
    .filter_map(|m| rest[1..].find(m).map(|e| e + 1))
    .min()
    .unwrap_or(rest.len());
    &rest[..end]
}

/// One page's lines: the declaration, inherent methods and constants, and
/// implemented traits (blanket implementations aside: every type has them).
fn page_lines(path: &str, kind: &str, html: &str, foreign: &mut Vec<String>) -> Vec<String> {
    let mut lines = Vec::new();
    // Generic parameters of the item and of its impl blocks, for the
    // methods declared under them.
    let mut outer = Vec::new();
    for header in fragments(html, "<h3 class=\"code-header\"", "</h3>") {
        outer.extend(declared_generics(&text(header)));
    }
    let decl = fragments(html, "<pre class=\"rust item-decl\"", "</pre>");
    if let Some(decl) = decl.first() {
        let decl = drop_toggles(decl);
        check_foreign(&format!("{kind} {path}"), &decl, &outer, foreign);
        lines.push(format!("{kind} {path}: {}", text(&decl)));
    } else {
        lines.push(format!("{kind} {path}"));
    }
    // Inherent methods and associated constants: the sections of the
    // "implementations" list (trait implementations come after it).
    let inherent = list(html, "implementations-list");
    for section in ["<section id=\"method.", "<section id=\"associatedconstant.", "<section id=\"associatedtype."] {
        for header in sections(inherent, section) {
            check_foreign(&format!("{path} (inherent)"), header, &outer, foreign);
            lines.push(format!("  {path}: {}", text(header)));
        }
    }
    for header in fragments(inherent, "<section id=\"impl-", "</h3>") {
        if let Some(h) = header.find("<h3 class=\"code-header\">") {
            let h = &header[h..];
            check_foreign(&format!("{path} (impl block)"), h, &outer, foreign);
            lines.push(format!("  {path}: {}", text(h)));
        }
    }
    for list_id in ["trait-implementations-list", "synthetic-implementations-list", "implementors-list"] {
        for header in fragments(list(html, list_id), "<section id=\"impl-", "</h3>") {
            if let Some(h) = header.find("<h3 class=\"code-header\">") {
                let h = &header[h..];
                let line = text(h);
                // Marker traits rustdoc lists that are not stable Rust (and
                // whose listing changes with the toolchain).
                if UNSTABLE_MARKERS.iter().any(|m| line.contains(&format!(" {m} for "))) {
                    continue;
                }
                check_foreign(&format!("{path} (trait impl)"), h, &outer, foreign);
                lines.push(format!("  {path}: {line}"));
            }
        }
    }
    lines
}

/// The code headers (`<h4 class="code-header">`) of the sections whose
/// opening tag starts with `open`.
fn sections<'a>(html: &'a str, open: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(open) {
        let after = &rest[i..];
        let Some(h) = after.find("<h4 class=\"code-header\">") else { break };
        let Some(end) = after[h..].find("</h4>") else { break };
        found.push(&after[h..h + end]);
        rest = &after[h + end..];
    }
    found
}

/// Records a type of another crate in a signature: a link titled with
/// another crate's path, or a type name that rustdoc could not link (the
/// dependencies' docs are not built, so their types stay plain text).
fn check_foreign(what: &str, html: &str, outer: &[String], foreign: &mut Vec<String>) {
    // Linked: `title="struct crossbeam_channel::Receiver"`.
    for title in html.split("title=\"").skip(1) {
        let title = &title[..title.find('"').unwrap_or(0)];
        if let Some((_, path)) = title.split_once(' ') {
            let krate = path.split("::").next().unwrap_or("");
            if !OWN_AND_STD.contains(&krate) {
                foreign.push(format!("{what}: {path}"));
            }
        }
    }
    // Not linked: the text outside `<a>` elements, comments and attributes
    // left out; the generic parameters the signature declares are not
    // types of anyone.
    let mut plain = String::new();
    let mut rest = html;
    while let Some(i) = rest.find("<a ") {
        plain.push_str(&rest[..i]);
        plain.push(' ');
        let end = rest[i..].find("</a>").map_or(rest.len(), |e| i + e + 4);
        rest = &rest[end..];
    }
    plain.push_str(rest);
    // Tags out, newlines kept: a line comment (`// Required methods`) ends
    // at its line's end.
    let mut bare = String::new();
    let mut in_tag = false;
    for c in plain.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                bare.push(' ');
            }
            _ if !in_tag => bare.push(c),
            _ => {}
        }
    }
    let bare = unescape(&bare);
    let mut plain = String::new();
    for line in bare.lines() {
        let line = line.split("//").next().unwrap_or("");
        // A line that starts with a name declares it: an enum's variant.
        let line = line.trim_start();
        let line = match line.find(|c: char| !(c.is_alphanumeric() || c == '_')) {
            Some(0) | None if line.is_empty() => line,
            Some(n) if n > 0 && !KEYWORDS.contains(&&line[..n]) => &line[n..],
            None if !KEYWORDS.contains(&line) => "",
            _ => line,
        };
        plain.push_str(line);
        plain.push('\n');
    }
    for (open, close) in [("/*", "*/"), ("#[", "]"), ("\"", "\"")] {
        while let Some(i) = plain.find(open) {
            let end = plain[i + open.len()..].find(close).map_or(plain.len(), |e| i + open.len() + e + close.len());
            plain.replace_range(i..end, " ");
        }
    }
    // A constant's value may name private constants: its type is what counts.
    if let Some(i) = plain.find("const ").and_then(|c| plain[c..].find('=').map(|e| c + e)) {
        plain.truncate(i);
    }
    let mut generics = declared_generics(&text(html));
    generics.extend(outer.iter().cloned());
    let b = plain.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_alphabetic() || b[i] == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &plain[start..i];
            let before = plain[..start].trim_end();
            let after = plain[i..].trim_start();
            let lifetime = before.ends_with('\'');
            let assoc = before.ends_with("::");
            // A parameter's or field's name, or a generic's bound.
            let named = (after.starts_with(':') && !after.starts_with("::"))
                || (after.starts_with('=') && !after.starts_with("==") && !after.starts_with("=>"));
            // The item's own name, where it is declared.
            let declared =
                ["struct", "enum", "trait", "type", "fn", "union", "const", "static", "mod"].iter().any(|k| {
                    before.ends_with(k) && !before[..before.len() - k.len()].ends_with(|c: char| c.is_alphanumeric())
                });
            let number = start > 0 && b[start - 1].is_ascii_digit();
            if !(lifetime
                || assoc
                || named
                || declared
                || number
                || KEYWORDS.contains(&word)
                || generics.iter().any(|g| g == word)
                || word == "_")
            {
                foreign.push(format!("{what}: `{word}` is not a type of forkring or std"));
            }
        } else {
            i += 1;
        }
    }
}

/// The generic parameters a signature declares: the names in `<...>` after
/// `fn name`, `impl`, `struct Name`, `enum Name`, `trait Name`, `type Name`.
fn declared_generics(sig: &str) -> Vec<String> {
    let mut names = Vec::new();
    let words: Vec<&str> = ["fn ", "impl", "struct ", "enum ", "trait ", "type ", "union "].to_vec();
    for w in words {
        let mut rest = sig;
        while let Some(i) = rest.find(w) {
            let mut after = &rest[i + w.len()..];
            if w != "impl" {
                after = after.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
            }
            if let Some(inner) = after.strip_prefix('<') {
                let mut depth = 1;
                let mut end = inner.len();
                for (j, c) in inner.char_indices() {
                    match c {
                        '<' => depth += 1,
                        '>' => {
                            depth -= 1;
                            if depth == 0 {
                                end = j;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                // Top-level parameters: `T`, `S: AsFd`, `const N: usize`.
                let mut depth = 0;
                let mut start = 0;
                let params = &inner[..end];
                let mut pieces = Vec::new();
                for (j, c) in params.char_indices() {
                    match c {
                        '<' | '(' => depth += 1,
                        '>' | ')' => depth -= 1,
                        ',' if depth == 0 => {
                            pieces.push(&params[start..j]);
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
                pieces.push(&params[start..]);
                for p in pieces {
                    let p = p.trim().trim_start_matches("const ");
                    let name: String = p.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() {
                        names.push(name);
                    }
                }
            }
            rest = &rest[i + w.len()..];
        }
    }
    names
}

/// The items of `all.html`: (kind, page path relative to the doc root,
/// Rust path).
fn items(doc: &Path) -> Vec<(String, String, String)> {
    let all = std::fs::read_to_string(doc.join("all.html")).expect("read all.html");
    let mut found = Vec::new();
    for href in all.split("<li><a href=\"").skip(1) {
        let href = &href[..href.find('"').unwrap_or(0)];
        let Some(file) = href.rsplit('/').next() else { continue };
        let Some((kind, rest)) = file.split_once('.') else { continue };
        let name = rest.trim_end_matches(".html");
        let mut path: Vec<&str> = vec!["forkring"];
        path.extend(href.split('/').filter(|s| !s.ends_with(".html")));
        path.push(name);
        found.push((kind.to_owned(), href.to_owned(), path.join("::")));
    }
    found
}

/// The public modules: every directory of the doc tree with an index page
/// that an item lives under.
fn modules(items: &[(String, String, String)]) -> BTreeSet<String> {
    let mut mods = BTreeSet::new();
    for (_, href, _) in items {
        let parts: Vec<&str> = href.split('/').filter(|s| !s.ends_with(".html")).collect();
        for n in 1..=parts.len() {
            mods.insert(format!("mod forkring::{}", parts[..n].join("::")));
        }
    }
    mods
}

/// The listing and what it found foreign.
fn surface() -> (String, Vec<String>) {
    let doc = build_docs();
    let items = items(&doc);
    assert!(items.len() > 20, "all.html lists {} items: has rustdoc's HTML changed?", items.len());
    let mut lines: Vec<String> = modules(&items).into_iter().collect();
    let mut foreign = Vec::new();
    for (kind, href, path) in &items {
        let html = std::fs::read_to_string(doc.join(href)).unwrap_or_else(|e| panic!("read {href}: {e}"));
        lines.extend(page_lines(path, kind, &html, &mut foreign));
    }
    // Items are listed in all.html by kind then name; list them by path.
    let mut blocks: Vec<Vec<String>> = Vec::new();
    for line in lines {
        match blocks.last_mut() {
            Some(block) if line.starts_with("  ") => block.push(line),
            _ => blocks.push(vec![line]),
        }
    }
    for block in &mut blocks {
        block[1..].sort();
        block.dedup();
    }
    blocks.sort_by(|a, b| key(&a[0]).cmp(&key(&b[0])));
    let mut out = String::from(HEADER);
    for block in blocks {
        for line in block {
            out.push_str(&line);
            out.push('\n');
        }
    }
    foreign.sort();
    foreign.dedup();
    (out, foreign)
}

/// Sorts by path, then kind: `struct forkring::Server: ...` → `forkring::Server`.
fn key(head: &str) -> (String, String) {
    let mut words = head.splitn(2, ' ');
    let kind = words.next().unwrap_or("").to_owned();
    let path = words.next().unwrap_or("").split(':').take(1).collect::<String>();
    let path = head.split_whitespace().nth(1).unwrap_or(&path).trim_end_matches(':').to_owned();
    (path, kind)
}

const HEADER: &str = "\
# forkring's public API, one item a line, made by tests/surface.rs from the
# library's rustdoc. A change here is a change of the API that dependents see:
# read the diff. To regenerate after an intended change:
#   FORKRING_BLESS=1 cargo test --test surface
# (rustdoc's wording can change between toolchains: regenerate with the
# project's stable toolchain.)
";

/// A unified-looking diff of two listings: lines only in one of them.
fn diff(old: &str, new: &str) -> String {
    let old_lines: BTreeSet<&str> = old.lines().collect();
    let new_lines: BTreeSet<&str> = new.lines().collect();
    let mut out = String::new();
    for l in old.lines().filter(|l| !new_lines.contains(l)) {
        out.push_str(&format!("- {l}\n"));
    }
    for l in new.lines().filter(|l| !old_lines.contains(l)) {
        out.push_str(&format!("+ {l}\n"));
    }
    out
}

#[test]
fn the_public_surface_is_the_committed_listing_and_has_no_foreign_type() {
    let (listing, foreign) = surface();
    assert!(
        foreign.is_empty(),
        "types of other crates in forkring's public API (wrap them in a forkring type, or use std's):\n{}",
        foreign.join("\n")
    );
    let file = root().join(LISTING);
    if std::env::var_os("FORKRING_BLESS").is_some() {
        std::fs::write(&file, &listing).expect("write the listing");
        return;
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        committed == listing,
        "the public API differs from {LISTING} (- committed, + now):\n{}\nIf the change is intended, regenerate \
         the listing and commit it:\n    FORKRING_BLESS=1 cargo test --test surface",
        diff(&committed, &listing)
    );
}

#[test]
fn a_foreign_type_is_caught_linked_or_not() {
    let mut found = Vec::new();
    check_foreign(
        "f",
        "pub fn <a class=\"fn\">f</a>&lt;T&gt;(&amp;self, pid: Pid, t: T) -&gt; <a class=\"enum\" \
         title=\"enum core::result::Result\">Result</a>&lt;<a title=\"struct crossbeam_channel::Receiver\">Receiver</a>&lt;'_&gt;&gt;",
        &[],
        &mut found,
    );
    assert_eq!(found, ["f: crossbeam_channel::Receiver", "f: `Pid` is not a type of forkring or std"]);
    let mut none = Vec::new();
    check_foreign(
        "g",
        "impl&lt;S: <a title=\"trait core::os::fd::AsFd\">AsFd</a>&gt; <a title=\"struct forkring::X\">X</a>&lt;S&gt; \
         where S: 'static",
        &[],
        &mut none,
    );
    assert_eq!(none, Vec::<String>::new());
}
