//! Replays the seed corpus through every fuzz target on stable Rust (what CI runs).
//!
//! Every file under `corpus/` goes through every target, not just its own: a chunk stream is
//! also a fine AMF0 or FLV input, and the cross product costs milliseconds. Each file's
//! truncations and a few deterministic byte flips go through its own target too, a poor
//! man's fuzzing pass that reaches the "incomplete" and error paths without libFuzzer.

use std::fs;
use std::path::{Path, PathBuf};

use corecast_fuzz::{target, Target, TARGETS};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// `(target directory name, file, contents)` for every corpus file, sorted.
fn corpus() -> Vec<(String, PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in fs::read_dir(corpus_root()).expect("fuzz/corpus exists") {
        let dir = dir.expect("readable corpus entry").path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 corpus directory name")
            .to_owned();
        for file in fs::read_dir(&dir).expect("readable corpus directory") {
            let path = file.expect("readable corpus entry").path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if path.is_file() && !hidden {
                let data = fs::read(&path).expect("readable corpus file");
                files.push((name.clone(), path, data));
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    files
}

#[test]
fn every_target_has_a_seed_corpus() {
    let corpus = corpus();
    for Target { name, .. } in TARGETS {
        let seeds = corpus.iter().filter(|(dir, _, _)| dir == name).count();
        assert!(seeds > 0, "fuzz/corpus/{name}/ has no seeds");
    }
    for (dir, path, _) in &corpus {
        assert!(
            target(dir).is_some(),
            "{} is in a directory that names no target",
            path.display()
        );
    }
}

#[test]
fn corpus_stays_small() {
    let total: usize = corpus().iter().map(|(_, _, data)| data.len()).sum();
    assert!(
        total < 200 * 1024,
        "seed corpus is {total} bytes; keep it under 200 KB"
    );
}

#[test]
fn every_corpus_file_through_every_target() {
    for (_, path, data) in corpus() {
        for Target { name, run } in TARGETS {
            eprintln!("{name} <- {}", path.display());
            run(&data);
        }
    }
}

#[test]
fn edge_inputs_through_every_target() {
    let inputs: [&[u8]; 6] = [
        b"",
        b"\x00",
        b"\x03",
        &[0xFF; 64],
        &[0x00; 4096],
        b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00",
    ];
    for input in inputs {
        for target in TARGETS {
            (target.run)(input);
        }
    }
}

/// Lengths at which a seed is cut: every length up to 64, then every 61st.
fn cut_points(len: usize) -> impl Iterator<Item = usize> {
    (0..len.min(64)).chain((64..len).step_by(61))
}

#[test]
fn truncated_and_flipped_seeds_through_their_target() {
    for (dir, path, data) in corpus() {
        let run = target(&dir).expect("corpus directory names a target").run;
        for cut in cut_points(data.len()) {
            eprintln!("{dir} <- {} cut at {cut}", path.display());
            run(&data[..cut]);
        }
        // Deterministic single-byte changes spread over the file.
        let mut state = 0x2545_F491u32 ^ data.len() as u32;
        for _ in 0..32 {
            if data.is_empty() {
                break;
            }
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let mut mutated = data.clone();
            let at = state as usize % mutated.len();
            mutated[at] ^= (state >> 24) as u8 | 1;
            eprintln!("{dir} <- {} byte {at} flipped", path.display());
            run(&mutated);
        }
    }
}
