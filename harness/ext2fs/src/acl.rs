//! POSIX ACL value formats: the Linux VFS xattr format (what `setfacl` passes through FUSE)
//! and ext4's compact on-disk format.
//!
//! libext2fs can translate these itself, but its disk-to-VFS path trusts on-disk lengths, so
//! this crate opens xattr handles in RAW mode and converts here, checking every length.

/// VFS format: `{version = 2}` then 8-byte entries `{tag: u16, perm: u16, id: u32}`.
const VFS_VERSION: u32 = 2;
/// ext4 format: `{version = 1}` then 4-byte entries for the `*_OBJ`, `MASK` and `OTHER` tags
/// and 8-byte entries (with an id) for named users and groups.
const DISK_VERSION: u32 = 1;

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
/// The id the kernel reports for entries that have none.
const ACL_UNDEFINED_ID: u32 = u32::MAX;

pub(crate) const ACCESS: &[u8] = b"system.posix_acl_access";
pub(crate) const DEFAULT: &[u8] = b"system.posix_acl_default";

pub(crate) fn is_acl_name(name: &[u8]) -> bool {
    name == ACCESS || name == DEFAULT
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn has_id(tag: u16) -> Option<bool> {
    match tag {
        ACL_USER | ACL_GROUP => Some(true),
        ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => Some(false),
        _ => None,
    }
}

/// Number of entries in a VFS-format value, or `None` if it is malformed.
pub(crate) fn vfs_entry_count(value: &[u8]) -> Option<usize> {
    if value.len() < 4 || (value.len() - 4) % 8 != 0 || le32(value, 0) != VFS_VERSION {
        return None;
    }
    Some((value.len() - 4) / 8)
}

/// VFS format to disk format; `None` if the value is malformed (EINVAL for the caller).
pub(crate) fn to_disk(value: &[u8]) -> Option<Vec<u8>> {
    let count = vfs_entry_count(value)?;
    let mut out = Vec::with_capacity(4 + 8 * count);
    out.extend_from_slice(&DISK_VERSION.to_le_bytes());
    for i in 0..count {
        let e = 4 + 8 * i;
        let tag = le16(value, e);
        out.extend_from_slice(&value[e..e + 4]); // tag and perm
        if has_id(tag)? {
            out.extend_from_slice(&value[e + 4..e + 8]);
        }
    }
    Some(out)
}

/// Disk format to VFS format; `None` if the stored value is malformed (corruption).
pub(crate) fn from_disk(value: &[u8]) -> Option<Vec<u8>> {
    if value.len() < 4 || le32(value, 0) != DISK_VERSION {
        return None;
    }
    let mut out = Vec::with_capacity(4 + 2 * value.len());
    out.extend_from_slice(&VFS_VERSION.to_le_bytes());
    let mut off = 4;
    while off < value.len() {
        if off + 4 > value.len() {
            return None;
        }
        let tag = le16(value, off);
        out.extend_from_slice(&value[off..off + 4]);
        if has_id(tag)? {
            if off + 8 > value.len() {
                return None;
            }
            out.extend_from_slice(&value[off + 4..off + 8]);
            off += 8;
        } else {
            out.extend_from_slice(&ACL_UNDEFINED_ID.to_le_bytes());
            off += 4;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vfs(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = VFS_VERSION.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn round_trip_and_sizes() {
        let acl = vfs(&[
            (ACL_USER_OBJ, 6, ACL_UNDEFINED_ID),
            (ACL_USER, 4, 1000),
            (ACL_GROUP_OBJ, 4, ACL_UNDEFINED_ID),
            (ACL_MASK, 4, ACL_UNDEFINED_ID),
            (ACL_OTHER, 0, ACL_UNDEFINED_ID),
        ]);
        let disk = to_disk(&acl).unwrap();
        assert_eq!(
            disk.len(),
            4 + 4 * 4 + 8,
            "short entries for *_OBJ/MASK/OTHER"
        );
        assert_eq!(from_disk(&disk).unwrap(), acl);
    }

    #[test]
    fn malformed_values_are_rejected() {
        assert!(to_disk(&[2, 0, 0]).is_none());
        assert!(to_disk(&vfs(&[(0x40, 7, 0)])).is_none(), "unknown tag");
        let mut wrong_version = vfs(&[(ACL_OTHER, 0, 0)]);
        wrong_version[0] = 1;
        assert!(to_disk(&wrong_version).is_none());
        // Disk value truncated in the middle of a named-user entry.
        let mut disk = DISK_VERSION.to_le_bytes().to_vec();
        disk.extend_from_slice(&ACL_USER.to_le_bytes());
        disk.extend_from_slice(&7u16.to_le_bytes());
        disk.extend_from_slice(&[1, 0]);
        assert!(from_disk(&disk).is_none());
        assert!(from_disk(&[1, 0, 0, 0, 1]).is_none(), "dangling byte");
    }
}
