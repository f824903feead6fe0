//! tokio-echo: the tab-echo protocol the way a tokio user would write it: a current-thread
//! runtime, a task per connection, `timeout(2 s, read)` per read, a 64 KiB frame limit.
//!
//! Usage: `tokio-echo [ADDR]` (default 127.0.0.1:0); prints `listening on ADDR` on stdout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const IDLE: Duration = Duration::from_secs(2);
const MAX_FRAME: usize = 64 * 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
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
        tokio::spawn(serve(stream));
    }
}

async fn serve(mut stream: TcpStream) {
    let mut input: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out: Vec<u8> = Vec::new();
    loop {
        let n = match tokio::time::timeout(IDLE, stream.read(&mut buf)).await {
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
