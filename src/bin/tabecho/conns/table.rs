//! The listing as `tabecho conns` prints it: an aligned table like `ss`, sizes and
//! durations as people read them.

use std::time::Duration;

use tabecho::admin::ConnectionRow;

/// A duration as a person reads it in a table: `250ms`, `12.3s`, `4m05s`, `3h07m`, `2d04h`.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60 {
        // Tenths, rounded down so that 59.96 s stays under a minute.
        format!("{secs}.{}s", d.subsec_millis() / 100)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600)
    }
}

/// A byte count as a person reads it in a table, as `ls -h` prints it: bytes below 1 KiB
/// (`812B`), else in the largest binary unit it reaches, exact (`32KiB`) or to a tenth,
/// rounded down (`160.0KiB` for 163,916 bytes).
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut unit = 1024u64;
    let mut name = UNITS[0];
    for next in &UNITS[1..] {
        if bytes / unit < 1024 {
            break;
        }
        unit *= 1024;
        name = next;
    }
    if bytes.is_multiple_of(unit) {
        return format!("{}{name}", bytes / unit);
    }
    // Tenths, rounded down (as the durations): never a unit's 1024.0.
    let tenths = u128::from(bytes) * 10 / u128::from(unit);
    format!("{}.{}{name}", tenths / 10, tenths % 10)
}

/// The rows as an aligned table, one line each under a header, in the order given. The
/// `PEER` column is shown only when a row's peer differs from its client (a PROXY
/// header named the client).
pub(super) fn table(rows: &[ConnectionRow]) -> String {
    let with_peer = rows.iter().any(|r| r.peer != r.client);
    // Each column: its header, whether it is right-aligned (numbers), its cells.
    let mut columns: Vec<(&str, bool, Vec<String>)> = Vec::new();
    let mut column = |name: &'static str, right: bool, cell: &dyn Fn(&ConnectionRow) -> String| {
        columns.push((name, right, rows.iter().map(cell).collect()));
    };
    column("ID", true, &|r| r.id.to_string());
    column("R", true, &|r| r.reactor.to_string());
    column("STATE", false, &|r| r.state.name().to_string());
    column("CLIENT", false, &|r| r.client.clone());
    if with_peer {
        column("PEER", false, &|r| r.peer.clone());
    }
    column("LOCAL", false, &|r| r.local.clone());
    column("AGE", true, &|r| human_duration(r.age));
    column("IDLE", true, &|r| human_duration(r.idle));
    column("MEMORY", true, &|r| size(r.memory));
    column("INPUT", true, &|r| size(r.input_held));
    column("OUTPUT", true, &|r| size(r.output_pending));
    column("KERNEL", true, &|r| size(r.kernel_charge));
    column("IN", true, &|r| r.bytes_in.map_or_else(|| "-".into(), size));
    column("OUT", true, &|r| {
        r.bytes_out.map_or_else(|| "-".into(), size)
    });
    let widths: Vec<usize> = columns
        .iter()
        .map(|(name, _, cells)| {
            cells
                .iter()
                .map(|c| c.chars().count())
                .chain([name.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cell: &dyn Fn(usize) -> String| {
        let cells: Vec<String> = columns
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, ((_, right, _), &w))| {
                if *right {
                    format!("{:>w$}", cell(i))
                } else {
                    format!("{:<w$}", cell(i))
                }
            })
            .collect();
        format!("{}\n", cells.join("  ").trim_end())
    };
    let mut out = line(&|i| columns[i].0.to_string());
    for row in 0..rows.len() {
        out += &line(&|i| columns[i].2[row].clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabecho::admin::ConnState;

    fn row(id: u64, client: &str, peer: &str) -> ConnectionRow {
        ConnectionRow {
            id,
            reactor: 0,
            client: client.into(),
            peer: peer.into(),
            local: "127.0.0.1:8085".into(),
            age: Duration::from_secs(65),
            idle: Duration::from_millis(1500),
            state: ConnState::Paused,
            input_held: 0,
            output_pending: 32 * 1024,
            kernel_charge: 163_916,
            memory: 32 * 1024 + 163_916,
            bytes_in: Some(1024),
            bytes_out: Some(2048),
        }
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let ms = Duration::from_millis;
        assert_eq!(human_duration(Duration::ZERO), "0ms");
        assert_eq!(human_duration(ms(250)), "250ms");
        assert_eq!(human_duration(ms(999)), "999ms");
        assert_eq!(human_duration(ms(1000)), "1.0s");
        assert_eq!(human_duration(ms(12_345)), "12.3s");
        assert_eq!(human_duration(ms(59_999)), "59.9s");
        assert_eq!(human_duration(ms(60_000)), "1m00s");
        assert_eq!(human_duration(ms(245_000)), "4m05s");
        assert_eq!(
            human_duration(Duration::from_secs(3600 * 3 + 7 * 60 + 59)),
            "3h07m"
        );
        assert_eq!(
            human_duration(Duration::from_secs(86_400 * 2 + 4 * 3600)),
            "2d04h"
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(1023), "1023B");
        assert_eq!(size(1024), "1KiB");
        assert_eq!(size(1536), "1.5KiB");
        assert_eq!(size(163_916), "160.0KiB");
        assert_eq!(size(560_936), "547.7KiB");
        assert_eq!(size(1024 * 1024 - 1), "1023.9KiB");
        assert_eq!(size(512 * 1024), "512KiB");
        assert_eq!(size(3 * 1024 * 1024 + 300 * 1024), "3.2MiB");
        assert_eq!(size(5 << 30), "5GiB");
        assert_eq!(size(u64::MAX), "16383.9PiB");
    }

    #[test]
    fn the_table_aligns_its_columns_and_shows_peers_only_behind_a_proxy() {
        let direct = [
            row(7, "127.0.0.5:40001", "127.0.0.5:40001"),
            row(12, "127.0.0.5:40002", "127.0.0.5:40002"),
        ];
        let text = table(&direct);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "ID  R  STATE   CLIENT           LOCAL             AGE  IDLE    MEMORY  INPUT  OUTPUT    KERNEL    IN   OUT",
                " 7  0  paused  127.0.0.5:40001  127.0.0.1:8085  1m05s  1.5s  192.0KiB     0B   32KiB  160.0KiB  1KiB  2KiB",
                "12  0  paused  127.0.0.5:40002  127.0.0.1:8085  1m05s  1.5s  192.0KiB     0B   32KiB  160.0KiB  1KiB  2KiB",
            ]
        );
        assert!(!text.contains("PEER"));
        let proxied = [row(7, "203.0.113.9:5000", "127.0.0.1:40001")];
        let text = table(&proxied);
        assert!(
            text.lines()
                .next()
                .unwrap()
                .contains("CLIENT            PEER"),
            "{text}"
        );
        assert!(text.contains("203.0.113.9:5000  127.0.0.1:40001"), "{text}");
        assert_eq!(table(&[]).lines().count(), 1, "the header alone");
    }
}
