//! The deployment files: `deploy/kubernetes/` validates offline against the Kubernetes schemas
//! (kubernetes-validate, strict) and against itself and its node configs
//! (`scripts/validate-kubernetes.py`), and those configs pass `corecast --check`; the systemd
//! unit in `deploy/systemd/` verifies and keeps its sandbox. Each check is also shown to fail on
//! a broken copy, so none of them passes by accident.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::process::output_with_deadline;

const LIMIT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python of the tools venv that `scripts/install-deps.sh` makes (kubernetes-validate).
fn tools_python() -> PathBuf {
    let python = repo().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: make test installs it (scripts/install-deps.sh)",
        python.display()
    );
    python
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the manifest validator on `dir`, extracting the ConfigMap's files into `extract`.
fn validate(dir: &Path, extract: Option<&Path>) -> Output {
    let mut command = Command::new(tools_python());
    command
        .arg(repo().join("scripts/validate-kubernetes.py"))
        .arg("--dir")
        .arg(dir);
    if let Some(extract) = extract {
        command.arg("--extract").arg(extract);
    }
    output_with_deadline(&mut command, LIMIT)
}

#[test]
fn the_kubernetes_manifests_validate_and_their_configs_pass_check() {
    let configs = tempfile::tempdir().expect("temp dir");
    let out = validate(&repo().join("deploy/kubernetes"), Some(configs.path()));
    assert!(out.status.success(), "validation failed:\n{}", text(&out));
    let mut checked = 0;
    for entry in fs::read_dir(configs.path()).expect("extracted configs") {
        let path = entry.expect("entry").path();
        let out = output_with_deadline(
            Command::new(env!("CARGO_BIN_EXE_corecast"))
                .arg("--config")
                .arg(&path)
                .arg("--check")
                .env("CORECAST_CLUSTER_TOKEN", "a-token-from-the-secret"),
            LIMIT,
        );
        assert!(
            out.status.success(),
            "{} fails --check:\n{}",
            path.display(),
            text(&out)
        );
        checked += 1;
    }
    assert_eq!(
        checked, 2,
        "the ConfigMap carries origin.toml and edge.toml"
    );
}

/// A copy of deploy/kubernetes with `from` replaced by `to` in `file` (which must contain it).
fn broken_copy(file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = repo().join("deploy/kubernetes");
    fs::create_dir(dir.path().join("schemas")).expect("schemas dir");
    for name in ["schemas/servicemonitor-monitoring-v1.json"]
        .into_iter()
        .map(String::from)
        .chain(
            fs::read_dir(&source)
                .expect("deploy/kubernetes")
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".yaml")),
        )
    {
        let mut content = fs::read_to_string(source.join(&name)).expect("manifest");
        if name == file {
            assert!(content.contains(from), "{file} has no {from:?}");
            content = content.replacen(from, to, 1);
        }
        fs::write(dir.path().join(&name), content).expect("write copy");
    }
    dir
}

#[test]
fn the_validator_refuses_broken_manifests() {
    let cases = [
        (
            "origin.yaml",
            "  replicas: 2",
            "  replica: 2",
            "'replica' was unexpected",
        ),
        (
            "servicemonitor.yaml",
            "interval: 15s",
            "intervall: 15s",
            "'intervall' was unexpected",
        ),
        (
            "edge.yaml",
            "path: /readyz",
            "path: /ready",
            "readiness probe",
        ),
        (
            "edge.yaml",
            "terminationGracePeriodSeconds: 45",
            "terminationGracePeriodSeconds: 20",
            "terminationGracePeriodSeconds",
        ),
        (
            "origin.yaml",
            "containerPort: 1940",
            "containerPort: 1941",
            "containerPort pull",
        ),
        (
            "configmap.yaml",
            "corecast-origin.corecast.svc",
            "corecast-origins.corecast.svc",
            "no headless Service",
        ),
        (
            "origin.yaml",
            "command: [\"/bin/sh\"",
            "cmd: [\"/bin/sh\"",
            "'cmd' was unexpected",
        ),
        (
            "edge.yaml",
            "name: corecast-cluster",
            "name: corecast-clusters",
            "CORECAST_CLUSTER_TOKEN",
        ),
    ];
    for (file, from, to, expected) in cases {
        let dir = broken_copy(file, from, to);
        let out = validate(dir.path(), None);
        let said = text(&out);
        assert!(!out.status.success(), "{file} with {to:?} passed:\n{said}");
        assert!(
            said.contains(expected),
            "{file} with {to:?}: expected {expected:?} in:\n{said}"
        );
    }
}

fn systemd_analyze(args: &[&str], unit: &Path) -> Output {
    output_with_deadline(Command::new("systemd-analyze").args(args).arg(unit), LIMIT)
}

/// The unit with its binary path pointed at the one this test built (verify checks it exists).
fn unit_copy(dir: &Path, edit: impl Fn(&str) -> String) -> PathBuf {
    let unit = fs::read_to_string(repo().join("deploy/systemd/corecast.service")).expect("unit");
    assert!(unit.contains("/usr/local/bin/corecast"));
    let unit = unit.replace("/usr/local/bin/corecast", env!("CARGO_BIN_EXE_corecast"));
    let path = dir.join("corecast.service");
    fs::write(&path, edit(&unit)).expect("write unit");
    path
}

#[test]
fn the_systemd_unit_verifies_and_keeps_its_sandbox() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = unit_copy(dir.path(), |unit| unit.to_string());
    let out = systemd_analyze(&["verify"], &unit);
    assert!(
        out.status.success(),
        "systemd-analyze verify:\n{}",
        text(&out)
    );
    // Exposure 2.0 or less ("OK" in systemd-analyze's words; the threshold is in tenths).
    let out = systemd_analyze(&["security", "--offline=yes", "--threshold=20"], &unit);
    assert!(
        out.status.success(),
        "the unit's exposure is over 2.0:\n{}",
        text(&out)
    );

    let unsandboxed = unit_copy(dir.path(), |unit| {
        unit.lines()
            .filter(|line| {
                !line.starts_with("Protect")
                    && !line.starts_with("Private")
                    && !line.starts_with("Restrict")
                    && !line.starts_with("SystemCall")
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let out = systemd_analyze(
        &["security", "--offline=yes", "--threshold=20"],
        &unsandboxed,
    );
    assert!(
        !out.status.success(),
        "a unit without its sandbox passed the threshold:\n{}",
        text(&out)
    );
}
