//! What a handler can give back, in one place: a whole [`Response`] (the
//! fast path), a deferred one through a [`Responder`], a streamed body fed
//! through a [`Stream`], a file body ([`Response::file`]), and the
//! hand-over of an upgraded connection ([`Upgraded`], with its place under
//! [`crate::Limits::max_upgraded`]). The bytes of each head are written
//! here ([`Response`]'s framing); when they are written, and what the
//! connection does around them, is the connection's.
//!
//! The files depend on each other one way: `response` names the kinds of
//! body (`pipe`, `file`, `upgrade`) and the word that says whether a
//! deferred request still waits (`live`); `stream` and `responder` name
//! the response, and add the methods that make their kind
//! ([`Response::stream`], [`Response::defer`]); `blocking` builds on the
//! responder ([`Response::blocking`]).

mod blocking;
mod file;
mod heads;
mod live;
mod pipe;
mod responder;
mod response;
mod stream;
mod upgrade;

pub(crate) use file::{plan as plan_file, FileBody, FileOut, Plan};
pub(crate) use heads::Heads;
pub(crate) use live::Live;
pub use pipe::StreamError;
pub(crate) use pipe::{frame_chunk, Pipe, Ready, LAST_CHUNK, STREAM_OUTPUT_ROOM};
pub use responder::{Refused, Responder};
pub(crate) use response::{fmt_u64, reason, Completions, Job, Kind, Outcome, Spawner};
pub use response::{Completion, InvalidHeader, Response};
pub use stream::{Stream, STREAM_QUEUE};
pub(crate) use upgrade::{UpgradeFn, UpgradePermit};
pub use upgrade::{Upgraded, UpgradedStream};
