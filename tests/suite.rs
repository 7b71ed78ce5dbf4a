//! The test suite's own rules, checked against the files of `tests/`:
//!
//! - **Which files run once.** `make test` runs the test files that never
//!   start a server, a worker or a driver once, with the library's unit
//!   tests, and every other file once per backend (io_uring, epoll). The
//!   files that run once are listed in one place, `BACKEND_FREE_TESTS` in
//!   the Makefile; this check holds the list to the files: a listed file
//!   must start nothing, and a file that starts nothing must be listed. A
//!   file starts something when its code (comments and literals aside)
//!   names a server (`Server::`, the demo's or the library's builder), the
//!   self-run master (`SelfMaster::`) or another process (`Command::new`).
//! - **Why a test is ignored.** A test is `#[ignore]`d only for a need of
//!   `forkring_testkit::need` that is ignored by default, with that need's
//!   reason as the attribute's text, and it calls `require` for it; a test
//!   that requires such a need is ignored for it.

use std::path::Path;

use forkring_testkit::need::Need;

/// What in a file's code says that it starts a server, a worker or a
/// driver.
const STARTS: &[&str] = &["Server::", "SelfMaster::", "Command::new"];

/// `src` with the contents of comments, strings and character literals
/// blanked (each byte a space, newlines kept), so that positions still
/// match the source.
fn code_only(src: &str) -> String {
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
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = src[i..].find('\n').map_or(b.len(), |e| i + e);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
                blank(&mut out, i, end);
                i = end;
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // A raw string: r"...", r#"..."#.
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let start = i + 2 + hashes;
                let end = src[start..].find(&close).map_or(b.len(), |e| start + e + close.len());
                blank(&mut out, start, end.saturating_sub(close.len()).max(start));
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j.min(b.len()));
                i = j + 1;
            }
            b'\'' => {
                // A character literal ('x', '\n', '\''), or a lifetime.
                let end = if b.get(i + 1) == Some(&b'\\') {
                    src.get(i + 3..).and_then(|rest| rest.find('\'')).map(|e| i + 3 + e)
                } else {
                    let next = src[i + 1..].chars().next().map_or(0, char::len_utf8);
                    (b.get(i + 1 + next) == Some(&b'\'')).then_some(i + 1 + next)
                };
                match end {
                    Some(e) => {
                        blank(&mut out, i + 1, e);
                        i = e + 1;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("blanking keeps UTF-8: only whole literals and comments are replaced")
}

/// The names listed in the Makefile's `BACKEND_FREE_TESTS`.
fn backend_free(makefile: &str) -> Vec<String> {
    let mut lines = makefile.lines();
    let first = lines
        .find(|l| l.starts_with("BACKEND_FREE_TESTS"))
        .expect("the Makefile defines BACKEND_FREE_TESTS")
        .split_once('=')
        .expect("BACKEND_FREE_TESTS := ...")
        .1;
    let mut text = first.to_owned();
    while text.trim_end().ends_with('\\') {
        text = text.trim_end().trim_end_matches('\\').to_owned();
        text.push(' ');
        text.push_str(lines.next().unwrap_or(""));
    }
    text.split_whitespace().map(str::to_owned).collect()
}

/// Where `files` (a test file's name without `.rs`, and its source)
/// disagree with the list of files that run once.
fn misplaced(listed: &[String], files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for name in listed {
        if !files.iter().any(|(n, _)| n == name) {
            found.push(format!("BACKEND_FREE_TESTS names {name}, and there is no tests/{name}.rs"));
        }
    }
    for (name, src) in files {
        let code = code_only(src);
        let starts = STARTS.iter().find(|m| code.contains(*m));
        match (listed.contains(name), starts) {
            (true, Some(m)) => found.push(format!(
                "tests/{name}.rs starts a server, worker or driver (`{m}`) yet is in BACKEND_FREE_TESTS, so it \
                 would run on one backend only: take it out of the list in the Makefile"
            )),
            (false, None) => found.push(format!(
                "tests/{name}.rs starts no server, worker or driver, yet is not in BACKEND_FREE_TESTS, so it \
                 would run once per backend for nothing: add it to the list in the Makefile"
            )),
            _ => {}
        }
    }
    found
}

/// A `#[test]` function: its name, its attributes' source, its body's code.
struct TestFn {
    name: String,
    attrs: String,
    body: String,
}

/// The `#[test]` functions of a file.
fn test_fns(src: &str) -> Vec<TestFn> {
    let code = code_only(src);
    let mut fns = Vec::new();
    let mut at = 0;
    while let Some(i) = code[at..].find("#[test]") {
        let start = at + i;
        // The attributes around `#[test]`: from the end of the item before
        // (or the line after the last blank line) to the `fn`.
        let before = code[..start].rfind(['}', ';', '{']).map_or(0, |p| p + 1);
        let Some(f) = code[start..].find("fn ").map(|f| start + f) else { break };
        let name: String = code[f + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let open = f + code[f..].find('{').expect("a test function has a body");
        let mut depth = 0;
        let mut close = open;
        for (j, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + j;
                        break;
                    }
                }
                _ => {}
            }
        }
        fns.push(TestFn { name, attrs: src[before..f].to_owned(), body: code[open..=close].to_owned() });
        at = close + 1;
    }
    fns
}

/// Where the `#[ignore]`s of `files` break the needs policy.
fn badly_ignored(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (file, src) in files {
        for t in test_fns(src) {
            let at = format!("tests/{file}.rs: {}", t.name);
            let required: Vec<Need> =
                Need::ALL.into_iter().filter(|n| t.body.contains(&format!("require(Need::{n:?})"))).collect();
            let ignore = t.attrs.find("#[ignore").map(|i| {
                let attr = &t.attrs[i..];
                let attr = &attr[..attr.find(']').unwrap_or(attr.len())];
                attr.split_once('"').and_then(|(_, r)| r.split_once('"')).map(|(reason, _)| reason.to_owned())
            });
            match ignore {
                None => {
                    for n in required.iter().filter(|n| n.ignored_by_default()) {
                        found.push(format!("{at} requires Need::{n:?}, so it is #[ignore = \"{}\"]", n.reason()));
                    }
                }
                Some(None) => found.push(format!("{at} is #[ignore]d without a reason")),
                Some(Some(reason)) => match Need::ALL.into_iter().find(|n| n.reason() == reason) {
                    Some(n) if n.ignored_by_default() && required.contains(&n) => {}
                    Some(n) if n.ignored_by_default() => {
                        found.push(format!("{at} is ignored because it {reason}, yet never calls require(Need::{n:?})"))
                    }
                    _ => found.push(format!(
                        "{at} is ignored for {reason:?}: a test is ignored only for a need that \
                         forkring_testkit::need ignores by default, with that need's reason"
                    )),
                },
            }
        }
    }
    found
}

/// Every file of `tests/`: its name without `.rs`, and its source.
fn test_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            files.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    files.sort();
    files
}

#[test]
fn the_files_that_run_once_are_those_that_start_no_server() {
    let makefile = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Makefile")).unwrap();
    let listed = backend_free(&makefile);
    assert!(listed.iter().any(|n| n == "suite"), "this check starts nothing: it is listed too ({listed:?})");
    let bad = misplaced(&listed, &test_files());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn every_ignored_test_is_ignored_for_a_need_it_requires() {
    let bad = badly_ignored(&test_files());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_checks_catch_a_misplaced_file_and_an_unexplained_ignore() {
    let files = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect()
    };
    let listed = backend_free("X = 1\nBACKEND_FREE_TESTS := core \\\n\tprops\nOTHER := y\n");
    assert_eq!(listed, ["core", "props"]);
    let cases: &[(&str, &str, bool)] = &[
        ("core", "fn f() { let c = Conn::new(); }", true),
        ("core", "fn f() { let s = Server::start(&[]); }", false),
        ("core", "// Server::start would be wrong here\nfn f() { let s = \"Command::new\"; }", true),
        ("core", "fn f() { let s = r#\"SelfMaster::spawn\"#; let c = '\"'; }", true),
        ("core", "fn f<'a>(x: &'a str) { let q = '\\''; let s = \"Server::start\"; }", true),
        ("serve", "fn f() { let s = Server::start(&[]); }", true),
        ("serve", "fn f() { feed(b\"GET / HTTP/1.1\\r\\n\"); }", false),
    ];
    for &(name, src, ok) in cases {
        let mut all = files(&[(name, src)]);
        all.extend(listed.iter().filter(|l| *l != name).map(|l| (l.clone(), "fn g() {}".to_owned())));
        let bad = misplaced(&listed, &all);
        assert_eq!(bad.is_empty(), ok, "{name}: {src:?} -> {bad:?}");
    }
    assert!(!misplaced(&listed, &files(&[("core", "")])).is_empty(), "a listed file that is gone (props)");

    let cases: &[(&str, bool)] = &[
        ("#[test]\nfn a() { run(); }", true),
        ("#[test]\n#[ignore = \"needs root\"]\nfn a() {\n    require(Need::Root);\n}", true),
        ("#[ignore = \"needs promtool\"]\n#[test]\nfn a() { require(Need::Promtool); }", true),
        ("#[test]\nfn a() { require(Need::Curl); }", true),
        ("#[test]\nfn a() { require(Need::Root); }", false),
        ("#[test]\n#[ignore]\nfn a() { require(Need::Root); }", false),
        ("#[test]\n#[ignore = \"slow\"]\nfn a() { run(); }", false),
        ("#[test]\n#[ignore = \"needs root\"]\nfn a() { run(); }", false),
        ("#[test]\n#[ignore = \"needs curl\"]\nfn a() { require(Need::Curl); }", false),
        ("#[test]\nfn a() { require(Need::Curl); }\n\n#[test]\n#[ignore = \"needs root\"]\nfn b() { run(); }", false),
    ];
    for &(src, ok) in cases {
        let bad = badly_ignored(&files(&[("t", src)]));
        assert_eq!(bad.is_empty(), ok, "{src:?} -> {bad:?}");
    }
}
