//! Just enough of the ext4 layout, read straight from image bytes, for the fuzzer's write
//! oracle: which blocks the block bitmaps mark in use, and the system zone (superblocks,
//! descriptors, bitmaps, inode tables). Garbage in gives `None` or an empty answer, never
//! a panic.

/// The geometry the superblock describes.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub block_size: u64,
    pub blocks: u64,
    first_data: u64,
    per_group: u64,
    groups: u64,
    desc_size: u64,
    reserved_gdt: u64,
    itable_blocks: u64,
    sparse_super: bool,
    /// META_BG: descriptor blocks from this one on live in their meta group's first group.
    first_meta_bg: Option<u64>,
}

const BLOCK_UNINIT: u16 = 0x2;

fn le16(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u16::from_le_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn le32(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u32::from_le_bytes(
        b.get(at..at + 4)?.try_into().ok()?,
    )))
}

impl Geometry {
    /// Reads the primary superblock; `None` unless it describes something sane.
    pub fn read(img: &[u8]) -> Option<Geometry> {
        let sb = img.get(1024..2048)?;
        if le16(sb, 0x38)? != 0xEF53 {
            return None;
        }
        let log = le32(sb, 0x18)?;
        if log > 6 {
            return None;
        }
        let block_size = 1024u64 << log;
        let incompat = le32(sb, 0x60)?;
        let ro_compat = le32(sb, 0x64)?;
        let is64 = incompat & 0x80 != 0;
        let blocks = le32(sb, 0x04)? | if is64 { le32(sb, 0x150)? << 32 } else { 0 };
        let per_group = le32(sb, 0x20)?;
        let inodes_per_group = le32(sb, 0x28)?;
        let inode_size = if le32(sb, 0x4C)? == 0 {
            128
        } else {
            le16(sb, 0x58)?
        };
        let desc_size = if is64 { le16(sb, 0xFE)?.max(64) } else { 32 };
        let first_data = le32(sb, 0x14)?;
        let meta_bg = incompat & 0x10 != 0;
        // A superblock may claim more blocks than the image has: only the image's count.
        let blocks = blocks.min(img.len() as u64 / block_size);
        if per_group == 0 || first_data >= blocks || desc_size > block_size {
            return None;
        }
        let groups = (blocks - first_data).div_ceil(per_group);
        Some(Geometry {
            block_size,
            blocks,
            first_data,
            per_group,
            groups,
            desc_size,
            reserved_gdt: le16(sb, 0xCE)?,
            itable_blocks: inodes_per_group
                .saturating_mul(inode_size)
                .div_ceil(block_size),
            sparse_super: ro_compat & 0x1 != 0,
            first_meta_bg: if meta_bg {
                Some(le32(sb, 0x100)?)
            } else {
                None
            },
        })
    }

    fn has_super(&self, g: u64) -> bool {
        if g <= 1 || !self.sparse_super {
            return true;
        }
        [3u64, 5, 7].iter().any(|&p| {
            let mut n = p;
            while n < g {
                n *= p;
            }
            n == g
        })
    }

    fn descs_per_block(&self) -> u64 {
        self.block_size / self.desc_size
    }

    /// Where descriptor block `d` lives, as `ext2fs_descriptor_block_loc2` says.
    fn desc_block(&self, d: u64) -> u64 {
        match self.first_meta_bg {
            Some(first) if d >= first => {
                let g = d * self.descs_per_block();
                self.first_data + g * self.per_group + u64::from(self.has_super(g))
            }
            _ => self.first_data + 1 + d,
        }
    }

    fn desc<'a>(&self, img: &'a [u8], g: u64) -> Option<&'a [u8]> {
        let per = self.descs_per_block();
        let at =
            self.desc_block(g / per).checked_mul(self.block_size)? + (g % per) * self.desc_size;
        img.get(at as usize..at.checked_add(self.desc_size)? as usize)
    }

    /// Descriptor blocks after each superblock (the old layout's part under META_BG).
    fn desc_blocks(&self) -> u64 {
        let all = (self.groups * self.desc_size).div_ceil(self.block_size);
        self.first_meta_bg.map_or(all, |first| first.min(all))
    }

    /// The block, inode bitmap and inode table locations of group `g` and its flags.
    fn group(&self, img: &[u8], g: u64) -> Option<(u64, u64, u64, u16)> {
        let d = self.desc(img, g)?;
        let hi = |at: usize| {
            if self.desc_size >= 64 {
                le32(d, at).map(|v| v << 32)
            } else {
                Some(0)
            }
        };
        Some((
            le32(d, 0)? | hi(0x20)?,
            le32(d, 4)? | hi(0x24)?,
            le32(d, 8)? | hi(0x28)?,
            le16(d, 0x12)? as u16,
        ))
    }

    /// The system zone: block ranges `[start, end)` of metadata.
    pub fn zone(&self, img: &[u8]) -> Vec<(u64, u64)> {
        let gdt = 1 + self.desc_blocks() + self.reserved_gdt;
        let mut out = vec![(0, self.first_data + gdt)];
        for g in 0..self.groups {
            let start = self.first_data + g * self.per_group;
            if g > 0 && self.has_super(g) {
                out.push((start, start.saturating_add(gdt)));
            }
            // META_BG: a descriptor block (and its backups) in the first, second and last
            // group of each meta group.
            let per = self.descs_per_block();
            if let Some(first) = self.first_meta_bg {
                if g / per >= first && [0, 1, per - 1].contains(&(g % per)) {
                    let at = start + u64::from(self.has_super(g));
                    out.push((at, at + 1));
                }
            }
            if let Some((bb, ib, it, _)) = self.group(img, g) {
                let one = |b: u64| (b, b.saturating_add(1));
                out.extend([
                    one(bb),
                    one(ib),
                    (it, it.saturating_add(self.itable_blocks)),
                ]);
            }
        }
        out
    }

    /// Per block: whether a block bitmap marks it in use (uninitialised groups: free).
    pub fn in_use(&self, img: &[u8]) -> Vec<bool> {
        let mut used = vec![false; self.blocks as usize];
        for g in 0..self.groups {
            let Some((bb, _, _, flags)) = self.group(img, g) else {
                continue;
            };
            if flags & BLOCK_UNINIT != 0 || bb >= self.blocks {
                continue;
            }
            let from = (bb * self.block_size) as usize;
            let Some(bitmap) = img.get(from..from + self.block_size as usize) else {
                continue;
            };
            let start = self.first_data + g * self.per_group;
            let bits = self.per_group.min(self.block_size * 8);
            for i in 0..bits.min(self.blocks.saturating_sub(start)) {
                if bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0 {
                    used[(start + i) as usize] = true;
                }
            }
        }
        used
    }

    /// Blocks a write may land on: in use by a bitmap, or in the system zone.
    pub fn allowed(&self, img: &[u8]) -> Vec<bool> {
        let mut ok = self.in_use(img);
        for (s, e) in self.zone(img) {
            for b in s..e.min(self.blocks) {
                ok[b as usize] = true;
            }
        }
        ok
    }
}
