//! Self-describing blocks for the direct-I/O workload. Each unit of a file (512 bytes or
//! more) carries a header naming what it is — file id, offset, generation, seed — and the
//! CRC-32C of its payload, so a wrong read can be identified: a stale generation, a block of
//! another file or offset, a torn payload, zeroes, or garbage.
//!
//! Layout (little-endian): magic[8] file_id:u32 len:u32 offset:u64 generation:u64 seed:u64
//! payload_crc:u32 header_crc:u32, then `len - 48` payload bytes derived from the header.

use crate::fill::{fill, mix};
use crate::finding::{Finding, Kind};

pub const MAGIC: [u8; 8] = *b"WLDIOBK1";
pub const HEADER: usize = 48;
/// The smallest unit: one sector.
pub const MIN_UNIT: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockId {
    pub seed: u64,
    pub file_id: u32,
    /// File offset the unit belongs at.
    pub offset: u64,
    pub generation: u64,
}

/// Writes the unit `id` into `buf` (whose length is the unit size, 512..=u32::MAX).
pub fn write_block(buf: &mut [u8], id: BlockId) {
    debug_assert!(buf.len() >= MIN_UNIT && buf.len() <= u32::MAX as usize);
    let (head, payload) = buf.split_at_mut(HEADER);
    fill(
        payload,
        mix(&[id.seed, id.file_id as u64, id.offset, id.generation]),
    );
    head[0..8].copy_from_slice(&MAGIC);
    head[8..12].copy_from_slice(&id.file_id.to_le_bytes());
    head[12..16].copy_from_slice(&(HEADER as u32 + payload.len() as u32).to_le_bytes());
    head[16..24].copy_from_slice(&id.offset.to_le_bytes());
    head[24..32].copy_from_slice(&id.generation.to_le_bytes());
    head[32..40].copy_from_slice(&id.seed.to_le_bytes());
    head[40..44].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let hcrc = crc32c::crc32c(&head[..44]);
    head[44..48].copy_from_slice(&hcrc.to_le_bytes());
}

/// What a unit read back decodes as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    Zero,
    /// A valid header; `payload_ok` says whether the payload matches its CRC.
    Block {
        id: BlockId,
        len: u32,
        payload_ok: bool,
    },
    Unknown,
}

pub fn decode(buf: &[u8]) -> Decoded {
    if buf.iter().all(|b| *b == 0) {
        return Decoded::Zero;
    }
    if buf.len() < HEADER || buf[0..8] != MAGIC {
        return Decoded::Unknown;
    }
    let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    if crc32c::crc32c(&buf[..44]) != u32_at(44) {
        return Decoded::Unknown;
    }
    let len = u32_at(12);
    let id = BlockId {
        file_id: u32_at(8),
        offset: u64_at(16),
        generation: u64_at(24),
        seed: u64_at(32),
    };
    let payload_ok = (len as usize) == buf.len() && crc32c::crc32c(&buf[HEADER..]) == u32_at(40);
    Decoded::Block {
        id,
        len,
        payload_ok,
    }
}

/// Checks one unit read back at file offset `id.offset`: `found` is the whole unit, or its
/// beginning where the file ends early. `want` is the generation the model holds there, or
/// `None` where the file must read as zeroes. Returns what is wrong, with the first
/// differing byte's offset and the decoded identity of what was found.
pub fn check_unit(
    file: &str,
    found: &[u8],
    unit: usize,
    id: BlockId,
    want: Option<u64>,
) -> Option<Finding> {
    let mut expected = vec![0u8; unit.max(found.len())];
    if let Some(generation) = want {
        write_block(&mut expected[..unit], BlockId { generation, ..id });
    }
    let expected = &expected[..found.len()];
    if expected == found {
        return None;
    }
    let (kind, detail) = classify(found, id, want);
    Finding::compare(kind, file, id.offset, expected, found, || detail)
}

fn classify(found: &[u8], want_id: BlockId, want: Option<u64>) -> (Kind, String) {
    let what = match want {
        Some(g) => format!("expected generation {g} of this unit"),
        None => "expected zeroes".to_string(),
    };
    match (decode(found), want) {
        (Decoded::Zero, _) => (Kind::Zeroed, format!("zeroes; {what}")),
        (Decoded::Unknown, None) => (
            Kind::NonZero,
            format!("unrecognisable non-zero bytes; {what}"),
        ),
        (Decoded::Unknown, Some(_)) => (Kind::Corrupt, format!("unrecognisable bytes; {what}")),
        (
            Decoded::Block {
                id,
                len,
                payload_ok,
            },
            want,
        ) => {
            let crc = if payload_ok {
                ""
            } else {
                ", payload CRC mismatch"
            };
            let desc = format!(
                "block of file {} offset {} generation {} seed {:#x} len {len}{crc}",
                id.file_id, id.offset, id.generation, id.seed
            );
            let same_place = id.file_id == want_id.file_id
                && id.offset == want_id.offset
                && id.seed == want_id.seed;
            let kind = match want {
                None => Kind::NonZero,
                Some(_) if !same_place => Kind::Misplaced,
                Some(g) if id.generation < g => Kind::Stale,
                Some(g) if id.generation == g && !payload_ok => Kind::BadChecksum,
                Some(_) => Kind::Corrupt,
            };
            (kind, format!("{desc}; {what}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(generation: u64) -> BlockId {
        BlockId {
            seed: 0x5eed,
            file_id: 3,
            offset: 8192,
            generation,
        }
    }

    fn unit(generation: u64) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        write_block(&mut b, id(generation));
        b
    }

    #[test]
    fn round_trip() {
        let b = unit(7);
        assert_eq!(
            decode(&b),
            Decoded::Block {
                id: id(7),
                len: 4096,
                payload_ok: true
            }
        );
        assert_eq!(decode(&[0u8; 512]), Decoded::Zero);
        assert!(check_unit("f", &b, 4096, id(0), Some(7)).is_none());
        assert_ne!(unit(7)[HEADER..], unit(8)[HEADER..]);
    }

    #[test]
    fn classifies_what_it_finds() {
        let kind = |found: &[u8], want| check_unit("f", found, 4096, id(0), want).map(|f| f.kind);
        assert_eq!(kind(&unit(2), Some(5)), Some(Kind::Stale));
        assert_eq!(kind(&vec![0; 4096], Some(5)), Some(Kind::Zeroed));
        assert_eq!(kind(&unit(2), None), Some(Kind::NonZero));
        let mut other = vec![0u8; 4096];
        write_block(&mut other, BlockId { offset: 0, ..id(5) });
        assert_eq!(kind(&other, Some(5)), Some(Kind::Misplaced));
        let mut flipped = unit(5);
        flipped[1000] ^= 0x40;
        let f = check_unit("f", &flipped, 4096, id(0), Some(5)).unwrap();
        assert_eq!((f.kind, f.offset), (Kind::BadChecksum, 8192 + 1000));
        assert_eq!(f.found[0], f.expected[0] ^ 0x40);
        let mut header = unit(5);
        header[20] ^= 1;
        assert_eq!(kind(&header, Some(5)), Some(Kind::Corrupt));
    }
}
