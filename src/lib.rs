//! tabecho: a small, very fast TAB-delimited echo server on a single-threaded mio reactor.
pub mod addr;
pub mod client;
pub mod config;
pub mod frame;
pub mod load;
pub mod protocol;
pub mod server;
pub mod timer_wheel;
