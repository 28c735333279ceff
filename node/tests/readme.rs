//! The READMEs' commands keep working: every shell block of `README.md` and
//! `loadtest/README.md` marked `sh test` or `sh test-background` runs against a debug node on
//! free loopback ports, as README's "The commands in the READMEs are tested" describes; and
//! the checks the blocks cannot make themselves (the config `make run` uses passes `--check`;
//! every libx264 command makes 4:2:0 video).

mod support;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::node::{free_port, Node};
use support::process::{output_with_deadline, status_with_deadline};

/// How long a `sh test` block may run.
const BLOCK_LIMIT: Duration = Duration::from_secs(60);

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ has a parent")
        .to_path_buf()
}

/// A marked shell block of a Markdown file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    /// The line of its opening fence (1-based), to name it in failures.
    line: usize,
    /// `sh test-background`: left running for the blocks after it.
    background: bool,
    /// The commands.
    text: String,
}

/// The `sh test` and `sh test-background` blocks of `markdown`, in order.
fn marked_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(Option<Block>, String)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let Some(info) = line.strip_prefix("```") else {
            if let Some((_, text)) = &mut open {
                text.push_str(line);
                text.push('\n');
            }
            continue;
        };
        match open.take() {
            Some((block, text)) => blocks.extend(block.map(|b| Block { text, ..b })),
            None => {
                let words: Vec<&str> = info.split_whitespace().collect();
                let block = match words.as_slice() {
                    ["sh", "test"] => Some(false),
                    ["sh", "test-background"] => Some(true),
                    _ => None,
                }
                .map(|background| Block {
                    line: index + 1,
                    background,
                    text: String::new(),
                });
                open = Some((block, String::new()));
            }
        }
    }
    blocks
}

/// The test node's ports, which replace the READMEs' defaults.
struct Ports {
    rtmp: u16,
    http: u16,
    rtmpt: u16,
}

/// The documented rewrite: default loopback ports to the test node's.
fn rewrite(text: &str, ports: &Ports) -> String {
    text.replace(
        "rtmp://127.0.0.1/",
        &format!("rtmp://127.0.0.1:{}/", ports.rtmp),
    )
    .replace("127.0.0.1:1935", &format!("127.0.0.1:{}", ports.rtmp))
    .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", ports.http))
    .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", ports.rtmpt))
}

/// Where and how the blocks run.
struct Scratch {
    dir: tempfile::TempDir,
    /// `PATH` with the debug binaries first.
    path: String,
    /// The debug `corecast-loadtest`, when built.
    loadtest: Option<PathBuf>,
    ports: Ports,
}

impl Scratch {
    fn new(ports: Ports) -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["config", "loadtest"] {
            std::os::unix::fs::symlink(root().join(name), dir.path().join(name))
                .expect("link into the scratch directory");
        }
        make_input_mp4(&dir.path().join("input.mp4"));
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_corecast"))
            .parent()
            .expect("binary directory")
            .to_path_buf();
        let loadtest = Some(bin_dir.join("corecast-loadtest")).filter(|p| p.exists());
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Scratch {
            dir,
            path,
            loadtest,
            ports,
        }
    }

    /// Starts `block` in a process group of its own, its output in a log file.
    fn spawn(&self, file: &str, block: &Block) -> (Child, PathBuf) {
        use std::os::unix::process::CommandExt;
        let log = self
            .dir
            .path()
            .join(format!("{}-{}.log", file.replace('/', "_"), block.line));
        let out = File::create(&log).expect("block log");
        let err = out.try_clone().expect("block log");
        let mut command = Command::new("bash");
        command
            .args(["-e", "-o", "pipefail", "-c"])
            .arg(rewrite(&block.text, &self.ports))
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        if let Some(loadtest) = &self.loadtest {
            command.env("B", loadtest);
        }
        let child = command.spawn().expect("start bash");
        (child, log)
    }
}

/// A short H.264/AAC MP4 for the blocks that publish `input.mp4`.
fn make_input_mp4(path: &Path) {
    let out = output_with_deadline(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args([
                "-t",
                "4",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "25",
            ])
            .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k"])
            .arg(path),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "ffmpeg could not make input.mp4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills a block's whole process group (bash and what it started) and reaps bash.
fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = status_with_deadline(
        Command::new("kill").args(["-KILL", "--", &group]),
        Duration::from_secs(10),
    );
    support::process::kill_and_reap(child);
}

/// Waits for `child` within `limit`; None (and the group killed) when it runs longer.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            kill_group(child);
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A failure report: where the block is, what ran, and the end of what it printed.
fn failure(file: &str, block: &Block, what: &str, log: &Path) -> String {
    let printed = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = printed.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!(
        "{file}:{} {what}\n--- block ---\n{}--- its last output ---\n{}\n",
        block.line,
        block.text,
        tail.join("\n")
    )
}

/// Runs `file`'s marked blocks in order; the failures, as reports.
fn run_blocks(scratch: &Scratch, file: &str) -> Vec<String> {
    let markdown = std::fs::read_to_string(root().join(file)).expect("read the README");
    let blocks = marked_blocks(&markdown);
    assert!(!blocks.is_empty(), "{file} has no `sh test` block");
    let mut failures = Vec::new();
    let mut background = Vec::new();
    for block in &blocks {
        let (mut child, log) = scratch.spawn(file, block);
        if block.background {
            background.push((block, child, log));
            continue;
        }
        let status = wait_bounded(&mut child, BLOCK_LIMIT);
        // Whatever the block left running in the background ends with it.
        kill_group(&mut child);
        match status {
            Some(status) if status.success() => {}
            Some(status) => failures.push(failure(file, block, &format!("failed: {status}"), &log)),
            None => failures.push(failure(
                file,
                block,
                &format!("still ran after {BLOCK_LIMIT:?}"),
                &log,
            )),
        }
    }
    for (block, mut child, log) in background {
        if let Ok(Some(status)) = child.try_wait() {
            failures.push(failure(
                file,
                block,
                &format!("(background) stopped early: {status}"),
                &log,
            ));
        }
        kill_group(&mut child);
    }
    failures
}

#[test]
fn the_readme_commands_work() {
    let (rtmp, http, rtmpt) = (free_port(), free_port(), free_port());
    let scratch = Scratch::new(Ports { rtmp, http, rtmpt });
    let config = std::fs::read_to_string(root().join("config/corecast.toml")).expect("config");
    let addr = SocketAddr::from(([127, 0, 0, 1], rtmp));
    let http_addr = SocketAddr::from(([127, 0, 0, 1], http));
    let rtmpt_listen = format!("127.0.0.1:{rtmpt}");
    let node = Node::try_start_listen(
        2,
        &config,
        scratch.dir.path(),
        &addr.to_string(),
        addr,
        http_addr,
        &["--rtmpt-listen", &rtmpt_listen],
    )
    .unwrap_or_else(|log| panic!("the node did not start:\n{}", log.join("\n")));
    let mut failures = run_blocks(&scratch, "README.md");
    if scratch.loadtest.is_some() {
        failures.extend(run_blocks(&scratch, "loadtest/README.md"));
    } else if std::env::var_os("CI").is_some() {
        failures.push("corecast-loadtest is not built: loadtest/README.md was not run".into());
    } else {
        eprintln!(
            "skipped loadtest/README.md: build corecast-loadtest first \
             (cargo build -p corecast-loadtest)"
        );
    }
    drop(node);
    assert!(
        failures.is_empty(),
        "{} README block(s) stopped working:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_config_make_run_uses_passes_check() {
    let makefile = std::fs::read_to_string(root().join("Makefile")).expect("Makefile");
    let config = makefile
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG ?= "))
        .expect("the Makefile sets CONFIG ?= ...")
        .trim();
    assert!(
        makefile.contains("--config $(CONFIG)"),
        "`make run` no longer runs with $(CONFIG)"
    );
    let out = output_with_deadline(
        Command::new(env!("CARGO_BIN_EXE_corecast"))
            .current_dir(root())
            .args(["--config", config, "--check"]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{config}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Shell commands of a Markdown or shell file, continuation lines (`\`) joined.
fn commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        match line.trim_end().strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

#[test]
fn every_libx264_command_makes_yuv420p() {
    let mut files = vec![
        root().join("README.md"),
        root().join("loadtest/README.md"),
        root().join("BENCHMARKS.md"),
        root().join("Makefile"),
    ];
    for dir in [
        "scripts",
        "loadtest/scripts",
        "config",
        "node/tests/support",
    ] {
        for entry in std::fs::read_dir(root().join(dir)).expect("read dir") {
            files.push(entry.expect("dir entry").path());
        }
    }
    let mut bad = Vec::new();
    let mut seen = 0;
    for file in files.iter().filter(|f| f.is_file()) {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if file.extension().is_some_and(|e| e == "rs") {
            // Arguments span lines in Rust: every libx264 needs its own yuv420p in the file.
            let (x264, yuv420p) = (
                text.matches("libx264").count(),
                text.matches("yuv420p").count(),
            );
            seen += x264;
            if x264 > yuv420p {
                bad.push(format!(
                    "{}: libx264 without -pix_fmt yuv420p",
                    file.display()
                ));
            }
            continue;
        }
        for command in commands(&text).iter().filter(|c| c.contains("libx264")) {
            seen += 1;
            if !command.contains("yuv420p") {
                bad.push(format!("{}: {}", file.display(), command.trim()));
            }
        }
    }
    assert!(
        seen > 0,
        "no libx264 command found: is the test still looking in the right place?"
    );
    assert!(
        bad.is_empty(),
        "libx264 keeps 4:4:4 test patterns as 4:4:4, which browsers and hardware decoders \
         refuse; add -pix_fmt yuv420p:\n{}",
        bad.join("\n")
    );
}

#[test]
fn marked_blocks_are_found_with_their_lines() {
    let markdown = "# T\n```sh\nnot marked\n```\n\n```sh test\necho a\necho b\n```\n\
                    ```sh test-background\nsleep 9\n```\n```toml test\nx = 1\n```\n";
    assert_eq!(
        marked_blocks(markdown),
        [
            Block {
                line: 6,
                background: false,
                text: "echo a\necho b\n".into()
            },
            Block {
                line: 10,
                background: true,
                text: "sleep 9\n".into()
            },
        ]
    );
}

#[test]
fn the_rewrite_moves_only_the_default_ports() {
    let ports = Ports {
        rtmp: 1,
        http: 2,
        rtmpt: 3,
    };
    assert_eq!(
        rewrite(
            "rtmp://127.0.0.1/live/a rtmp://127.0.0.1:1935/x http://127.0.0.1:8081/m \
             rtmpt://127.0.0.1:8080/t rtmps://127.0.0.1:1936/s",
            &ports
        ),
        "rtmp://127.0.0.1:1/live/a rtmp://127.0.0.1:1/x http://127.0.0.1:2/m \
         rtmpt://127.0.0.1:3/t rtmps://127.0.0.1:1936/s"
    );
}
