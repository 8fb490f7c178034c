//! The acknowledgement log: kept OUTSIDE the filesystem under test, it says which records
//! the writers saw acknowledged (by a completed fsync when `durable`, else by write(2)
//! returning). A line `W S` means records 0..=S of writer W are acknowledged.

use crate::error::{Error, Result};
use crate::record::Style;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckHeader {
    pub seed: u64,
    pub writers: u32,
    pub style: Style,
    /// The log's path relative to the workload's target directory.
    pub file: String,
    pub durable: bool,
}

const FIRST_LINE: &str = "# workloads append acknowledgements v1";

/// Creates (truncates) the log with its header.
pub fn create(path: &Path, h: &AckHeader) -> Result<()> {
    let style = match h.style {
        Style::Direct { align } => format!("direct:{align}"),
        Style::Buffered => "buffered".into(),
        Style::Small => "small".into(),
    };
    let text = format!(
        "{FIRST_LINE}\nseed={:#x} writers={} style={style} file={} durable={}\n",
        h.seed, h.writers, h.file, h.durable as u8
    );
    std::fs::write(path, text).map_err(|e| Error::at("write", path, e))
}

/// One writer's handle on the log: each acknowledgement is one small O_APPEND write.
pub struct Acker {
    file: std::fs::File,
    path: PathBuf,
}

impl Acker {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::at("open", path, e))?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }
    pub fn ack(&mut self, writer: u32, seq: u64) -> Result<()> {
        self.file
            .write_all(format!("{writer} {seq}\n").as_bytes())
            .map_err(|e| Error::at("append to", &self.path, e))
    }
}

/// The header and, per writer, the highest acknowledged seq.
pub fn read(path: &Path) -> Result<(AckHeader, Vec<Option<u64>>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::at("read", path, e))?;
    let bad = |detail: String| Error::Parse {
        what: path.display().to_string(),
        detail,
    };
    let mut lines = text.lines();
    if lines.next() != Some(FIRST_LINE) {
        return Err(bad(format!("the first line is not {FIRST_LINE:?}")));
    }
    let fields = lines.next().ok_or_else(|| bad("no header line".into()))?;
    let get = |k: &str| {
        fields
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .ok_or_else(|| bad(format!("header has no {k}=")))
    };
    let seed = crate::dio::parse_seed(get("seed")?).map_err(bad)?;
    let writers: u32 = get("writers")?
        .parse()
        .map_err(|e| bad(format!("writers: {e}")))?;
    let style = match get("style")? {
        "buffered" => Style::Buffered,
        "small" => Style::Small,
        s => match s.strip_prefix("direct:").and_then(|a| a.parse().ok()) {
            Some(align) if (64..=256 << 10).contains(&align) => Style::Direct { align },
            _ => return Err(bad(format!("unknown style {s:?}"))),
        },
    };
    let h = AckHeader {
        seed,
        writers,
        style,
        file: get("file")?.to_string(),
        durable: get("durable")? == "1",
    };
    let mut acked = vec![None; writers as usize];
    for (n, line) in lines.enumerate() {
        let mut it = line.split_whitespace();
        let (Some(w), Some(s), None) = (it.next(), it.next(), it.next()) else {
            // A torn last line (the run was killed while writing it) acknowledges nothing.
            continue;
        };
        let (Ok(w), Ok(s)) = (w.parse::<usize>(), s.parse::<u64>()) else {
            return Err(bad(format!("line {}: {line:?}", n + 3)));
        };
        let slot = acked
            .get_mut(w)
            .ok_or_else(|| bad(format!("line {}: writer {w} of {writers}", n + 3)))?;
        *slot = Some(slot.map_or(s, |old: u64| old.max(s)));
    }
    Ok((h, acked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ack");
        let h = AckHeader {
            seed: 0xfeed,
            writers: 3,
            style: Style::Direct { align: 4096 },
            file: "wl-append/shared.log".into(),
            durable: true,
        };
        create(&p, &h).unwrap();
        let mut a = Acker::open(&p).unwrap();
        a.ack(0, 7).unwrap();
        a.ack(2, 3).unwrap();
        a.ack(0, 15).unwrap();
        let (h2, acked) = read(&p).unwrap();
        assert_eq!(h2, h);
        assert_eq!(acked, vec![Some(15), None, Some(3)]);
        std::fs::write(&p, "nonsense\n").unwrap();
        assert!(read(&p).is_err());
    }
}
