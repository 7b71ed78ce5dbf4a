//! Sans-io HTTP/1.1: bytes in, requests to a [`Handler`], framed response
//! bytes out.
//!
//! Nothing here moves bytes on a socket (a handler's
//! [`Request::peer_addr`] only asks the kernel for an address, when
//! called). A driver owns one [`Conn`] per connection
//! and one [`WorkerState`] per worker; it feeds received bytes to
//! [`Conn::on_read`] and sends what [`Conn::output`] holds. Tests and the
//! fuzzer drive the same code with byte slices.
//!
//! Where this module stops: it decides what to answer and when a connection
//! must close; the driver decides how bytes move and when to give up on a
//! peer (timeouts are carried here as deadlines, enforced there).

mod access;
mod admit;
mod answer;
mod body;
mod chunked;
mod conn;
mod date;
mod fields;
mod handler;
mod loop_admission;
mod mailbox;
mod request;
mod scan;
mod static_dir;
mod syntax;
mod worker_state;

pub(crate) use access::PeerNames;
pub use access::{request_reopen as reopen_access_log, AccessLog};
pub(crate) use admit::Codel;
pub use answer::{
    Completion, InvalidHeader, Refused, Responder, Response, Stream, StreamError, Upgraded, UpgradedStream,
    STREAM_QUEUE,
};
pub(crate) use answer::{Completions, Job, Spawner, UpgradeFn, UpgradePermit};
pub use body::{BodyFlow, BodyPlan, BodyReader, Resume};
pub use conn::{Conn, OUTPUT_HIGH_WATER};
pub use handler::Handler;
pub use request::{Addr, Headers, Request, Version};
pub use static_dir::{content_type, Refusal, StaticDir};
pub use worker_state::{WorkerState, DRAIN_IDLE_GRACE_MS};
