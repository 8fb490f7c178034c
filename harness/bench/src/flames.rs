//! `--flamegraphs DIR`: a flame graph of each phase of a pass. `perf record -a -g` samples
//! the whole machine while the phase runs, because a FUSE round trip's cost is spread over
//! the caller, the kernel and the server; inferno folds `perf script`'s stacks and draws
//! them (one SVG per phase, named `REP-TARGET-PHASE.svg`, beside its folded stacks).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use inferno::collapse::perf::{Folder, Options as FoldOptions};
use inferno::collapse::Collapse;
use inferno::flamegraph::{self, Options as GraphOptions};

/// Samples per second and CPU: enough for a phase of a few seconds, small enough that
/// perf itself stays below a few per cent of a core.
const FREQUENCY: &str = "499";

/// Where a pass's flame graphs go, and the prefix naming them (`REP-TARGET`).
#[derive(Clone, Debug)]
pub struct Flames {
    pub dir: PathBuf,
    pub prefix: String,
}

impl Flames {
    /// Runs `phase` under `perf record`, then draws its graph. Without flame graphs asked
    /// for (`None`), just runs it.
    pub fn profile<T>(
        this: Option<&Flames>,
        phase: &str,
        run: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let Some(flames) = this else {
            return run();
        };
        let name = format!("{}-{phase}", flames.prefix);
        let data = flames.dir.join(format!("{name}.perf.data"));
        let recorder = Recorder::start(&data)?;
        let result = run();
        recorder.stop()?;
        let svg = flames.dir.join(format!("{name}.svg"));
        draw(&data, &svg, &name).with_context(|| format!("drawing {}", svg.display()))?;
        let _ = std::fs::remove_file(&data);
        result
    }
}

/// A running `perf record` of the whole machine.
struct Recorder {
    perf: duct::Handle,
}

impl Recorder {
    fn start(data: &Path) -> Result<Self> {
        let _ = std::fs::remove_file(data);
        let perf = duct::cmd!("perf", "record", "-a", "-g", "-F", FREQUENCY, "-q", "-o", data)
            .stdout_null()
            .stderr_capture()
            .unchecked()
            .start()
            .context("starting perf record")?;
        // perf writes its header once it has opened the events: from then on it samples.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(data).map_or(0, |m| m.len()) == 0 {
            if let Some(out) = perf.try_wait()? {
                bail!(
                    "perf record exited at once: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            if Instant::now() > deadline {
                let _ = perf.kill();
                bail!("perf record did not start within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { perf })
    }

    /// SIGINT, which makes perf write out its samples and exit.
    fn stop(self) -> Result<()> {
        for pid in self.perf.pids() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
        }
        let out = self.perf.wait()?;
        // perf writes its samples out, then dies of the SIGINT it was sent.
        let interrupted = out.status.signal() == Some(nix::sys::signal::Signal::SIGINT as i32);
        if !out.status.success() && !interrupted {
            bail!(
                "perf record failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// `perf script` of `data`, folded and drawn to `svg`.
fn draw(data: &Path, svg: &Path, title: &str) -> Result<()> {
    let script = duct::cmd!("perf", "script", "-i", data)
        .stderr_null()
        .reader()
        .context("running perf script")?;
    let mut folded = Vec::new();
    Folder::from(FoldOptions::default()).collapse(BufReader::new(script), &mut folded)?;
    // The folded stacks too: text to grep, and what inferno-diff-folded compares.
    std::fs::write(svg.with_extension("folded"), &folded)?;
    let mut options = GraphOptions::default();
    options.title = title.to_string();
    let out = BufWriter::new(File::create(svg)?);
    flamegraph::from_reader(&mut options, folded.as_slice(), out)?;
    Ok(())
}
