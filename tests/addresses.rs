//! `Request::peer_addr` and `Request::local_addr` on real sockets, over
//! IPv4 and IPv6 loopback, on both backends, through the demo's `GET /ip`.

mod common;

use common::{Client, Server};

fn check(server: &Server) {
    let mut c = Client::connect(server.addr);
    let mine = c.stream.local_addr().unwrap();
    let r = c.get("/ip");
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8(r.body).unwrap(), format!("{mine} -> {}\n", server.addr));
}

#[test]
fn peer_and_local_addresses_over_ipv4() {
    let server = Server::start(&["--workers", "1"]);
    check(&server);
}

#[test]
fn peer_and_local_addresses_over_ipv6() {
    let server = Server::start_on("[::1]:0", &["--workers", "1"]);
    check(&server);
}
