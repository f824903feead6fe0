//! Integration tests: real sockets against a server started per test on port 0.
//!
//! One test binary; each module is one topic of docs/PROTOCOL.md:
//! - `protocol`: framing and replies (hello, empty frames, binary bytes, splits, pipelining)
//! - `limits`: frame limit, connection limit, backpressure, descriptor exhaustion
//! - `per_source`: the connection limit per source: by address, by uid, by IPv6 prefix
//! - `idle`: idle reaping bounds, trickled partial frames, active clients kept
//! - `faults`: half-close, resets
//! - `unix`: Unix stream sockets
//! - `process`: the built binary: signals, shutdown summary, CLI errors
//! - `bounds`: every flag whose value could overflow is refused, exit 2, naming the flag
//! - `sizes`: every size flag takes `128K`, `256MiB`; any other form is refused, exit 2
//! - `send`: `tabecho send` and the blocking `Client`: replies, stdin, every error exit
//! - `load`: `tabecho load`: verified runs, the wrong servers it must catch, `--churn`
//! - `faults_load`: `tabecho load --faults`: each misbehaving client's documented outcome
//! - `load_proxy`: `tabecho load --proxy-header`: each connection begins with a valid
//!   PROXY header naming its own source
//! - `proxy_protocol`: `--proxy-protocol-from`: v1 and v2 headers, split, followed by
//!   frames; every invalid header and a late one closed unanswered; `LOCAL`; a forged
//!   header from an untrusted peer answered as frames; the real source under the limit
//! - `proxy_haproxy`: behind a real HAProxy (`send-proxy-v2`, `send-proxy`): each real
//!   client under the per-source limit; without the PROXY protocol, one host shuts all out
//! - `memory`: what a peer can make the server hold; the buffer-memory budget
//! - `metrics`: `serve --metrics` and `tabecho stats`: exact counters, every metric present
//! - `metrics_http`: the endpoint on reactor 0's loop: keep-alive, `/ready`, every HTTP
//!   limit, the thread count
//! - `threads`: several reactors: the kernel's spread, the Unix deal, global limits, shutdown
//! - `systemd`: socket activation through `systemd-socket-activate`, the units' rules
//! - `upgrade`: SIGUSR2: the new process on the same sockets; a binary without the
//!   hand-over (the old one drains), failures
//! - `handover`: SIGUSR2 moves every connection: busy ones lose nothing, idle deadlines
//!   kept, the metrics listener moves too, a new process that dies or stalls
//! - `admin`: `serve --admin`: listings and closes against the real server beside a
//!   verified load, the socket's mode and who may use it, ids across an upgrade
//! - `conns`: `tabecho conns` and `conns close` against a stand-in admin endpoint on a Unix
//!   socket: the requests the server's parser reads back, the table, every exit code
//! - `cli_docs`: `tabecho man` and `tabecho completions` cover every subcommand and flag
//! - `docs`: README.md, docs/PROTOCOL.md and docs/OPERATIONS.md against the code: metrics,
//!   close reasons, flags and defaults, cited tests, links

mod admin;
mod bounds;
mod cli_docs;
mod conns;
mod docs;
mod faults;
mod faults_load;
mod handover;
mod idle;
mod limits;
mod load;
mod load_proxy;
mod memory;
mod metrics;
mod metrics_http;
mod per_source;
mod process;
mod protocol;
mod proxy_haproxy;
mod proxy_protocol;
mod send;
mod sizes;
mod systemd;
mod threads;
mod unix;
mod upgrade;
mod util;
