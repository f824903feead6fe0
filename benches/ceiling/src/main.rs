//! ceiling-echo: a minimal byte-echo server on tabecho's reactor skeleton, the ceiling that
//! tabecho is measured against. Same loop shape, same syscall pattern (edge-triggered,
//! short-read shortcut, one write per read, pending output kept per connection), and no
//! framing, no timers, no limits: whatever tabecho costs beyond this is framing and timers.
//!
//! Usage: `ceiling-echo [ADDR]` (default 127.0.0.1:0); prints `listening on ADDR` on
//! stdout, then serves until killed. It inherits its descriptor limit from the harness.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

const LISTENER: Token = Token(usize::MAX - 1);
const READ_BUF_SIZE: usize = 64 * 1024;
const READS_PER_EVENT: usize = 4;

struct Conn {
    stream: TcpStream,
    output: Vec<u8>,
    hangup: bool,
}

fn main() -> io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    let mut listener = TcpListener::from_std(socket.into());
    println!("listening on {}", listener.local_addr()?);

    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_BUF_SIZE];
    let mut ready: Vec<usize> = Vec::new();
    // (key, readable, writable) for this turn: the ready list, then the events.
    let mut work: Vec<(usize, bool, bool)> = Vec::new();
    loop {
        let timeout = if ready.is_empty() { None } else { Some(std::time::Duration::ZERO) };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        work.clear();
        work.extend(ready.drain(..).map(|k| (k, true, false)));
        for event in events.iter() {
            match event.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let entry = conns.vacant_entry();
                            poll.registry().register(
                                &mut stream,
                                Token(entry.key()),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            entry.insert(Conn { stream, output: Vec::new(), hangup: false });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                },
                Token(key) => {
                    let hangup = event.is_read_closed() || event.is_error();
                    if hangup {
                        if let Some(c) = conns.get_mut(key) {
                            c.hangup = true;
                        }
                    }
                    work.push((key, event.is_readable() || hangup, event.is_writable() || hangup));
                }
            }
        }
        for &(key, readable, writable) in &work {
            let Some(conn) = conns.get_mut(key) else { continue };
            let mut close = false;
            if writable && !conn.output.is_empty() {
                close = flush(conn).is_err();
            }
            if readable && !close {
                match echo(conn, &mut buf) {
                    Ok(Step::Wait) => {}
                    Ok(Step::Again) => ready.push(key),
                    Ok(Step::Eof) | Err(_) => close = true,
                }
            }
            if close {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
    }
}

enum Step {
    Wait,
    Again,
    Eof,
}

fn echo(conn: &mut Conn, buf: &mut [u8]) -> io::Result<Step> {
    for _ in 0..READS_PER_EVENT {
        let n = match conn.stream.read(buf) {
            Ok(0) => return Ok(Step::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Wait),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if conn.output.is_empty() {
            let mut written = 0;
            while written < n {
                match conn.stream.write(&buf[written..n]) {
                    Ok(w) => written += w,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            conn.output.extend_from_slice(&buf[written..n]);
        } else {
            conn.output.extend_from_slice(&buf[..n]);
        }
        if n < buf.len() && !conn.hangup {
            return Ok(Step::Wait);
        }
    }
    Ok(Step::Again)
}

fn flush(conn: &mut Conn) -> io::Result<()> {
    let mut written = 0;
    while written < conn.output.len() {
        match conn.stream.write(&conn.output[written..]) {
            Ok(w) => written += w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    conn.output.drain(..written);
    if conn.output.is_empty() {
        conn.output = Vec::new();
    }
    Ok(())
}
