//! Integration tests: real sockets against a server started per test on port 0.
//!
//! One test binary; each module is one topic of docs/PROTOCOL.md:
//! - `protocol`: framing and replies (hello, empty frames, binary bytes, splits, pipelining)
//! - `limits`: frame limit, connection limit, backpressure, descriptor exhaustion
//! - `idle`: idle reaping bounds, trickled partial frames, active clients kept
//! - `faults`: half-close, resets
//! - `unix`: Unix stream sockets
//! - `process`: the built binary: signals, shutdown summary, CLI errors

mod faults;
mod idle;
mod limits;
mod process;
mod protocol;
mod unix;
mod util;
