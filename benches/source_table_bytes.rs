//! Heap bytes per source in the per-source connection table (`--max-connections-per-source`),
//! measured by counting what the allocator hands out, not computed.
//!
//! For N distinct sources (1 to 100,000) each with one connection admitted, it builds a
//! fresh [`SourceTable`] and reports the bytes the allocator holds for it, per source. A
//! hashbrown table is one allocation of `buckets x (entry + 1 control byte) + 16` bytes,
//! with `buckets` the power of two above N x 8/7, so the cost per source swings between
//! about 28.6 x 25/24 bytes (a full table) and twice that (just after it doubled). The
//! entry is a `(Source, u32)` of 24 bytes: a 20-byte [`Source`] (IPv4, IPv6 network or
//! uid, and its tag) and the 4-byte count. IPv4 and IPv6 sources are the same size.
//! It checks the measured bytes against that formula and exits 1 if they differ.
//!
//! Not counted here (see docs/PROTOCOL.md "Connections per source"): each reactor's 20
//! bytes per connection slot for the source of the connection in it, and the log memory of
//! refused sources (one entry per source refused in the last 10 s).
//!
//! Run: `cargo bench --bench source_table_bytes`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use tabecho::server::{Source, SourceTable};

/// The system allocator, counting the bytes it holds for the program.
struct Counting;

/// Bytes allocated and not yet freed.
static HELD: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to the system allocator unchanged, so this upholds its contract;
// the counting only reads the layouts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator, under the same contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// hashbrown's bucket count for `n` entries: 4 or 8 when small, else the power of two
/// above n x 8/7 (its load factor is 7/8).
fn buckets(n: usize) -> usize {
    match n {
        0 => 0,
        1..=3 => 4,
        4..=7 => 8,
        _ => (n * 8).div_ceil(7).next_power_of_two(),
    }
}

fn main() {
    let entry = std::mem::size_of::<(Source, u32)>();
    println!(
        "size_of::<Source>() = {}, entry (Source, u32) = {entry} bytes",
        std::mem::size_of::<Source>()
    );
    println!(
        "{:>8} {:>12} {:>12} {:>10}",
        "sources", "heap bytes", "formula", "per source"
    );
    let now = Instant::now();
    let mut failed = false;
    for n in [
        1, 10, 100, 1_000, 1_792, 1_793, 10_000, 14_336, 14_337, 100_000,
    ] {
        let before = HELD.load(Ordering::Relaxed);
        let mut table = SourceTable::new(1);
        for i in 0..n {
            let source = Source::V4(Ipv4Addr::from(0x0a00_0000 + i as u32));
            table.admit(source, now).expect("one connection per source");
        }
        let held = (HELD.load(Ordering::Relaxed) - before) as usize;
        let b = buckets(n);
        let formula = b * entry + b + 16;
        println!(
            "{n:>8} {held:>12} {formula:>12} {:>10.1}",
            held as f64 / n as f64
        );
        failed |= held != formula;
        drop(table);
    }
    if failed {
        println!("FAIL: the measured bytes differ from the formula");
        std::process::exit(1);
    }
}
