//! Runs files through a fuzz target on stable Rust, e.g. to reproduce a crash artifact that
//! `cargo fuzz run` found on nightly, under a debugger if need be.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example replay -- <target|all> [FILE|DIR]...
//! ```
//!
//! A directory means every file in it. With no paths, the target's seed corpus is used
//! (`all`: every target's). Each file's name is printed before it runs, so a panic says which.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use corecast_fuzz::{target, Target, TARGETS};

fn files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = fs::read_dir(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!("usage: replay <target|all> [FILE|DIR]...");
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        eprintln!("targets: {}", names.join(", "));
        return ExitCode::FAILURE;
    };
    let selected: Vec<Target> = if name == "all" {
        TARGETS.to_vec()
    } else if let Some(target) = target(&name) {
        vec![target]
    } else {
        eprintln!("unknown target {name:?}");
        return ExitCode::FAILURE;
    };
    let paths: Vec<PathBuf> = args.map(PathBuf::from).collect();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut count = 0;
    for Target { name, run } in selected {
        let inputs = if paths.is_empty() {
            vec![corpus.join(name)]
        } else {
            paths.clone()
        };
        for file in inputs.iter().flat_map(|p| files(p)) {
            let data =
                fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            println!("{name} <- {} ({} bytes)", file.display(), data.len());
            run(&data);
            count += 1;
        }
    }
    println!("{count} inputs, no failures");
    ExitCode::SUCCESS
}
