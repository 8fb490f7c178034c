//! The GitHub Actions workflows (.github/workflows/ci.yml and nightly.yml) are valid and keep
//! the promises the README makes about them. The scripts they share (.github/actions,
//! .github/scripts) pass shellcheck, the cache-pruning script keeps exactly what a job used,
//! and the README's example profile parses.
//!
//! actionlint, the usual checker, is published only on GitHub, which these machines cannot
//! reach (ci.yml runs the author's image there). Here three checks stand in for it: GitHub's
//! workflow schema (check-jsonschema, pinned by `cargo xtask setup`), shellcheck on every
//! `run:` script with its `${{ }}` expressions replaced as actionlint does, and the job and
//! step references (`needs`, `needs.X.outputs`, `steps.X.outputs`).
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_yaml_ng::Value;
use test_support::needs::{needs, tool_from};

const WORKFLOWS: [&str; 2] = [".github/workflows/ci.yml", ".github/workflows/nightly.yml"];

fn root() -> PathBuf {
    plumbing::paths::workspace_root()
}

/// shellcheck, or `None` (after `needs` decided: fail under CI, skip elsewhere).
fn shellcheck() -> Option<PathBuf> {
    needs(tool_from("shellcheck", "shellcheck"))
        .then(|| plumbing::util::which("shellcheck").unwrap())
}

/// check-jsonschema as `cargo xtask setup` installs it.
fn check_jsonschema() -> Option<PathBuf> {
    let exe = hostsetup::tools::check_jsonschema();
    needs((!exe.is_file()).then(|| {
        format!(
            "needs check-jsonschema at {} (cargo xtask setup)",
            exe.display()
        )
    }))
    .then_some(exe)
}

fn load(rel: &str) -> Value {
    let path = root().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse(&text, rel)
}

fn parse(text: &str, name: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"))
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

/// Validates files against one of check-jsonschema's vendored SchemaStore schemas.
fn schema_check(exe: &Path, schema: &str, files: &[PathBuf]) -> std::process::Output {
    Command::new(exe)
        .args(["--builtin-schema", schema])
        .args(files)
        .output()
        .expect("check-jsonschema runs")
}

/// Problems shellcheck finds in a workflow's `run:` scripts, each `${{ expr }}` replaced by a
/// same-length word of underscores (actionlint's way: an expression is opaque text).
fn shellcheck_runs(shellcheck: &Path, workflow: &Value) -> Vec<String> {
    let mut problems = vec![];
    for script in runs(&all_steps(workflow)) {
        let mut child = Command::new(shellcheck)
            .args(["--shell=bash", "--format=gcc", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("shellcheck runs");
        let text = blank_expressions(&script);
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            problems.push(format!(
                "{}
{}",
                String::from_utf8_lossy(&out.stdout),
                script
            ));
        }
    }
    problems
}

fn blank_expressions(script: &str) -> String {
    let mut out = String::new();
    let mut rest = script;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .map_or(rest.len(), |e| start + e + 2);
        out.push_str(&"_".repeat(end - start));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Dangling references: `needs:` naming no job, `needs.X.` outside X's dependants,
/// `steps.X.` with no step `id: X` in the job.
fn dangling_references(workflow: &Value) -> Vec<String> {
    let mut problems = vec![];
    let Some(jobs) = workflow.get("jobs").and_then(Value::as_mapping) else {
        return vec!["no jobs".into()];
    };
    let names: BTreeSet<&str> = jobs.keys().filter_map(Value::as_str).collect();
    for (name, job) in jobs {
        let name = name.as_str().unwrap_or("?");
        let needed: Vec<&str> = match job.get("needs") {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Sequence(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        for n in &needed {
            if !names.contains(n) {
                problems.push(format!("job {name} needs unknown job {n}"));
            }
        }
        let text = serde_yaml_ng::to_string(job).unwrap();
        let ids: BTreeSet<String> = steps(job)
            .iter()
            .map(|s| str_of(s, "id").to_string())
            .filter(|i| !i.is_empty())
            .collect();
        for (prefix, known) in [
            (
                "needs.",
                needed
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<BTreeSet<_>>(),
            ),
            ("steps.", ids),
        ] {
            for (i, _) in text.match_indices(prefix) {
                let before = text[..i].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let reference: String = text[i + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
                    .collect();
                if !reference.is_empty() && !known.contains(&reference) {
                    problems.push(format!("job {name}: {prefix}{reference} refers to nothing"));
                }
            }
        }
    }
    problems
}

#[test]
fn both_workflows_match_githubs_schema() {
    let Some(exe) = check_jsonschema() else {
        return;
    };
    let files: Vec<PathBuf> = WORKFLOWS.iter().map(|w| root().join(w)).collect();
    let out = schema_check(&exe, "vendor.github-workflows", &files);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let action = root().join(".github/actions/debian-container/action.yml");
    let out = schema_check(&exe, "vendor.github-actions", &[action]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn run_scripts_pass_shellcheck_and_references_resolve() {
    let Some(shellcheck) = shellcheck() else {
        return;
    };
    for w in WORKFLOWS {
        let workflow = load(w);
        let problems = shellcheck_runs(&shellcheck, &workflow);
        assert!(problems.is_empty(), "{w}:\n{}", problems.join("\n"));
        let dangling = dangling_references(&workflow);
        assert!(dangling.is_empty(), "{w}: {dangling:?}");
    }
}

/// The checks really check: a workflow with an unknown key, a dangling `needs`, a step
/// output that no step has and an unquoted variable is refused by each of them.
#[test]
fn the_checks_refuse_a_broken_workflow() {
    let (Some(exe), Some(shellcheck)) = (check_jsonschema(), shellcheck()) else {
        return;
    };
    let text = "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    needs: nowhere\n    \
                timeout-minutez: 5\n    steps:\n      - run: ls $DIR ${{ steps.gone.outputs.x }}\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yml");
    std::fs::write(&file, text).unwrap();
    let out = schema_check(&exe, "vendor.github-workflows", &[file]);
    assert!(!out.status.success(), "the schema accepted an unknown key");
    let workflow = parse(text, "broken.yml");
    let problems = shellcheck_runs(&shellcheck, &workflow).join("\n");
    assert!(
        problems.contains("SC2086"),
        "shellcheck did not run: {problems}"
    );
    let dangling = dangling_references(&workflow);
    assert!(
        dangling.iter().any(|d| d.contains("unknown job nowhere")),
        "{dangling:?}"
    );
    assert!(
        dangling.iter().any(|d| d.contains("steps.gone")),
        "{dangling:?}"
    );
}

#[test]
fn shared_scripts_pass_shellcheck() {
    let Some(shellcheck) = shellcheck() else {
        return;
    };
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
        // A nightly that silently ran classic would be green without one iomap request.
        "--expect-mode iomap",
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

/// Every job that starts the Debian container gets the host from `cargo xtask setup` (the
/// one package list) with the Rust toolchain and nextest pinned, and .ci/run does the same.
#[test]
fn hosts_are_set_up_by_xtask_setup_with_pinned_tools() {
    let action = load(".github/actions/debian-container/action.yml");
    let scripts = runs(&steps(action.get("runs").unwrap())).join("\n");
    assert!(scripts.contains("cargo xtask setup"), "{scripts}");
    assert!(
        scripts.contains("--default-toolchain 1.95.0"),
        "the Rust toolchain is not pinned: {scripts}"
    );
    let nextest = hostsetup::tools::NEXTEST.version;
    assert!(
        scripts.contains(&format!("get.nexte.st/{nextest}/linux")),
        "nextest is not pinned to {nextest}: {scripts}"
    );
    assert!(
        !scripts.contains("latest"),
        "an unpinned download: {scripts}"
    );
    assert!(
        action
            .get("inputs")
            .and_then(|i| i.get("apt-packages"))
            .is_none(),
        "a second package list"
    );
    for w in WORKFLOWS {
        let workflow = load(w);
        let all = all_steps(&workflow);
        let containers = all
            .iter()
            .filter(|s| str_of(s, "uses") == "./.github/actions/debian-container")
            .count();
        assert!(containers >= 1, "{w} never starts the container");
    }
    let ci = load(".github/workflows/ci.yml");
    assert!(
        runs(&all_steps(&ci))
            .iter()
            .any(|r| r.contains("rhysd/actionlint:1.")),
        "ci.yml does not run the pinned actionlint"
    );
    let ci_run = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    for step in [
        "cargo xtask setup",
        "cargo fmt --all --check",
        "-- -D warnings",
        "cargo nextest run --workspace",
    ] {
        assert!(ci_run.contains(step), ".ci/run lacks `{step}`");
    }
    assert!(
        !ci_run.contains("apt-get install"),
        ".ci/run keeps its own package list"
    );
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
    let cfg = profile::HarnessConfig::parse(toml, Path::new("README.md"), Path::new("/ws"))
        .unwrap_or_else(|e| panic!("the README example does not parse: {e:#}"));
    let p = cfg.profile(Some("my-tree")).expect("profile my-tree");
    assert_eq!(p.kernel.source_dir.as_deref(), Some(Path::new("../linux")));
    assert!(p.kernel.series.is_some() && p.kernel.git_ref.is_some());
    assert_eq!(p.kernel.iomap, kernel::IomapMode::Required);
    assert_eq!(p.kernel.fragments.len(), 3);
    let fstests: Value =
        serde_yaml_ng::to_value(p.table.get("fstests").expect("[fstests] kept")).unwrap();
    assert!(str_of(&fstests, "git").starts_with("https://"));
}

/// The nightly's baseline decision, run as the workflow runs it: bash over the shards'
/// downloaded exit codes and results.json files.
#[test]
fn nightly_keeps_the_baseline_when_a_shard_lost_coverage() {
    if !needs(test_support::needs::tool("jq")) {
        return;
    }
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
