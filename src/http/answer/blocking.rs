//! The short way to answer from the worker's blocking pool,
//! [`Response::blocking`]: defer, queue the work, and refuse at once when
//! either is full, so that a handler written the short way is also the
//! safe one under a flood.
//!
//! Where it stops: the pool itself is the worker's (this layer reaches it
//! through the [`super::response::Spawner`] the worker installs); what a
//! deferred answer does on the connection is the connection's.

use super::responder::{Refused, Responder};
use super::response::{Job, Response};

impl Response {
    /// Answers with what `f` returns, computed on one of the worker's
    /// blocking-pool threads ([`crate::Config::pool`]): the loop goes on
    /// at once, and `f` may block (a database client, a file compressed on
    /// the fly). The request is deferred, as with [`Response::defer`].
    ///
    /// Refusals are answered at once with `503` and `Retry-After: 1`
    /// (whatever the handler put in `self` is dropped): when the worker
    /// waits on [`crate::Limits::max_deferred`] requests already, when
    /// every pool thread is busy and [`crate::Config::pool_queue`] jobs
    /// wait, while the pool sheds because its jobs wait too long for a
    /// thread ([`crate::Admission`]), and outside a worker (no pool). When a thread takes the job
    /// and the request no longer waits for it (its connection closed, or
    /// it was answered `504` at [`crate::Timeouts::deferred`]), `f` is not
    /// called. A panic in `f` answers `500`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use forkring::{Request, Response, Server};
    ///
    /// Server::builder().serve(|| |req: &Request<'_>, res: &mut Response| {
    ///     let id = req.query().unwrap_or("").to_owned();
    ///     res.blocking(move || {
    ///         std::thread::sleep(Duration::from_millis(10)); // a blocking call
    ///         let mut res = Response::new();
    ///         res.body(format!("report {id}\n"));
    ///         res
    ///     });
    /// })
    /// # ;
    /// ```
    ///
    /// Called a second time for the same request it does nothing (the
    /// first call's answer stands) and logs an error.
    pub fn blocking<F>(&mut self, f: F)
    where
        F: FnOnce() -> Response + Send + 'static,
    {
        let responder = match self.try_defer() {
            Ok(r) => r,
            Err(Refused::AlreadyDeferred) => {
                log::error!("Response::blocking on a request deferred already; the work is dropped");
                return;
            }
            Err(why) => {
                log::debug!("blocking work refused: {why}; answering 503");
                self.unavailable();
                return;
            }
        };
        let Some(spawn) = self.spawner() else {
            log::debug!("blocking work outside a worker: no pool; answering 503");
            self.refuse_after_claim(responder);
            return;
        };
        let job: Job = Box::new(move || {
            // A request nobody waits on gets no work: the responder is
            // dropped, which posts nothing for it.
            if responder.is_live() {
                responder.send(f());
            }
        });
        if let Err(job) = spawn(job) {
            log::debug!("the blocking pool is full; answering 503");
            // The request stops waiting before the job (and the responder
            // in it) is dropped, so the responder posts nothing.
            self.withdraw_deferral();
            drop(job);
            self.unavailable();
        }
    }

    /// Undoes a granted deferral whose work cannot start, and answers `503`.
    fn refuse_after_claim(&mut self, responder: Responder) {
        self.withdraw_deferral();
        drop(responder);
        self.unavailable();
    }

    /// Answers `503` with `Retry-After: 1`.
    pub(crate) fn unavailable(&mut self) {
        self.set_error(503);
        self.runtime_header("Retry-After", b"1");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::super::response::{Completion, Completions, Outcome};
    use super::*;

    /// The jobs the test spawner queued.
    static QUEUED: Mutex<Vec<Job>> = Mutex::new(Vec::new());

    fn queue_it(job: Job) -> Result<(), Job> {
        QUEUED.lock().unwrap().push(job);
        Ok(())
    }

    fn full(job: Job) -> Result<(), Job> {
        Err(job)
    }

    fn offered(spawner: Option<super::super::response::Spawner>) -> (Arc<Completions>, Response) {
        let q = Arc::new(Completions::new(|| {}));
        let mut res = Response::new();
        res.set_queue(q.clone());
        if let Some(s) = spawner {
            res.set_spawner(s);
        }
        res.offer_deferral(true, 9, 3);
        (q, res)
    }

    fn retry_after(res: &mut Response) -> bool {
        let mut out = Vec::new();
        let (date, mut heads) = (crate::http::date::DateCache::new(), super::super::heads::Heads::default());
        res.write_to(&mut out, &date, &mut heads, false, false, false);
        String::from_utf8_lossy(&out).contains("\r\nRetry-After: 1\r\n")
    }

    #[test]
    fn without_a_pool_or_with_a_full_one_the_answer_is_503_at_once() {
        let ran = Arc::new(AtomicUsize::new(0));
        for spawner in [None, Some(full as super::super::response::Spawner)] {
            let (q, mut res) = offered(spawner);
            let r = ran.clone();
            res.blocking(move || {
                r.fetch_add(1, Ordering::Relaxed);
                Response::new()
            });
            assert!(!res.take_deferred(), "answered now, not deferred");
            assert_eq!(res.status_code(), 503);
            assert!(retry_after(&mut res));
            let mut batch = Vec::new();
            q.take(&mut batch);
            assert!(batch.is_empty(), "nothing posted for it: {batch:?}");
        }
        assert_eq!(ran.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn past_the_deferred_cap_the_answer_is_503_and_nothing_is_queued() {
        let q = Arc::new(Completions::new(|| {}));
        let mut res = Response::new();
        res.set_queue(q);
        res.set_spawner(full);
        res.offer_deferral(false, 9, 3);
        res.blocking(|| unreachable!("refused"));
        assert!(!res.take_deferred());
        assert_eq!(res.status_code(), 503);
        assert!(retry_after(&mut res));
    }

    #[test]
    fn queued_work_runs_while_its_request_waits_and_is_skipped_once_it_does_not() {
        let ran = Arc::new(AtomicUsize::new(0));
        let mut kept = Vec::new();
        for _ in 0..2 {
            let (q, mut res) = offered(Some(queue_it));
            let r = ran.clone();
            res.blocking(move || {
                r.fetch_add(1, Ordering::Relaxed);
                let mut res = Response::new();
                res.status(201);
                res
            });
            assert!(res.take_deferred(), "deferred");
            kept.push((q, res.take_live().expect("the word was made")));
        }
        let jobs: Vec<Job> = std::mem::take(&mut *QUEUED.lock().unwrap());
        assert_eq!(jobs.len(), 2);
        let mut jobs = jobs.into_iter();
        // The first request still waits: its work runs and its answer posts.
        jobs.next().unwrap()();
        let mut batch: Vec<Completion> = Vec::new();
        kept[0].0.take(&mut batch);
        assert!(matches!(&batch[..], [Completion { seq: 3, outcome: Outcome::Done(r), .. }] if r.status_code() == 201));
        // The second's client left before a thread took it: no work, no post.
        kept[1].1.clear();
        jobs.next().unwrap()();
        assert_eq!(ran.load(Ordering::Relaxed), 1, "the work of a request nobody waits on is skipped");
        batch.clear();
        kept[1].0.take(&mut batch);
        assert!(batch.is_empty());
    }
}
