//! Build script: the commit the node is built from, for `corecast_build_info{commit}`.
//!
//! `CORECAST_COMMIT` in the environment wins (a build from a tarball, a packager); otherwise
//! `git rev-parse --short HEAD`; otherwise `unknown`. Never the network. Cargo reruns this
//! when HEAD moves (the files git keeps it in), not on every build.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CORECAST_COMMIT");
    let commit = std::env::var("CORECAST_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CORECAST_COMMIT={}", commit.trim());
}

/// The short commit hash, and a rerun trigger on each file that says where HEAD points.
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    for file in head_files() {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    Some(commit)
}

/// HEAD, the branch ref it names, and packed-refs: only those that exist (cargo reruns a
/// script every build when a path it watches is missing). Works in linked worktrees, whose
/// HEAD lives in the worktree's git dir and whose refs live in the common dir.
fn head_files() -> Vec<PathBuf> {
    let (Some(git_dir), Some(common_dir)) = (
        git(&["rev-parse", "--absolute-git-dir"]),
        git(&["rev-parse", "--git-common-dir"]).map(|d| absolute(PathBuf::from(d))),
    ) else {
        return Vec::new();
    };
    let git_dir = PathBuf::from(git_dir);
    let mut files = vec![git_dir.join("HEAD"), common_dir.join("packed-refs")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        files.push(common_dir.join(&branch));
        files.push(git_dir.join(branch));
    }
    files.retain(|f| f.exists());
    files
}

fn absolute(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    std::env::current_dir().map_or(path.clone(), |cwd| cwd.join(path))
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
