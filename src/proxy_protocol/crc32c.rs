//! CRC32C (Castagnoli), as RFC 4960 Appendix B defines it: what a PROXY v2 header's
//! `PP2_TYPE_CRC32C` TLV holds.
//!
//! Table-driven, one byte per step: a header is at most
//! [`MAX_HEADER_LEN`](super::MAX_HEADER_LEN) bytes and is checked once per connection, so
//! nothing faster is worth a dependency. The table is computed at compile time.

/// The Castagnoli polynomial, bit-reflected (RFC 4960 Appendix B; iSCSI's CRC).
const POLY_REFLECTED: u32 = 0x82F6_3B78;

/// The CRC of each byte value, for the byte-at-a-time loop in [`update`].
static TABLE: [u32; 256] = table();

/// The 256-entry table of the reflected polynomial, built by the bit-at-a-time definition.
const fn table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// Feeds `bytes` into a running CRC state (start at `!0`, finish with `!state`).
fn update(mut state: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        state = TABLE[usize::from((state as u8) ^ b)] ^ (state >> 8);
    }
    state
}

/// The CRC32C of `parts` concatenated: the header before the checksum field, four zero
/// bytes in its place, and the rest, without copying the header.
pub(crate) fn crc32c(parts: &[&[u8]]) -> u32 {
    !parts.iter().fold(!0, |state, part| update(state, part))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bit-at-a-time definition, as the naive model of the table-driven loop.
    fn naive(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLY_REFLECTED
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn check_value_of_the_catalogue() {
        // The "check" of CRC-32C in the CRC catalogue (CRC-32/ISCSI): the CRC of "123456789".
        assert_eq!(crc32c(&[b"123456789"]), 0xE306_9283);
        assert_eq!(crc32c(&[]), 0);
    }

    #[test]
    fn rfc_3720_test_vectors() {
        // iSCSI (RFC 3720 B.4), the same CRC: 32 bytes of zeros, of ones, ascending.
        assert_eq!(crc32c(&[&[0u8; 32]]), 0x8A91_36AA);
        assert_eq!(crc32c(&[&[0xFFu8; 32]]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&[&ascending]), 0x46DD_794E);
    }

    #[test]
    fn parts_are_one_stream_and_the_table_matches_the_bitwise_definition() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for cut in [0, 1, 7, 500, 999, 1000] {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(crc32c(&[a, b]), naive(&bytes), "cut at {cut}");
        }
    }
}
