//! Files under a directory, by URL path: `forkring::files::StaticDir`
//! opens the path beneath the directory (never outside it: `..`, encoded
//! slashes and symbolic links that leave it get `403`) and the body goes
//! from the page cache to the socket without passing through the worker.
//! `Range`, `If-Modified-Since`, `If-Range` and `HEAD` are answered by the
//! runtime.
//!
//! ```text
//! cargo run --example static_files -- .            # serves this directory on 127.0.0.1:3005
//! curl localhost:3005/files/Cargo.toml             # the file
//! curl -r 0-9 localhost:3005/files/Cargo.toml      # its first ten bytes (206)
//! curl -I localhost:3005/files/Cargo.toml          # Last-Modified, Accept-Ranges
//! curl --path-as-is localhost:3005/files/../etc/passwd  # 403
//! ```
//!
//! The second argument is the address (`127.0.0.1:3005` by default).

use std::path::PathBuf;

use forkring::files::StaticDir;
use forkring::{Request, Response, Server};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().unwrap_or_else(|| ".".to_owned()));
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3005".to_owned());
    // Checked once here, so that a typo fails the start, not every request.
    StaticDir::new(&root)?;
    Server::builder().listen(listen).workers(1).serve(move || {
        // Each worker opens the directory once.
        let dir = StaticDir::new(&root).expect("the directory opened in the master");
        move |req: &Request<'_>, res: &mut Response| match req.path().strip_prefix("/files/") {
            Some(rest) => dir.serve(req, rest, res), // GET and HEAD; 405 otherwise
            None => {
                res.status(404).body("Not Found: try /files/<path>\n");
            }
        }
    })
}
