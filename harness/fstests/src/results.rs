//! What an fstests run reported: the xunit report (`check -R xunit` or `xunit-quiet` writes
//! `result.xml` in the report directory), the cumulative `check.log`, `check.time`, and the
//! per-test files left in a result directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// How one test ended, in fstests' terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    NotRun,
}

/// One test case of an xunit report.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub test: String,
    pub status: Status,
    pub seconds: Option<f64>,
    /// fstests' message: notrun reason ("this test requires ...") or failure message
    /// ("- output mismatch (see .../generic/001.out.bad)").
    pub message: Option<String>,
    /// From xunit: the .out.bad diff text, the .full text, the dmesg text, when present.
    pub diff: Option<String>,
    pub full: Option<String>,
    pub dmesg: Option<String>,
}

/// Which text-bearing child of a `<testcase>` we are inside.
#[derive(Clone, Copy)]
enum Body {
    Full,
    Dmesg,
    Diff,
}

/// Parses fstests' xunit report (both `xunit` and `xunit-quiet`). Every `<testcase>` in
/// the document is one outcome, in document order; a `<failure>` (or `<error>`) makes it a
/// failure, a `<skipped>` a not-run, anything else a pass.
pub fn parse_xunit(xml: &str) -> anyhow::Result<Vec<Outcome>> {
    let mut reader = Reader::from_str(xml);
    let mut outcomes = Vec::new();
    let mut current: Option<Outcome> = None;
    let mut body: Option<(Body, BodyText)> = None;
    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .with_context(|| format!("fstests xunit report: malformed XML near byte {pos}"))?;
        let (e, self_closed) = match event {
            Event::Eof => break,
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(e) if e.name().as_ref() == b"testcase" => {
                outcomes.extend(current.take());
                continue;
            }
            Event::End(_) => {
                if let (Some((kind, text)), Some(case)) = (body.take(), current.as_mut()) {
                    let text = Some(text.finish());
                    match kind {
                        Body::Full => case.full = text,
                        Body::Dmesg => case.dmesg = text,
                        Body::Diff => case.diff = text,
                    }
                }
                continue;
            }
            Event::CData(c) => {
                if let Some((_, text)) = body.as_mut() {
                    text.cdata.push_str(&String::from_utf8_lossy(&c));
                    text.saw_cdata = true;
                }
                continue;
            }
            Event::Text(t) => {
                if let Some((_, text)) = body.as_mut() {
                    text.plain
                        .push_str(&t.decode().context("fstests xunit report: text encoding")?);
                }
                continue;
            }
            Event::GeneralRef(r) => {
                if let Some((_, text)) = body.as_mut() {
                    let name = r
                        .decode()
                        .context("fstests xunit report: entity encoding")?;
                    text.plain.push_str(&resolve_entity(&name));
                }
                continue;
            }
            _ => continue,
        };
        if e.name().as_ref() == b"testcase" {
            outcomes.extend(current.take()); // an unclosed previous case
            current = Some(testcase(&e)?);
            if self_closed {
                outcomes.extend(current.take());
            }
            continue;
        }
        let Some(case) = current.as_mut() else {
            continue;
        };
        match e.name().as_ref() {
            b"failure" | b"error" => {
                case.status = Status::Fail;
                case.message = attr(&e, "message")?.filter(|m| !m.is_empty());
            }
            b"skipped" => {
                case.status = Status::NotRun;
                case.message = attr(&e, "message")?.filter(|m| !m.is_empty());
            }
            b"system-out" if !self_closed => body = Some((Body::Full, BodyText::default())),
            b"kernel-log" if !self_closed => body = Some((Body::Dmesg, BodyText::default())),
            b"system-err" if !self_closed => body = Some((Body::Diff, BodyText::default())),
            _ => {}
        }
    }
    if current.is_some() {
        bail!("fstests xunit report: document ends inside a <testcase> (truncated report?)");
    }
    Ok(outcomes)
}

#[derive(Default)]
struct BodyText {
    cdata: String,
    plain: String,
    saw_cdata: bool,
}

impl BodyText {
    /// fstests writes `<![CDATA[` then a newline before the file's text: drop that newline.
    /// Without CDATA (another writer) the element's trimmed text is the body.
    fn finish(self) -> String {
        if self.saw_cdata {
            let text = self.cdata;
            text.strip_prefix('\n').map(str::to_string).unwrap_or(text)
        } else {
            self.plain.trim().to_string()
        }
    }
}

fn testcase(e: &BytesStart) -> anyhow::Result<Outcome> {
    let test = attr(e, "name")?
        .filter(|n| !n.is_empty())
        .context("fstests xunit report: <testcase> without a name")?;
    let seconds = attr(e, "time")?.and_then(|t| t.trim().parse::<f64>().ok());
    Ok(Outcome {
        test,
        status: Status::Pass,
        seconds,
        message: None,
        diff: None,
        full: None,
        dmesg: None,
    })
}

/// An attribute's value, unescaped. fstests writes failure messages without escaping
/// them, so a value that does not unescape is taken as written.
fn attr(e: &BytesStart, name: &str) -> anyhow::Result<Option<String>> {
    for a in e.attributes().with_checks(false) {
        let a = a.with_context(|| {
            format!(
                "fstests xunit report: bad attribute in <{}>",
                String::from_utf8_lossy(e.name().as_ref())
            )
        })?;
        if a.key.as_ref() == name.as_bytes() {
            let value = match a.normalized_value(quick_xml::XmlVersion::Implicit1_0) {
                Ok(v) => v.into_owned(),
                Err(_) => String::from_utf8_lossy(&a.value).into_owned(),
            };
            return Ok(Some(value));
        }
    }
    Ok(None)
}

fn resolve_entity(name: &str) -> String {
    let num = |digits: &str, radix| {
        u32::from_str_radix(digits, radix)
            .ok()
            .and_then(char::from_u32)
    };
    let resolved = match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        n if n.starts_with("#x") => num(&n[2..], 16),
        n if n.starts_with('#') => num(&n[1..], 10),
        _ => None,
    };
    resolved.map_or_else(|| format!("&{name};"), String::from)
}

/// One summary that `check` appended to `check.log` at the end of a section run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckLogRun {
    /// Set when parsing check's console summary ("SECTION       -- name"); check.log
    /// itself does not name sections.
    pub section: Option<String>,
    pub ran: Vec<String>,
    pub not_run: Vec<String>,
    pub failures: Vec<String>,
    /// "Kernel version: ..." line.
    pub kernel: Option<String>,
    /// The `date` line that follows it, as written.
    pub date: Option<String>,
    /// The run was interrupted (check printed "Interrupted!").
    pub interrupted: bool,
}

/// Parses check.log (or check's console summary) into one entry per run. A run starts at
/// "Kernel version:" or "SECTION -- " and ends at "Passed all N tests" / "Failed N of M
/// tests"; an unfinished run at the end of the text is kept.
pub fn parse_check_log(text: &str) -> Vec<CheckLogRun> {
    let mut runs = Vec::new();
    let mut current: Option<CheckLogRun> = None;
    let mut expect_date = false;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(section) = line
            .strip_prefix("SECTION")
            .and_then(|r| r.trim_start().strip_prefix("--"))
        {
            runs.extend(current.take());
            current = Some(CheckLogRun {
                section: Some(section.trim().to_string()),
                ..Default::default()
            });
            continue;
        }
        if let Some(kernel) = line.strip_prefix("Kernel version:") {
            // A console summary names the section first; check.log starts with this line.
            let keep = current
                .as_ref()
                .is_some_and(|r| r.kernel.is_none() && r.ran.is_empty());
            if !keep {
                runs.extend(current.take());
            }
            current.get_or_insert_with(Default::default).kernel = Some(kernel.trim().to_string());
            expect_date = true;
            continue;
        }
        if std::mem::take(&mut expect_date) && !line.is_empty() && !is_summary_line(line) {
            // check writes `date` right after the kernel version.
            current.get_or_insert_with(Default::default).date = Some(line.to_string());
            continue;
        }
        if let Some(list) = line.strip_prefix("Ran:") {
            current.get_or_insert_with(Default::default).ran = words(list);
        } else if let Some(list) = line.strip_prefix("Not run:") {
            current.get_or_insert_with(Default::default).not_run = words(list);
        } else if let Some(list) = line.strip_prefix("Failures:") {
            current.get_or_insert_with(Default::default).failures = words(list);
        } else if line == "Interrupted!" {
            current.get_or_insert_with(Default::default).interrupted = true;
        } else if line.starts_with("Passed all ")
            || (line.starts_with("Failed ") && line.ends_with(" tests"))
        {
            runs.push(current.take().unwrap_or_default());
        }
    }
    runs.extend(current);
    runs
}

fn is_summary_line(line: &str) -> bool {
    [
        "Ran:",
        "Not run:",
        "Failures:",
        "Failed ",
        "Passed all ",
        "Interrupted!",
    ]
    .iter()
    .any(|p| line.starts_with(p))
}

fn words(list: &str) -> Vec<String> {
    list.split_whitespace().map(str::to_string).collect()
}

/// The per-test files fstests leaves in a result directory (`<dir>/<test>.out.bad`,
/// `.full`, `.dmesg`, `.hints`, `.notrun`, saved core dumps `.core.*`), only those that
/// exist, in that order. `result_dir` is the report directory (`results/` or
/// `results/<section>/`); `test` is "generic/001".
pub fn artifacts(result_dir: &Path, test: &str) -> Vec<PathBuf> {
    let base = result_dir.join(test);
    let mut found: Vec<PathBuf> = [".out.bad", ".full", ".dmesg", ".hints", ".notrun"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", base.display())))
        .filter(|p| p.is_file())
        .collect();
    // Core dumps are saved as <test>.core.<md5>[.compressor suffix].
    if let (Some(dir), Some(name)) = (base.parent(), base.file_name()) {
        let prefix = format!("{}.core.", name.to_string_lossy());
        let mut cores: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        cores.sort();
        found.extend(cores);
    }
    found
}

/// check.time lines ("generic/001 5": the last passing run's seconds) -> seconds.
/// Lines that do not parse are skipped.
pub fn parse_check_time(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let test = fields.next()?;
            let secs = fields.next()?.parse().ok()?;
            fields.next().is_none().then(|| (test.to_string(), secs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report shaped the way common/report writes one.
    fn report(cases: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite\n name=\"xfstests\"\n \
             failures=\"1\" skipped=\"1\" tests=\"2\" time=\"3\"\n>\n\t<properties>\n\t\t\
             <property name=\"SECTION\" value=\"s\"/>\n\t</properties>\n{cases}</testsuite>\n"
        )
    }

    #[test]
    fn escaped_notrun_message_is_unescaped() {
        let xml = report(
            "\t<testcase classname=\"xfstests.s\" name=\"generic/003\" time=\"0\">\n\t\t\
             <skipped message=\"fs doesn&apos;t support &quot;x&quot; &lt;16T &amp; more\" />\n\t\
             </testcase>\n",
        );
        let o = &parse_xunit(&xml).unwrap()[0];
        assert_eq!(o.status, Status::NotRun);
        assert_eq!(
            o.message.as_deref(),
            Some("fs doesn't support \"x\" <16T & more")
        );
    }

    #[test]
    fn unescaped_failure_message_is_taken_as_written() {
        // check does not escape _err_msg in <failure message="...">.
        let xml = report(
            "\t<testcase classname=\"xfstests.s\" name=\"generic/004\" time=\"1\">\n\t\t\
             <failure message=\"- output mismatch (see /r&d/generic/004.out.bad)\" type=\"TestFail\" />\n\t\
             </testcase>\n",
        );
        let o = &parse_xunit(&xml).unwrap()[0];
        assert_eq!(o.status, Status::Fail);
        assert_eq!(
            o.message.as_deref(),
            Some("- output mismatch (see /r&d/generic/004.out.bad)")
        );
    }

    #[test]
    fn split_cdata_and_bodies() {
        // encode_cdata splits "]]>" into two CDATA sections.
        let xml = report(
            "\t<testcase classname=\"xfstests.s\" name=\"generic/005\" time=\"2\">\n\t\t\
             <failure message=\"m\" type=\"TestFail\" />\n\t\t<system-out>\n<![CDATA[\n\
             a ]]]]><![CDATA[> b\n\nend\n]]>\n\t\t</system-out>\n\t\t<system-err>\n<![CDATA[\n\
             -x\n+y\n]]>\n\t\t</system-err>\n\t</testcase>\n",
        );
        let o = &parse_xunit(&xml).unwrap()[0];
        assert_eq!(o.full.as_deref(), Some("a ]]> b\n\nend\n"));
        assert_eq!(o.diff.as_deref(), Some("-x\n+y\n"));
        assert_eq!(o.dmesg, None);
    }

    #[test]
    fn plain_text_bodies_missing_times_and_wrappers() {
        let xml = "<testsuites><testsuite name=\"a\">\
            <testcase name=\"generic/001\"/>\
            <testcase name=\"generic/002\" time=\"\"><skipped/></testcase>\
            <testcase name=\"generic/003\" time=\"1.5\"><error message=\"\"/>\
            <system-out>  x &amp; y  </system-out></testcase>\
            </testsuite></testsuites>";
        let got = parse_xunit(xml).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].status, got[0].seconds), (Status::Pass, None));
        assert_eq!(
            (got[1].status, got[1].seconds, &got[1].message),
            (Status::NotRun, None, &None)
        );
        assert_eq!(
            (got[2].status, got[2].seconds, &got[2].message),
            (Status::Fail, Some(1.5), &None)
        );
        assert_eq!(got[2].full.as_deref(), Some("x & y"));
    }

    #[test]
    fn broken_reports_are_errors() {
        let truncated =
            report("\t<testcase classname=\"xfstests.s\" name=\"generic/001\" time=\"1\">\n");
        let truncated = truncated.trim_end_matches("</testsuite>\n");
        assert!(parse_xunit(truncated).is_err());
        assert!(parse_xunit("<testsuite><testcase time=\"1\"/></testsuite>")
            .unwrap_err()
            .to_string()
            .contains("without a name"));
        assert!(parse_xunit("<testsuite><testcase name=\"a/1\"></testsuite>").is_err());
        assert!(parse_xunit("").unwrap().is_empty());
    }

    #[test]
    fn check_log_runs_and_oddities() {
        let text = "\nKernel version: 6.1.0\nMon Jan  1 00:00:00 UTC 2024\nRan: a/1 a/2\n\
            Failures: a/2\nFailed 1 of 2 tests\n\nRan: b/1\nPassed all 1 tests\n\
            Kernel version: 6.2.0\nTue Jan  2 00:00:00 UTC 2024\nRan: c/1\n";
        let runs = parse_check_log(text);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].kernel.as_deref(), Some("6.1.0"));
        assert_eq!(
            runs[0].date.as_deref(),
            Some("Mon Jan  1 00:00:00 UTC 2024")
        );
        assert_eq!(runs[0].failures, ["a/2"]);
        // An old-style entry without the kernel line still counts.
        assert_eq!(
            (runs[1].ran.clone(), runs[1].kernel.clone()),
            (vec!["b/1".to_string()], None)
        );
        // An unfinished run at the end is kept.
        assert_eq!(runs[2].ran, ["c/1"]);
        assert!(parse_check_log("").is_empty());
    }

    #[test]
    fn check_time_skips_malformed_lines() {
        let t =
            parse_check_time("generic/001 5\nbad\ngeneric/002 x\ngeneric/003 1 2\n\nxfs/001 30\n");
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            [("generic/001".into(), 5), ("xfs/001".into(), 30)]
        );
    }
}
