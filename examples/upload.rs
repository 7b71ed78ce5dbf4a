//! A request body taken in pieces as it arrives: `Handler::on_head` sees
//! the head before any of the body is read and chooses
//! `BodyPlan::Stream(reader)`; the reader gets each piece (de-chunked) on
//! the loop and answers at the end with the body's length and Adler-32
//! checksum, keeping none of it. `BodyFlow::pause` stops the connection
//! reading (the client's send blocks once the kernel's buffers fill) until
//! the `Resume` it returns is used; `?pause=MS` pauses after every piece.
//! A declared length over 1 GiB is refused before the body is sent.
//!
//! ```text
//! cargo run --example upload                                    # 127.0.0.1:3006
//! head -c 100M /dev/urandom > /tmp/big
//! curl -T /tmp/big localhost:3006/                               # {"length": 104857600, "adler32": "…"}
//! python3 -c 'import zlib; print("%08x" % zlib.adler32(open("/tmp/big","rb").read()))'  # the same
//! curl -T /tmp/big 'localhost:3006/?pause=20'                    # slowly: one piece every 20 ms
//! curl -H 'Content-Length: 9999999999' -d x localhost:3006/      # 413 at once
//! ```

use std::time::Duration;

use forkring::{BodyFlow, BodyPlan, BodyReader, Handler, Request, Response, Server};

/// Largest body taken.
const MAX: u64 = 1 << 30;

/// The reader of one body.
struct Upload {
    /// Bytes so far.
    length: u64,
    /// Adler-32's two sums.
    a: u32,
    b: u32,
    /// Milliseconds to pause after each piece.
    pause: u64,
}

impl BodyReader for Upload {
    fn data(&mut self, piece: &[u8], flow: &mut BodyFlow<'_>) {
        self.length += piece.len() as u64;
        if self.length > MAX {
            flow.stop(413); // a chunked body that grew too large
            return;
        }
        for &byte in piece {
            self.a = (self.a + u32::from(byte)) % 65_521;
            self.b = (self.b + self.a) % 65_521;
        }
        if self.pause > 0 {
            // Nothing more arrives until `resume` runs (or is dropped).
            let resume = flow.pause();
            forkring::worker::after(Duration::from_millis(self.pause), move || resume.resume());
        }
    }

    fn end(&mut self, _req: &Request<'_>, res: &mut Response) {
        let sum = (self.b << 16) | self.a;
        res.header("Content-Type", "application/json")
            .body(format!("{{\"length\": {}, \"adler32\": \"{sum:08x}\"}}\n", self.length));
    }
}

struct App;

impl Handler for App {
    fn on_head(&mut self, req: &Request<'_>) -> BodyPlan {
        let declared = req.header("Content-Length").and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX) {
            // Sent instead of `100 Continue`; the body is never read.
            let mut res = Response::new();
            res.status(413).body("bodies are limited to 1 GiB\n");
            return BodyPlan::Refuse(res);
        }
        let pause = req.query().and_then(|q| q.strip_prefix("pause=")?.parse().ok()).unwrap_or(0).min(10_000);
        BodyPlan::Stream(Box::new(Upload { length: 0, a: 1, b: 0, pause }))
    }

    /// Requests without a body.
    fn handle(&mut self, _req: &Request<'_>, res: &mut Response) {
        res.body("send a body: curl -T FILE localhost:3006/\n");
    }
}

fn main() -> std::io::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3006".to_owned());
    Server::builder().listen(listen).workers(1).serve(|| App)
}
