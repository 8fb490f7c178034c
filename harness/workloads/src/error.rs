//! Why a workload could not run (setup, remount, tools). Misbehaviour of the filesystem
//! under test is never an `Error`: it is a [`crate::Finding`].

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the remount hook failed: {0}")]
    Remount(String),
    #[error("fio: {0}")]
    Fio(String),
    #[error("cannot parse {what}: {detail}")]
    Parse { what: String, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(what: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Error::Io {
            what: what.into(),
            source: source.into(),
        }
    }
    pub fn at(what: &str, path: &Path, source: impl Into<std::io::Error>) -> Self {
        Self::io(format!("{what} {}", path.display()), source)
    }
}
