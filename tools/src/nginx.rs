//! What both harnesses (`make stress`, `make scale`) write into an nginx
//! configuration alike.

use std::path::Path;
use std::process::Command;

/// The `*_temp_path` lines that keep every temporary file of `bin` inside
/// `dir`: one per module this nginx was built with (`nginx -V`), the
/// client-body one always.
pub fn temp_paths(bin: &Path, dir: &Path) -> String {
    let d = dir.display();
    let built = Command::new(bin).arg("-V").output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned());
    let built = built.unwrap_or_default();
    let mut temp = String::new();
    for m in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        if m == "client_body" || !built.contains(&format!("--without-http_{m}_module")) {
            temp.push_str(&format!("    {m}_temp_path {d}/{m};\n"));
        }
    }
    temp
}
