//! What can go wrong, sorted by who is to blame, so tests can assert the exact kind.

use std::fmt;

/// A kmodel failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server broke a rule the kernel enforces (or one the protocol doc states as a
    /// server duty). `rule` names it (e.g. "§7.1 rule 4: ..."); request and reply are shown
    /// as sent and received.
    #[error("protocol violation: {rule}\n  request: {request}\n  reply:   {reply}")]
    Violation {
        rule: String,
        request: String,
        reply: String,
    },
    /// The server answered a request with an error the model did not expect.
    #[error("{request} failed: {}", errno_name(*.errno))]
    Errno { request: String, errno: i32 },
    /// File contents or size differ from the oracle.
    #[error("oracle mismatch: {0}")]
    Mismatch(Mismatch),
    /// `e2fsck -fn` found problems after the session ended.
    #[error("e2fsck -fn {image} exited with {status}:\n{output}")]
    Fsck {
        image: String,
        status: String,
        output: String,
    },
    /// The independent reader (ext4-view) disagrees with the oracle, or cannot read.
    #[error("independent read (ext4-view): {0}")]
    Independent(String),
    /// The server process or its socket misbehaved (died, hung, malformed message).
    #[error("server: {0}")]
    Server(String),
    /// Something the model does not implement (e.g. an INLINE mapping).
    #[error("not modelled: {0}")]
    Unsupported(String),
    /// A local I/O error (image file, socket, spawning).
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    /// The server's errno, if this is an error reply.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Errno { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// True for a protocol violation whose rule text contains `needle`.
    pub fn is_violation_of(&self, needle: &str) -> bool {
        matches!(self, Error::Violation { rule, .. } if rule.contains(needle))
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the model and the oracle disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// File name (path below the root).
    pub file: String,
    /// What was being checked ("read after write", "size after remount", ...).
    pub what: String,
    /// First differing byte offset, for data mismatches.
    pub offset: Option<u64>,
    /// Expected and observed value (byte or size), formatted.
    pub expected: String,
    pub got: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.what)?;
        if let Some(off) = self.offset {
            write!(f, " at byte {off}")?;
        }
        write!(f, ": expected {}, got {}", self.expected, self.got)
    }
}

/// "ENOENT (2)" for an errno value.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        5 => "EIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        17 => "EEXIST",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        27 => "EFBIG",
        28 => "ENOSPC",
        30 => "EROFS",
        36 => "ENAMETOOLONG",
        38 => "ENOSYS",
        39 => "ENOTEMPTY",
        61 => "ENODATA",
        71 => "EPROTO",
        95 => "EOPNOTSUPP",
        116 => "ESTALE",
        117 => "EUCLEAN (EFSCORRUPTED)",
        _ => "errno",
    };
    format!("{name} ({errno})")
}
