//! [`Events`]: the receiving end of [`crate::Server::events`], a channel of
//! the master's lifecycle events that any thread of the program can read.
//!
//! The channel underneath is an implementation detail: the type offers what
//! `std::sync::mpsc::Receiver` offers, with std's error types, so the
//! crate that carries it can change without changing forkring's API.
//! Where it stops: which events exist and when they are sent is
//! [`super::events`]' business.

use std::fmt;
use std::sync::mpsc::{RecvError, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use super::Event;

/// The master's [`Event`]s, in the order the master loop delivered them,
/// from [`crate::Server::events`].
///
/// Every event sent after the channel was asked for is delivered (the
/// channel is unbounded; while a reader falls behind by more than a
/// thousand events the master stops reading worker messages, so a slow
/// reader slows the cluster's messages down instead of growing without
/// bound). The channel closes when the master loop ends, that is when
/// [`crate::Server::serve`] returns: [`Events::recv`] then answers
/// `Err(RecvError)` and iterating ends.
///
/// Reading from another thread of the master process is what this type is
/// for; start workers with [`crate::Server::reexec`] then (see the
/// [`Server`](crate::Server) docs: a plain fork from a process with threads
/// is refused).
///
/// ```no_run
/// use forkring::{Event, Request, Response, Server};
///
/// fn main() -> std::io::Result<()> {
///     let mut server = Server::builder().workers(2).reexec(true);
///     let events = server.events();
///     let logger = std::thread::spawn(move || {
///         for event in &events {
///             if let Event::Exit { worker, status, .. } = event {
///                 eprintln!("worker {worker} ended: {status:?}");
///             }
///         }
///     });
///     server.serve(|| |_: &Request<'_>, res: &mut Response| {
///         res.body("hello\n");
///     })?;
///     // The channel closed with the master loop: the thread ends.
///     logger.join().unwrap();
///     Ok(())
/// }
/// ```
pub struct Events {
    rx: crossbeam_channel::Receiver<Event>,
}

impl Events {
    pub(crate) fn new(rx: crossbeam_channel::Receiver<Event>) -> Events {
        Events { rx }
    }

    /// Waits for the next event; `Err(RecvError)` once the master loop has
    /// ended and every event before that was read.
    pub fn recv(&self) -> Result<Event, RecvError> {
        self.rx.recv().map_err(|_| RecvError)
    }

    /// The next event if one is waiting: `Err(TryRecvError::Empty)` if none
    /// is, `Err(TryRecvError::Disconnected)` once the master loop has ended
    /// and every event was read.
    pub fn try_recv(&self) -> Result<Event, TryRecvError> {
        self.rx.try_recv().map_err(|e| match e {
            crossbeam_channel::TryRecvError::Empty => TryRecvError::Empty,
            crossbeam_channel::TryRecvError::Disconnected => TryRecvError::Disconnected,
        })
    }

    /// Waits at most `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event, RecvTimeoutError> {
        self.rx.recv_timeout(timeout).map_err(timeout_error)
    }

    /// Waits until `deadline` at most for the next event.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Event, RecvTimeoutError> {
        self.rx.recv_deadline(deadline).map_err(timeout_error)
    }

    /// The events as they come, waiting for each; ends when the master loop
    /// has ended.
    pub fn iter(&self) -> EventsIter<'_> {
        EventsIter { events: self }
    }

    /// The events waiting now, without waiting for more.
    pub fn try_iter(&self) -> EventsTryIter<'_> {
        EventsTryIter { events: self }
    }

    /// How many events wait to be read.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no event waits to be read.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

fn timeout_error(e: crossbeam_channel::RecvTimeoutError) -> RecvTimeoutError {
    match e {
        crossbeam_channel::RecvTimeoutError::Timeout => RecvTimeoutError::Timeout,
        crossbeam_channel::RecvTimeoutError::Disconnected => RecvTimeoutError::Disconnected,
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").field("waiting", &self.rx.len()).finish_non_exhaustive()
    }
}

/// The events as they come ([`Events::iter`]); ends when the master loop has
/// ended.
#[derive(Debug)]
pub struct EventsIter<'a> {
    events: &'a Events,
}

impl Iterator for EventsIter<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.events.recv().ok()
    }
}

/// The events waiting now ([`Events::try_iter`]).
#[derive(Debug)]
pub struct EventsTryIter<'a> {
    events: &'a Events,
}

impl Iterator for EventsTryIter<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

/// The events as they come, owning the channel ([`Events`] as an iterator).
#[derive(Debug)]
pub struct EventsIntoIter {
    events: Events,
}

impl Iterator for EventsIntoIter {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.events.recv().ok()
    }
}

impl IntoIterator for Events {
    type Item = Event;
    type IntoIter = EventsIntoIter;

    fn into_iter(self) -> EventsIntoIter {
        EventsIntoIter { events: self }
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = Event;
    type IntoIter = EventsIter<'a>;

    fn into_iter(self) -> EventsIter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::WorkerId;

    fn online(slot: usize) -> Event {
        Event::Online { worker: WorkerId { slot, generation: 0 }, pid: 1 }
    }

    #[test]
    fn receives_in_order_then_ends_when_the_sender_is_gone() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let events = Events::new(rx);
        assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(events.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Timeout));
        tx.send(online(0)).unwrap();
        tx.send(online(1)).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events.try_iter().collect::<Vec<_>>(), vec![online(0), online(1)]);
        assert!(events.is_empty());
        tx.send(online(2)).unwrap();
        drop(tx);
        assert_eq!(events.recv(), Ok(online(2)));
        assert_eq!(events.recv(), Err(RecvError));
        assert_eq!(events.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(events.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Disconnected));
        assert_eq!(events.into_iter().count(), 0);
    }
}
