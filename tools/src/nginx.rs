//! nginx, the anchor of every harness: finding it, and the one
//! configuration builder behind `make bench`'s, `make stress`'s and
//! `make scale`'s nginx.
//!
//! Every configuration serves what forkring's test fixture serves for the
//! workload at hand: `GET /` answered `200 Hello, World!` with
//! `access_log off` and keep-alive for up to a million requests, everything
//! else 404; optionally `/ready` (the fleet's balancer checks it), `POST
//! /echo` (through the echo module), files under `/files/` (with
//! `sendfile`) and paths passed on to a server behind (`proxy_pass`). Every path it writes (pid file, temporary files) lies in
//! the run's own directory, so nginx needs nothing of the system's.
//!
//! Where it stops: the text of the configuration. Starting nginx and
//! waiting for it is the caller's (the stress harness's `servers`, the
//! fleet's hosts, `bench/run.sh`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::procs;

/// Finds nginx: `$NGINX`, else on `PATH`, else `/usr/sbin/nginx`.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NGINX") {
        return Some(PathBuf::from(p));
    }
    procs::find_on_path("nginx").or_else(|| {
        let p = PathBuf::from("/usr/sbin/nginx");
        p.exists().then_some(p)
    })
}

/// nginx's version string, e.g. `nginx/1.22.1`.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().trim_start_matches("nginx version: ").to_owned())
        .unwrap_or_else(|_| "nginx".into())
}

/// How a configuration answers `POST /echo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Echo {
    /// With the request's body, through the echo module at this path
    /// (Debian: libnginx-mod-http-echo).
    Module(PathBuf),
    /// With 501: this nginx has no echo module.
    Missing,
}

/// Paths nginx passes on to another HTTP server (`proxy_pass`), over
/// keep-alive connections to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    /// The server behind, `IP:PORT`.
    pub upstream: String,
    /// Idle keep-alive connections to it each worker keeps (`keepalive`;
    /// more are opened while more requests are in flight).
    pub keepalive: usize,
    /// The paths passed on, each an exact match (the query goes along).
    pub paths: Vec<String>,
}

/// One nginx configuration. [`Conf::new`] gives the settings every harness
/// shares; the fields change what a harness needs otherwise.
#[derive(Clone, Debug)]
pub struct Conf {
    /// The run's directory: the pid file and every temporary path go here.
    pub dir: PathBuf,
    /// The error log.
    pub error_log: PathBuf,
    /// Its level (`warn`, `notice`).
    pub error_level: &'static str,
    /// The `listen` address, `IP:PORT`.
    pub listen: String,
    /// `reuseport` on the listener: one socket per worker, as forkring's
    /// default (`--balance reuseport`) has.
    pub reuseport: bool,
    /// `worker_processes`.
    pub workers: usize,
    /// `worker_connections`.
    pub connections: usize,
    /// `worker_rlimit_nofile`, where the connections need more open files
    /// than the limit nginx inherits.
    pub rlimit_nofile: Option<usize>,
    /// `daemon on`: the master forks into the background (and takes
    /// SIGUSR2, the binary upgrade, only then).
    pub daemon: bool,
    /// `client_header_timeout`, when not nginx's default.
    pub header_timeout: Option<Duration>,
    /// `GET /ready` answered 200, for a balancer's health check.
    pub ready_route: bool,
    /// `POST /echo`, when served at all.
    pub echo: Option<Echo>,
    /// Files served under `/files/` from this directory.
    pub files: Option<PathBuf>,
    /// `POST /upload` spooled: nginx reads the whole body (to disk past
    /// 16 KiB, each body its own temporary file, at most 16 MiB) before
    /// it hands it to a second server on a Unix socket in `dir`, which
    /// answers `200`. A slow body then costs its own connection only.
    pub spool_uploads: bool,
    /// Paths passed on to another server.
    pub proxy: Option<Proxy>,
}

impl Conf {
    /// `workers` workers listening on `listen`, 4,096 connections each,
    /// in the foreground, the error log at `notice` in `dir`, only `GET /`.
    pub fn new(dir: &Path, listen: String, workers: usize) -> Conf {
        Conf {
            dir: dir.to_path_buf(),
            error_log: dir.join("nginx-error.log"),
            error_level: "notice",
            listen,
            reuseport: false,
            workers,
            connections: 4096,
            rlimit_nofile: None,
            daemon: false,
            header_timeout: None,
            ready_route: false,
            echo: None,
            files: None,
            spool_uploads: false,
            proxy: None,
        }
    }

    /// The Unix socket of the server behind `/upload` ([`Conf::spool_uploads`]).
    pub fn upload_socket(&self) -> PathBuf {
        self.dir.join("upload.sock")
    }

    /// The pid file nginx writes.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("nginx.pid")
    }

    /// The configuration's text for the nginx binary `bin` (asked which
    /// modules it was built without, so that no temporary path of a module
    /// it lacks is named).
    pub fn render(&self, bin: &Path) -> String {
        let mut c = String::new();
        if let Some(Echo::Module(m)) = &self.echo {
            let _ = writeln!(c, "load_module {};", m.display());
        }
        // As root, nginx would switch its workers to `nobody`, which cannot
        // enter the run's private directory.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            c.push_str("user root;\n");
        }
        let _ = writeln!(c, "worker_processes {};", self.workers);
        if let Some(n) = self.rlimit_nofile {
            let _ = writeln!(c, "worker_rlimit_nofile {n};");
        }
        let _ = writeln!(c, "daemon {};", if self.daemon { "on" } else { "off" });
        c.push_str("master_process on;\n");
        let _ = writeln!(c, "pid {};", self.pid_file().display());
        let _ = writeln!(c, "error_log {} {};", self.error_log.display(), self.error_level);
        let _ = write!(c, "\nevents {{\n    worker_connections {};\n}}\n\n", self.connections);
        c.push_str(
            "http {
    access_log off;
    server_tokens off;
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
",
        );
        if let Some(t) = self.header_timeout {
            let _ = writeln!(c, "    client_header_timeout {}ms;", t.as_millis());
        }
        c.push_str(&temp_paths(bin, &self.dir));
        if let Some(p) = &self.proxy {
            let _ = write!(
                c,
                "
    upstream backend {{
        server {};
        keepalive {};
    }}
",
                p.upstream, p.keepalive
            );
        }
        let reuseport = if self.reuseport { " reuseport" } else { "" };
        let _ = write!(
            c,
            "
    server {{
        listen {} backlog=4096{reuseport};

        location = / {{
            return 200 \"Hello, World!\";
        }}
",
            self.listen
        );
        if self.ready_route {
            c.push_str(
                "
        location = /ready {
            return 200 \"ready\";
        }
",
            );
        }
        match &self.echo {
            Some(Echo::Module(_)) => c.push_str(
                "
        location = /echo {
            # Read the whole body into one memory buffer, then send it back.
            client_body_buffer_size 64k;
            client_body_in_single_buffer on;
            echo_read_request_body;
            echo_request_body;
        }
",
            ),
            Some(Echo::Missing) => c.push_str("\n        location = /echo { return 501; }\n"),
            None => {}
        }
        if let Some(files) = &self.files {
            let _ = write!(
                c,
                "
        location /files/ {{
            alias {}/;
            sendfile on;
            tcp_nopush on;
        }}
",
                files.display()
            );
        }
        for path in self.proxy.iter().flat_map(|p| &p.paths) {
            // HTTP/1.1 without `Connection: close`: the upstream's
            // connections are kept alive.
            let _ = write!(
                c,
                "
        location = {path} {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
"
            );
        }
        if self.spool_uploads {
            let _ = write!(
                c,
                "
        location = /upload {{
            client_max_body_size 16m;
            client_body_buffer_size 16k;
            proxy_request_buffering on;
            proxy_pass http://unix:{}:/stored;
        }}
",
                self.upload_socket().display()
            );
        }
        let _ = write!(c, "\n        location / {{\n            return 404;\n        }}\n    }}\n");
        if self.spool_uploads {
            let _ = write!(
                c,
                "
    server {{
        listen unix:{};

        location / {{
            return 200 \"stored\";
        }}
    }}
",
                self.upload_socket().display()
            );
        }
        c.push_str("}\n");
        c
    }
}

/// The `*_temp_path` lines that keep every temporary file of `bin` inside
/// `dir`: one per module this nginx was built with (`nginx -V`), the
/// client-body one always.
fn temp_paths(bin: &Path, dir: &Path) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bench_configuration_names_every_route_and_keeps_its_paths_in_its_directory() {
        let dir = Path::new("/tmp/run");
        let mut c = Conf::new(dir, "127.0.0.1:8080".into(), 2);
        c.reuseport = true;
        c.echo = Some(Echo::Missing);
        c.files = Some(PathBuf::from("/tmp/run/static"));
        c.header_timeout = Some(Duration::from_millis(2000));
        c.rlimit_nofile = Some(9000);
        // No nginx binary: every module's temporary path is named.
        let text = c.render(Path::new("/nonexistent/nginx"));
        for want in [
            "worker_processes 2;",
            "worker_rlimit_nofile 9000;",
            "daemon off;",
            "pid /tmp/run/nginx.pid;",
            "error_log /tmp/run/nginx-error.log notice;",
            "worker_connections 4096;",
            "client_header_timeout 2000ms;",
            "client_body_temp_path /tmp/run/client_body;",
            "scgi_temp_path /tmp/run/scgi;",
            "listen 127.0.0.1:8080 backlog=4096 reuseport;",
            "return 200 \"Hello, World!\";",
            "location = /echo { return 501; }",
            "alias /tmp/run/static/;",
            "return 404;",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        assert!(!text.contains("/ready"));
        assert!(!text.contains("/upload"));
        assert!(!text.contains("load_module"));
        assert!(!text.contains("upstream"));
        assert_eq!(text.matches('{').count(), text.matches('}').count(), "balanced blocks");
    }

    #[test]
    fn proxied_paths_go_to_one_upstream_over_kept_alive_connections() {
        let mut c = Conf::new(Path::new("/tmp/run"), "127.0.0.1:8080".into(), 1);
        c.proxy = Some(Proxy {
            upstream: "127.0.0.1:9000".into(),
            keepalive: 64,
            paths: vec!["/sleep".into(), "/spin".into()],
        });
        let text = c.render(Path::new("/nonexistent/nginx"));
        for want in [
            "upstream backend {\n        server 127.0.0.1:9000;\n        keepalive 64;\n    }",
            "location = /sleep {\n            proxy_pass http://backend;",
            "location = /spin {\n            proxy_pass http://backend;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "return 200 \"Hello, World!\";",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        assert_eq!(text.matches("proxy_pass").count(), 2);
        assert_eq!(text.matches('{').count(), text.matches('}').count(), "balanced blocks");
    }

    #[test]
    fn the_echo_module_is_loaded_where_it_answers() {
        let mut c = Conf::new(Path::new("/d"), "10.0.0.1:80".into(), 1);
        c.echo = Some(Echo::Module(PathBuf::from("/m/ngx_http_echo_module.so")));
        c.ready_route = true;
        c.daemon = true;
        let text = c.render(Path::new("/nonexistent/nginx"));
        assert!(text.starts_with("load_module /m/ngx_http_echo_module.so;\n"));
        assert!(text.contains("echo_request_body;"));
        assert!(text.contains("location = /ready"));
        assert!(text.contains("daemon on;"));
        assert!(!text.contains("reuseport"));
    }

    #[test]
    fn spooled_uploads_go_to_a_second_server_on_a_socket_in_the_run_directory() {
        let mut c = Conf::new(Path::new("/tmp/run"), "127.0.0.1:8080".into(), 1);
        c.spool_uploads = true;
        let text = c.render(Path::new("/nonexistent/nginx"));
        for want in [
            "location = /upload {",
            "proxy_request_buffering on;",
            "proxy_pass http://unix:/tmp/run/upload.sock:/stored;",
            "listen unix:/tmp/run/upload.sock;",
            "client_body_temp_path /tmp/run/client_body;",
            "proxy_temp_path /tmp/run/proxy;",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        assert_eq!(text.matches("server {").count(), 2);
        assert_eq!(text.matches('{').count(), text.matches('}').count(), "balanced blocks");
    }
}
