//! What every file of the direct-I/O workload must contain: its size and the generation
//! of each written unit. Everything else below the size reads as zeroes. Serialised as the
//! manifest, so `workloads verify dio` can check a directory later (after a remount, a
//! reboot, a crash).

use crate::block::BlockId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileModel {
    pub id: u32,
    /// Path relative to the workload's directory.
    pub name: String,
    /// Unit size: 4096, or 512 for the sector file. Offsets and sizes are multiples of it.
    pub unit: u32,
    pub size: u64,
    /// Generation of every written unit, by offset.
    pub blocks: BTreeMap<u64, u64>,
    /// Generations only grow, so a stale unit is never mistaken for a current one.
    pub next_generation: u64,
}

impl FileModel {
    pub fn new(id: u32, name: &str, unit: u32) -> Self {
        Self {
            id,
            name: name.into(),
            unit,
            size: 0,
            blocks: BTreeMap::new(),
            next_generation: 1,
        }
    }

    pub fn unit(&self) -> u64 {
        self.unit as u64
    }

    /// The identity of the unit at `offset` (generation filled in by the caller).
    pub fn block_id(&self, seed: u64, offset: u64, generation: u64) -> BlockId {
        BlockId {
            seed,
            file_id: self.id,
            offset,
            generation,
        }
    }

    /// Generations a write of `units` units would get (not yet applied).
    pub fn generations(&self, units: u64) -> std::ops::Range<u64> {
        self.next_generation..self.next_generation + units
    }

    /// A write of `units` units at `offset` completed, with generations from `generations`.
    pub fn wrote(&mut self, offset: u64, units: u64) {
        for i in 0..units {
            self.blocks
                .insert(offset + i * self.unit(), self.next_generation + i);
        }
        self.next_generation += units;
        self.size = self.size.max(offset + units * self.unit());
    }

    /// What the unit at `offset` holds: a generation, or `None` for zeroes (a hole, a
    /// preallocated range, or past EOF).
    pub fn expected(&self, offset: u64) -> Option<u64> {
        (offset < self.size)
            .then(|| self.blocks.get(&offset).copied())
            .flatten()
    }

    pub fn truncate(&mut self, size: u64) {
        self.blocks.split_off(&size);
        self.size = size;
    }

    /// Punching a hole (size unchanged) or zeroing a range: units read as zeroes.
    pub fn zero(&mut self, offset: u64, len: u64) {
        let gone: Vec<u64> = self
            .blocks
            .range(offset..offset + len)
            .map(|(o, _)| *o)
            .collect();
        for o in gone {
            self.blocks.remove(&o);
        }
    }

    /// fallocate: contents unchanged (new space reads as zeroes); the size grows unless
    /// FALLOC_FL_KEEP_SIZE.
    pub fn allocate(&mut self, offset: u64, len: u64, keep_size: bool) {
        if !keep_size {
            self.size = self.size.max(offset + len);
        }
    }

    /// A written unit at or after `offset`, wrapping around (for overwrites).
    pub fn written_near(&self, offset: u64) -> Option<u64> {
        self.blocks
            .range(offset..)
            .next()
            .or_else(|| self.blocks.iter().next())
            .map(|(o, _)| *o)
    }
}

/// Everything `workloads verify dio` needs: the seed and each file's model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Hex, like the summary's.
    pub seed: String,
    pub files: Vec<FileModel>,
}

impl Manifest {
    pub fn seed(&self) -> crate::Result<u64> {
        crate::dio::parse_seed(&self.seed).map_err(|e| crate::Error::Parse {
            what: "manifest seed".into(),
            detail: e,
        })
    }

    /// Rejects a manifest the verifier cannot follow (it comes from a file).
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |detail: String| crate::Error::Parse {
            what: "manifest".into(),
            detail,
        };
        for f in &self.files {
            let unit = f.unit();
            if !f.unit.is_power_of_two() || !(512..=1 << 20).contains(&f.unit) {
                return Err(bad(format!(
                    "{}: unit {} is not a power of two in 512..=1M",
                    f.name, f.unit
                )));
            }
            if f.name.is_empty() || f.name.split('/').any(|c| c == "..") || f.name.starts_with('/')
            {
                return Err(bad(format!(
                    "file name {:?} is not a relative path",
                    f.name
                )));
            }
            if f.size % unit != 0 || f.blocks.keys().any(|o| o % unit != 0 || *o >= f.size) {
                return Err(bad(format!(
                    "{}: size or block offsets are not whole units below the size",
                    f.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_truncates_and_holes() {
        let mut m = FileModel::new(1, "f", 4096);
        m.wrote(8192, 2);
        assert_eq!(
            (m.size, m.expected(8192), m.expected(12288), m.expected(0)),
            (16384, Some(1), Some(2), None)
        );
        m.wrote(8192, 1);
        assert_eq!(m.expected(8192), Some(3));
        m.zero(8192, 4096);
        assert_eq!((m.expected(8192), m.expected(12288)), (None, Some(2)));
        m.truncate(12288);
        assert_eq!((m.size, m.expected(12288)), (12288, None));
        m.allocate(0, 65536, true);
        assert_eq!(m.size, 12288);
        m.allocate(0, 65536, false);
        assert_eq!(m.size, 65536);
        // Re-growing past truncated data does not resurrect it.
        assert_eq!(m.expected(12288), None);
    }

    #[test]
    fn manifests_from_files_are_validated() {
        let mut f = FileModel::new(1, "wl-dio/f", 4096);
        f.wrote(0, 2);
        let good = Manifest {
            seed: "0x1".into(),
            files: vec![f.clone()],
        };
        assert!(good.validate().is_ok());
        for broken in [
            FileModel {
                unit: 0,
                ..f.clone()
            },
            FileModel {
                unit: 1000,
                ..f.clone()
            },
            FileModel {
                size: 5000,
                ..f.clone()
            },
            FileModel {
                name: "../x".into(),
                ..f.clone()
            },
            FileModel {
                blocks: [(1u64 << 40, 1u64)].into(),
                ..f.clone()
            },
        ] {
            assert!(Manifest {
                seed: "0x1".into(),
                files: vec![broken]
            }
            .validate()
            .is_err());
        }
    }
}
