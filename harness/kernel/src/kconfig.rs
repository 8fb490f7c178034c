//! Kconfig fragments and .config files: parsing, the effective set of
//! requested symbols, verification of a final .config, and the diff between
//! two configs. Pure functions; the make/merge steps live in `configure`.

use anyhow::Result;
use plumbing::error::usage;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Value written for a symbol that is "not set" (`# CONFIG_X is not set`).
pub const NOT_SET: &str = "n";

/// A parsed .config: symbol (with the `CONFIG_` prefix) to value as written
/// (`y`, `m`, `n` for "is not set", `"quoted string"`, `123`, `0x10`).
pub type Config = BTreeMap<String, String>;

/// One config fragment file.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// Short name for messages (`base`, `fuse-iomap`, or the file name).
    pub name: String,
    pub path: PathBuf,
    pub text: String,
    pub requests: Vec<Request>,
}

/// One `CONFIG_X=value` or `# CONFIG_X is not set` line of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub symbol: String,
    pub value: String,
    pub line: usize,
}

/// A requested symbol the final .config does not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub symbol: String,
    pub wanted: String,
    /// `None` when the symbol is absent from the final .config.
    pub got: Option<String>,
    /// Fragment name and line that asked for it.
    pub fragment: String,
    pub line: usize,
}

/// A symbol whose value differs between two configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub symbol: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl Fragment {
    /// Read and parse a fragment file; malformed lines are usage errors.
    pub fn load(name: &str, path: &Path) -> Result<Fragment> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            usage(format!(
                "cannot read config fragment {}: {e}",
                path.display()
            ))
        })?;
        let requests = parse_fragment(&text)
            .map_err(|(line, msg)| usage(format!("{}:{line}: {msg}", path.display())))?;
        Ok(Fragment {
            name: name.to_string(),
            path: path.to_path_buf(),
            text,
            requests,
        })
    }

    /// Whether this fragment mentions `symbol`.
    pub fn mentions(&self, symbol: &str) -> bool {
        self.requests.iter().any(|r| r.symbol == symbol)
    }
}

/// Parse one `.config`-style line: `Some((symbol, value))` for a setting,
/// `None` for blank lines and other comments, `Err` for anything else.
fn parse_line(line: &str) -> Result<Option<(String, String)>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    if let Some(rest) = line.strip_prefix('#') {
        // `# CONFIG_FOO is not set` is a setting; every other comment is not.
        if let Some(sym) = rest.trim().strip_suffix(" is not set") {
            if is_symbol(sym) {
                return Ok(Some((sym.to_string(), NOT_SET.to_string())));
            }
        }
        return Ok(None);
    }
    let (sym, value) = line.split_once('=').ok_or("expected CONFIG_NAME=value")?;
    if !is_symbol(sym) {
        return Err(format!("`{sym}` is not a CONFIG_ symbol"));
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("{sym} has an empty value"));
    }
    let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
    let plain = value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !quoted && !plain {
        return Err(format!(
            "{sym}: value `{value}` must be y, m, n, a number or a \"string\""
        ));
    }
    Ok(Some((sym.to_string(), value.to_string())))
}

fn is_symbol(s: &str) -> bool {
    s.strip_prefix("CONFIG_")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// Parse a fragment. The error is (line number, message).
pub fn parse_fragment(text: &str) -> Result<Vec<Request>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some((symbol, value))) => out.push(Request {
                symbol,
                value,
                line: i + 1,
            }),
            Ok(None) => {}
            Err(msg) => return Err((i + 1, msg)),
        }
    }
    Ok(out)
}

/// Parse a final .config written by kconfig. Lines kconfig would not write
/// are ignored rather than fatal: the file is the tool's output, not ours.
pub fn parse_config(text: &str) -> Config {
    text.lines()
        .filter_map(|l| parse_line(l).ok().flatten())
        .collect()
}

/// What the fragments ask for once merged in order: the last fragment that
/// mentions a symbol wins, as with merge_config.sh.
pub fn effective_requests(fragments: &[Fragment]) -> BTreeMap<String, (String, &Fragment, usize)> {
    let mut out = BTreeMap::new();
    for f in fragments {
        for r in &f.requests {
            out.insert(r.symbol.clone(), (r.value.clone(), f, r.line));
        }
    }
    out
}

/// Requests one fragment makes that a later fragment overrides with another value.
pub fn overrides(fragments: &[Fragment]) -> Vec<(String, String, String)> {
    let eff = effective_requests(fragments);
    let mut out = Vec::new();
    for f in fragments {
        for r in &f.requests {
            if let Some((v, winner, _)) = eff.get(&r.symbol) {
                if v != &r.value && winner.name != f.name {
                    out.push((
                        r.symbol.clone(),
                        format!("{}={}", f.name, r.value),
                        format!("{}={v}", winner.name),
                    ));
                }
            }
        }
    }
    out
}

fn values_match(wanted: &str, got: Option<&str>) -> bool {
    match got {
        // A bool/tristate left out of .config (hidden by its dependencies) is off.
        None => wanted == NOT_SET,
        Some(got) if got == wanted => true,
        Some(got) => match (parse_int(wanted), parse_int(got)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
    }
}

fn parse_int(s: &str) -> Option<i128> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i128::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// Check every effective request against the final .config.
pub fn verify(fragments: &[Fragment], config: &Config) -> Vec<Mismatch> {
    effective_requests(fragments)
        .into_iter()
        .filter(|(sym, (wanted, _, _))| !values_match(wanted, config.get(sym).map(String::as_str)))
        .map(|(symbol, (wanted, f, line))| Mismatch {
            got: config.get(&symbol).cloned(),
            symbol,
            wanted,
            fragment: f.name.clone(),
            line,
        })
        .collect()
}

/// Symbols whose values differ between `before` and `after`.
pub fn diff(before: &Config, after: &Config) -> Vec<Change> {
    let syms: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    syms.into_iter()
        .filter_map(|s| {
            let (b, a) = (before.get(s), after.get(s));
            // Absent and "is not set" mean the same thing.
            let norm = |v: Option<&String>| v.filter(|v| v.as_str() != NOT_SET).cloned();
            (norm(b) != norm(a)).then(|| Change {
                symbol: s.clone(),
                before: b.cloned(),
                after: a.cloned(),
            })
        })
        .collect()
}

/// Every symbol the tree's Kconfig files define (`config X`, `menuconfig X`),
/// with the `CONFIG_` prefix. Used to explain a mismatch.
pub fn kconfig_symbols(tree: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            let name = name.to_string_lossy();
            if ft.is_dir() {
                if !name.starts_with('.') {
                    stack.push(path);
                }
            } else if ft.is_file() && name.starts_with("Kconfig") {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    out.extend(symbols_defined_in(&text));
                }
            }
        }
    }
    out
}

/// Symbols defined by one Kconfig file's text.
pub fn symbols_defined_in(kconfig_text: &str) -> impl Iterator<Item = String> + '_ {
    kconfig_text.lines().filter_map(|l| {
        let mut words = l.split_whitespace();
        match (words.next(), words.next()) {
            (Some("config" | "menuconfig"), Some(sym)) => Some(format!("CONFIG_{sym}")),
            _ => None,
        }
    })
}

/// Human-readable value: `is not set` for n, `(absent)` for None.
pub fn show(v: Option<&str>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(NOT_SET) => "is not set".to_string(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests;
