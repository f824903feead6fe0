//! tokio-echo: the tab-echo protocol the way a tokio user would write it: a current-thread
//! runtime, a task per connection, `timeout(2 s, read)` per read, a 64 KiB frame limit.
//!
//! Usage: `tokio-echo [ADDR] [IDLE]` (defaults 127.0.0.1:0 and 2s; IDLE in seconds);
//! prints `listening on ADDR` on stdout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The original's read deadline; the benchmark raises it to hold idle connections.
const DEFAULT_IDLE: Duration = Duration::from_secs(2);
const MAX_FRAME: usize = 64 * 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let idle = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_IDLE, Duration::from_secs);
    // The same backlog as tabecho and the ceiling (tokio's bind uses 1024).
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, idle));
    }
}

async fn serve(mut stream: TcpStream, idle: Duration) {
    let mut input: Vec<u8> = Vec::new();
    // 4 KiB: a common choice (tokio's BufReader uses 8 KiB).
    let mut buf = vec![0u8; 4 * 1024];
    let mut out: Vec<u8> = Vec::new();
    loop {
        let n = match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => n,
        };
        let scan_from = input.len();
        input.extend_from_slice(&buf[..n]);
        let mut start = 0;
        for end in memchr::memchr_iter(b'\t', &input[scan_from..]).map(|i| i + scan_from) {
            out.extend_from_slice(b"server got:");
            out.extend_from_slice(&input[start..end]);
            out.push(b'\t');
            start = end + 1;
        }
        input.drain(..start);
        if input.len() > MAX_FRAME {
            let _ = stream.write_all(&out).await;
            let _ = stream
                .write_all(format!("error: frame exceeds {MAX_FRAME} bytes\t").as_bytes())
                .await;
            return;
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}
