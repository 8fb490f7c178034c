//! Human-readable summaries: summary.md and the terminal's closing lines.
use crate::{RunResult, Verdict};

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn counts(run: &RunResult) -> String {
    let mut parts = vec![];
    for v in [
        Verdict::Passed,
        Verdict::Failed,
        Verdict::Crashed,
        Verdict::Hung,
        Verdict::InfraError,
        Verdict::NotRun,
        Verdict::Flaky,
        Verdict::Skipped,
        Verdict::Expunged,
    ] {
        let n = run.count(v);
        if n > 0 {
            parts.push(format!("{n} {}", v.as_str()));
        }
    }
    if parts.is_empty() {
        "no tests".into()
    } else {
        parts.join(", ")
    }
}

pub fn summary_markdown(run: &RunResult) -> String {
    let mut md = format!(
        "# vm-test {}: {}\n\n",
        run.id,
        run.verdict.as_str().to_uppercase()
    );
    if let Some(r) = &run.reason {
        md.push_str(&format!("**{r}**\n\n"));
    }
    md.push_str("| | |\n|---|---|\n");
    let accel = match &run.accel_note {
        Some(n) => format!("{} ({n})", run.accel),
        None => run.accel.clone(),
    };
    let server = match &run.server {
        None => "not used".into(),
        Some(s) => {
            let facts = match (&s.mode, &s.error) {
                (Some(m), None) => format!("{} {} in {m} mode", s.name, opt(&s.version)),
                (m, Some(e)) => format!(
                    "{} {} mode {}: {e}",
                    s.name,
                    opt(&s.version),
                    m.as_deref().unwrap_or("unknown")
                ),
                (None, None) => "not used".into(),
            };
            match &s.expected_mode {
                Some(m) => format!("{facts}; expected {m} (--expect-mode)"),
                None => facts,
            }
        }
    };
    let rows = [
        (
            "kernel",
            format!("{} (`{}`)", opt(&run.kernel_release), run.kernel_image),
        ),
        ("accelerator", accel),
        ("machine", run.machine.clone()),
        ("image", format!("`{}`", run.image)),
        ("server", server),
        ("e2fsprogs", opt(&run.e2fsprogs_version).to_string()),
        (
            "boot to agent ready",
            run.boot_to_ready_ms.map_or("-".into(), secs),
        ),
        (
            "boot phases",
            format!(
                "kernel {} / server setup {} / host wall to first test {}",
                run.kernel_boot_ms.map_or("-".into(), secs),
                run.setup_ms.map_or("-".into(), secs),
                run.host_ready_ms.map_or("-".into(), secs)
            ),
        ),
        (
            "duration",
            format!(
                "{}{}",
                secs(run.duration_ms),
                if run.boots > 1 {
                    format!(" ({} boots)", run.boots)
                } else {
                    String::new()
                }
            ),
        ),
        ("tests", counts(run)),
        ("started", run.started_at.clone()),
    ];
    for (k, v) in rows {
        md.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
    }
    md.push_str("\n| test | verdict | server mode | time | note |\n|---|---|---|---|---|\n");
    for t in &run.tests {
        let mut note = t.reason.clone().unwrap_or_default();
        if t.slow {
            note = format!("slow; {note}");
        }
        if let Some(why) = &t.accepted {
            note = format!("accepted ({why}); {note}");
        }
        let modes = match run.server.as_ref().map(|s| s.modes_of(&t.name)) {
            Some(m) if !m.is_empty() => m.join(", "),
            _ => "-".to_string(),
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            t.name,
            t.verdict.as_str(),
            modes.replace('|', "\\|"),
            secs(t.duration_ms),
            note.replace('|', "\\|").replace('\n', " ")
        ));
    }
    if let Some(c) = &run.console_excerpt {
        md.push_str(&format!(
            "\n## End of the console\n\n```\n{}\n```\n",
            c.trim_end()
        ));
    }
    let findings: Vec<_> = run
        .tests
        .iter()
        .flat_map(|t| &t.findings)
        .chain(&run.findings)
        .collect();
    if !findings.is_empty() {
        md.push_str("\n## Kernel reports\n");
        for f in findings {
            md.push_str(&format!(
                "\n### {:?} during {}\n`{}`\n\n```\n{}\n```\n",
                f.kind,
                f.test.as_deref().unwrap_or("(no test)"),
                f.title,
                f.excerpt.trim_end()
            ));
        }
    }
    md
}

/// The closing lines printed on the terminal.
pub fn summary_text(run: &RunResult) -> String {
    let mut s = String::new();
    // Skipped and expunged tests are in summary.md; the terminal lists what needs a look.
    for t in run.tests.iter().filter(|t| {
        !matches!(
            t.verdict,
            Verdict::Passed | Verdict::Skipped | Verdict::Expunged
        )
    }) {
        s.push_str(&format!(
            "  {:<11} {}: {}\n",
            t.verdict.as_str(),
            t.name,
            t.reason.as_deref().unwrap_or("")
        ));
        for f in &t.findings {
            s.push_str(&format!("              {:?}: {}\n", f.kind, f.title));
        }
    }
    s.push_str(&format!(
        "vm-test {}: {} ({}) in {}, {} accel, boot-to-ready {}\n",
        run.id,
        run.verdict.as_str().to_uppercase(),
        counts(run),
        secs(run.duration_ms),
        run.accel,
        run.boot_to_ready_ms.map_or("-".into(), secs),
    ));
    if let Some(r) = &run.reason {
        s.push_str(&format!("  reason: {r}\n"));
    }
    s
}
