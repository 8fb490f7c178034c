//! POSIX ACL duties FUSE leaves to the server once FUSE_POSIX_ACL is negotiated: the kernel
//! enforces ACLs and caches them, but keeping the mode in step with an access ACL and
//! inheriting a directory's default ACL on create are ours (ext4 does both in-kernel).
//!
//! Values are in the Linux VFS xattr format: a u32 version (2) then 8-byte entries
//! `{tag: u16, perm: u16, id: u32}`, little-endian.

pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A parsed ACL; `None` from `parse` means a malformed value (EINVAL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl(Vec<Entry>);

impl Acl {
    pub fn parse(value: &[u8]) -> Option<Acl> {
        if value.len() < 4 || !(value.len() - 4).is_multiple_of(8) {
            return None;
        }
        if u32::from_le_bytes(value[..4].try_into().ok()?) != VERSION {
            return None;
        }
        let entries: Vec<Entry> = value[4..]
            .chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let count = |t: u16| entries.iter().filter(|e| e.tag == t).count();
        let valid = entries.iter().all(|e| {
            matches!(e.tag, USER_OBJ | USER | GROUP_OBJ | GROUP | MASK | OTHER) && e.perm & !7 == 0
        }) && count(USER_OBJ) == 1
            && count(GROUP_OBJ) == 1
            && count(OTHER) == 1
            && count(MASK) <= 1
            // Named entries need a mask.
            && (count(USER) + count(GROUP) == 0 || count(MASK) == 1);
        valid.then_some(Acl(entries))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for e in &self.0 {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    fn perm(&self, tag: u16) -> Option<u32> {
        self.0.iter().find(|e| e.tag == tag).map(|e| e.perm as u32)
    }

    /// True when the ACL says no more than the mode bits do (then it is not stored).
    pub fn is_equivalent_to_mode(&self) -> bool {
        self.0
            .iter()
            .all(|e| matches!(e.tag, USER_OBJ | GROUP_OBJ | OTHER))
    }

    /// The permission bits an access ACL implies: owner, mask (or group) and other.
    pub fn mode_bits(&self) -> u32 {
        let group = self.perm(MASK).or(self.perm(GROUP_OBJ)).unwrap_or(0);
        (self.perm(USER_OBJ).unwrap_or(0) << 6) | (group << 3) | self.perm(OTHER).unwrap_or(0)
    }

    /// Inheritance at create time: restricts this (default) ACL by the requested mode and
    /// the mode by the ACL, like the kernel's posix_acl_create_masq. Returns the new mode.
    pub fn create_masq(&mut self, mode: u32) -> u32 {
        let mut mode = mode;
        let has_mask = self.0.iter().any(|e| e.tag == MASK);
        for e in self.0.iter_mut() {
            match e.tag {
                USER_OBJ => {
                    e.perm &= ((mode >> 6) & 7) as u16;
                    mode &= ((e.perm as u32) << 6) | !0o700;
                }
                OTHER => {
                    e.perm &= (mode & 7) as u16;
                    mode &= e.perm as u32 | !0o007;
                }
                MASK => {
                    e.perm &= ((mode >> 3) & 7) as u16;
                    mode &= ((e.perm as u32) << 3) | !0o070;
                }
                GROUP_OBJ if !has_mask => {
                    e.perm &= ((mode >> 3) & 7) as u16;
                    mode &= ((e.perm as u32) << 3) | !0o070;
                }
                _ => {}
            }
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        Acl(entries
            .iter()
            .map(|&(tag, perm, id)| Entry { tag, perm, id })
            .collect())
        .to_bytes()
    }

    #[test]
    fn mode_follows_the_mask() {
        let a = Acl::parse(&acl(&[
            (USER_OBJ, 6, 0),
            (USER, 6, 1234),
            (GROUP_OBJ, 4, 0),
            (MASK, 6, 0),
            (OTHER, 0, 0),
        ]))
        .unwrap();
        assert!(!a.is_equivalent_to_mode());
        assert_eq!(a.mode_bits(), 0o660);
    }

    #[test]
    fn minimal_acls_are_just_mode_bits() {
        let a = Acl::parse(&acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 1, 0)])).unwrap();
        assert!(a.is_equivalent_to_mode());
        assert_eq!(a.mode_bits(), 0o751);
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(Acl::parse(b"").is_none());
        assert!(Acl::parse(&[1, 0, 0, 0]).is_none(), "wrong version");
        assert!(
            Acl::parse(&acl(&[(USER_OBJ, 7, 0), (OTHER, 0, 0)])).is_none(),
            "no group"
        );
        assert!(
            Acl::parse(&acl(&[
                (USER_OBJ, 7, 0),
                (USER, 7, 5),
                (GROUP_OBJ, 0, 0),
                (OTHER, 0, 0)
            ]))
            .is_none(),
            "named entry without mask"
        );
        assert!(
            Acl::parse(&acl(&[(USER_OBJ, 9, 0), (GROUP_OBJ, 0, 0), (OTHER, 0, 0)])).is_none(),
            "bad perm"
        );
        let mut odd = acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 0, 0), (OTHER, 0, 0)]);
        odd.push(0);
        assert!(Acl::parse(&odd).is_none(), "trailing byte");
    }

    #[test]
    fn inheritance_masks_both_ways() {
        let mut d = Acl::parse(&acl(&[
            (USER_OBJ, 7, 0),
            (USER, 7, 1234),
            (GROUP_OBJ, 5, 0),
            (MASK, 7, 0),
            (OTHER, 5, 0),
        ]))
        .unwrap();
        let mode = d.create_masq(libc::S_IFREG | 0o644);
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(d.mode_bits(), 0o644);
        assert_eq!(
            d.perm(USER),
            Some(7),
            "named entries are limited by the mask, not changed"
        );
    }
}
