//! Scenario 8: message flood. NOT BUILT YET: it is to be written on the
//! master/worker messaging API (shared-memory rings).
//!
//! What it is to do: workers and master exchange
//! ring messages at full speed (every worker sending to the master, the
//! master broadcasting back), while the HTTP load of the other scenarios
//! runs; bounds: no lost message (every message sent is received, in order
//! per sender; a `Full` answer is backpressure, retried, never a drop) and
//! the HTTP p99 within 2x of the same load without the flood. The demo
//! server needs a way to start the flood and to report the counts (sent,
//! received, `Full` answers per worker); the harness then reads them like
//! the other figures.
//!
//! To add it: write `fn run(ctx: &Ctx, target: Target) -> Result<Outcome,
//! String>` here, set [`RUN`] to `Some(run)` and clear [`MISSING`]. Nothing
//! else in the harness changes: the scenario table in `mod.rs` already
//! lists scenario 8 and prints its line.

use super::Run;

/// The run, once it exists.
pub const RUN: Option<Run> = None;

/// Why scenario 8 does not run yet (printed on its line).
pub const MISSING: &str =
    "not built yet: to be written on the master/worker messaging API (tools/src/scenarios/flood.rs)";
