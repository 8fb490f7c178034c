//! Running the kernel's make: the config steps (tinyconfig, merge_config.sh,
//! olddefconfig) and the streamed, logged build with live progress.

use super::kconfig::Fragment;
use super::ARCH;
use anyhow::{Context, Result};
use plumbing::ui::Ui;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// How to invoke make for one source tree and build directory.
#[derive(Debug, Clone)]
pub struct Make {
    pub tree: PathBuf,
    pub objdir: PathBuf,
    /// `gcc` or `ccache gcc`; part of the cache key.
    pub cc: String,
    pub jobs: usize,
    /// ccache base directory, so objects hit across build dirs of the cache.
    pub ccache_base: Option<PathBuf>,
}

impl Make {
    fn cmd(&self, args: &[&str]) -> duct::Expression {
        let mut argv: Vec<String> = vec![
            "-C".into(),
            self.tree.display().to_string(),
            format!("O={}", self.objdir.display()),
            format!("ARCH={ARCH}"),
            format!("CC={}", self.cc),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        let mut e = duct::cmd("make", argv);
        if let Some(base) = &self.ccache_base {
            e = e.env("CCACHE_BASEDIR", base).env("CCACHE_NOHASHDIR", "1");
        }
        e
    }

    /// Run a short make step, appending its output to `log`.
    fn step(&self, args: &[&str], log: &Path) -> Result<()> {
        let out = self
            .cmd(args)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .context("running make")?;
        append(log, &out.stdout)?;
        if !out.status.success() {
            anyhow::bail!(
                "make {} failed:\n{}\n  full log: {}",
                args.join(" "),
                tail_lines(&String::from_utf8_lossy(&out.stdout), 20),
                log.display()
            );
        }
        Ok(())
    }

    /// tinyconfig, then the fragments merged in order with the tree's
    /// merge_config.sh, then olddefconfig. Saves the tinyconfig result as
    /// `base_copy` for the diff.
    pub fn configure(&self, fragments: &[Fragment], base_copy: &Path, log: &Path) -> Result<()> {
        std::fs::create_dir_all(&self.objdir)?;
        let _ = std::fs::remove_file(log);
        self.step(&["tinyconfig"], log)?;
        let dot = self.objdir.join(".config");
        std::fs::copy(&dot, base_copy).context("saving the tinyconfig .config")?;
        let script = self.tree.join("scripts/kconfig/merge_config.sh");
        let mut args: Vec<String> = vec![
            "-m".into(),
            "-O".into(),
            self.objdir.display().to_string(),
            dot.display().to_string(),
        ];
        args.extend(fragments.iter().map(|f| f.path.display().to_string()));
        let out = duct::cmd(
            "sh",
            std::iter::once(script.display().to_string()).chain(args),
        )
        .dir(&self.tree)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running merge_config.sh")?;
        append(log, &out.stdout)?;
        if !out.status.success() {
            anyhow::bail!(
                "merge_config.sh failed:\n{}\n  full log: {}",
                tail_lines(&String::from_utf8_lossy(&out.stdout), 20),
                log.display()
            );
        }
        self.step(&["olddefconfig"], log)
    }

    /// `make -jN bzImage`, streamed into `log` with live progress. On
    /// failure the error is the last error lines plus the log path.
    pub fn build(&self, log: &Path, ui: &Ui) -> Result<BuildStats> {
        let cpu_before = children_cpu_seconds();
        let jobs = format!("-j{}", self.jobs);
        let mut logf =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let reader = self
            .cmd(&[&jobs, "bzImage"])
            .stderr_to_stdout()
            .unchecked()
            .reader()
            .context("starting make")?;
        let mut act = ui.activity("make bzImage");
        let mut stats = BuildStats::default();
        let mut recent: VecDeque<String> = VecDeque::new();
        let mut errors: VecDeque<String> = VecDeque::new();
        let mut lines = BufReader::new(&reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = lines
                .read_until(b'\n', &mut buf)
                .context("reading make output")?;
            if n == 0 {
                break;
            }
            logf.write_all(&buf)?;
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            if let Some(obj) = compiled_object(&line) {
                stats.objects += 1;
                act.update(format!("{} objects compiled, last {obj}", stats.objects));
            }
            if is_error_line(&line) {
                push_bounded(&mut errors, line.clone(), 30);
            }
            push_bounded(&mut recent, line, 30);
        }
        let status = reader
            .try_wait()
            .context("waiting for make")?
            .map(|o| o.status);
        logf.flush()?;
        match status {
            Some(s) if s.success() => {
                stats.cpu_s = children_cpu_seconds() - cpu_before;
                act.finish(format!("done, {} objects compiled", stats.objects));
                Ok(stats)
            }
            other => {
                act.finish("FAILED");
                let shown = if errors.is_empty() { recent } else { errors };
                let shown: Vec<String> = shown.into_iter().collect();
                anyhow::bail!(
                    "kernel build failed ({}):\n{}\n  full log: {}",
                    other
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "make did not finish".into()),
                    shown.join("\n"),
                    log.display()
                )
            }
        }
    }
}

/// Counters gathered from the build output.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildStats {
    pub objects: u64,
    /// User + system CPU seconds of make and everything it ran.
    pub cpu_s: f64,
}

/// CPU time of all waited-for descendants so far (make reaps its children,
/// so their time reaches us when we reap make).
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `  CC      fs/fuse/dir.o` -> `fs/fuse/dir.o` (also AS, and host CC).
fn compiled_object(line: &str) -> Option<&str> {
    let mut w = line.split_whitespace();
    match (w.next(), w.next()) {
        (Some("CC" | "AS" | "HOSTCC"), Some(obj)) if line.starts_with("  ") => Some(obj),
        _ => None,
    }
}

fn is_error_line(line: &str) -> bool {
    line.contains("error:")
        || line.contains("Error ")
        || line.starts_with("***")
        || line.contains("undefined reference")
        || line.contains("No rule to make target")
}

fn push_bounded(q: &mut VecDeque<String>, s: String, max: usize) {
    if q.len() == max {
        q.pop_front();
    }
    q.push_back(s);
}

fn append(log: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_compile_and_error_lines() {
        assert_eq!(
            compiled_object("  CC      fs/fuse/dir.o"),
            Some("fs/fuse/dir.o")
        );
        assert_eq!(
            compiled_object("  AS      arch/x86/entry/entry_64.o"),
            Some("arch/x86/entry/entry_64.o")
        );
        assert_eq!(compiled_object("  LD      vmlinux"), None);
        assert_eq!(compiled_object("CC is here"), None);
        assert!(is_error_line(
            "fs/fuse/dir.c:10:1: error: expected ';' before '}' token"
        ));
        assert!(is_error_line(
            "make[4]: *** [scripts/Makefile.build:229: fs/fuse/dir.o] Error 1"
        ));
        assert!(!is_error_line("  CC      fs/fuse/dir.o"));
    }

    #[test]
    fn counts_cpu_of_waited_children() {
        let before = children_cpu_seconds();
        let st = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(st.success());
        assert!(children_cpu_seconds() - before > 0.05);
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
        let mut q = VecDeque::new();
        for i in 0..5 {
            push_bounded(&mut q, i.to_string(), 3);
        }
        assert_eq!(q.into_iter().collect::<Vec<_>>(), vec!["2", "3", "4"]);
    }
}
