//! Media made and checked with the real ffmpeg tools.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::node::{field, is_line, Node};
use super::process::{kill_and_reap, output_with_deadline, Reaped};

/// Generates an H.264/AAC FLV of `seconds` with a keyframe every second.
pub fn make_flv(dir: &Path, name: &str, seconds: u32) -> PathBuf {
    let path = dir.join(name);
    let out = output_with_deadline(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", &seconds.to_string()])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "25",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-c:a", "aac", "-b:a", "64k"])
            .args(["-f", "flv"])
            .arg(&path),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "ffmpeg could not make the test media: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// `ffmpeg -re -i FILE -c copy -f flv URL` in the background.
pub fn publish(file: &Path, url: &str) -> Child {
    publish_paced(file, url, &["-re"])
}

/// `ffmpeg -f lavfi -i FILTER -t SECONDS ARGS OUT`: `seconds` of a generated source
/// encoded as `args` say into `out`, within a deadline; the test fails if ffmpeg does.
pub fn encode_lavfi(filter: &str, seconds: u32, args: &[&str], out: &Path) {
    let made = output_with_deadline(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
            .args(["-i", filter, "-t", &seconds.to_string()])
            .args(args)
            .arg(out),
        Duration::from_secs(120 + 2 * u64::from(seconds)),
    );
    assert!(
        made.status.success(),
        "ffmpeg could not make {}: {}",
        out.display(),
        String::from_utf8_lossy(&made.stderr)
    );
}

/// `seconds` of 320x180 noise at 25 fps, H.264 at CRF 16 with a keyframe every `gop` frames
/// (about 860 KB a second: segments well over what is sent with sendfile), as FLV in `dir`.
pub fn noise_flv(dir: &Path, name: &str, seconds: u32, gop: u32) -> PathBuf {
    let source = dir.join(name);
    let gop = gop.to_string();
    let args = [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "16",
        "-g",
        &gop,
    ];
    encode_lavfi(
        "testsrc=size=320x180:rate=25,noise=alls=60:allf=t",
        seconds,
        &[&args[..], &["-pix_fmt", "yuv420p", "-f", "flv"]].concat(),
        &source,
    );
    source
}

/// `ffmpeg PACE -i FILE -c copy -f flv URL` in the background: `PACE` sets how fast it
/// reads (`-re`, `-readrate 2`, or nothing for as fast as it can).
pub fn publish_paced(file: &Path, url: &str, pace: &[&str]) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(pace)
        .arg("-i")
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg publisher")
}

/// ffmpeg publishing `file` over and over to `url`, in real time, until dropped (its stderr
/// is dropped: nobody reads a stream that never ends).
pub fn publish_looping(file: &Path, url: &str) -> Reaped {
    let child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-stream_loop",
            "-1",
            "-re",
            "-i",
        ])
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ffmpeg publisher");
    Reaped(child)
}

/// An `ffmpeg -listen 1` RTMP server at `rtmp://127.0.0.1:PORT/STREAM_PATH` recording what it
/// receives to `out` (the target a push is tested against); killed and reaped on drop.
pub struct RtmpSink {
    pub child: Child,
    pub out: PathBuf,
}

impl RtmpSink {
    /// Starts it and waits (10 s at most) until it listens.
    pub fn start(port: u16, stream_path: &str, out: &Path) -> RtmpSink {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-listen", "1"])
            .args(["-i", &format!("rtmp://127.0.0.1:{port}/{stream_path}")])
            .args(["-c", "copy", "-f", "flv"])
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ffmpeg sink");
        // Listening once the port refuses a second bind.
        super::wait_for(Duration::from_secs(10), || {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .is_err()
                .then_some(())
        })
        .expect("ffmpeg sink listening");
        RtmpSink {
            child,
            out: out.to_owned(),
        }
    }
}

impl Drop for RtmpSink {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// `ffmpeg -i URL -c copy -f flv OUT` in the background.
pub fn play_to_file(url: &str, out: &Path) -> Child {
    ffmpeg_player(url, &[], out, Stdio::piped())
}

/// `ffmpeg -i URL -t SECONDS -c copy -f flv OUT` in the background, its stderr dropped.
pub fn play_seconds_to_file(url: &str, seconds: u32, out: &Path) -> Child {
    ffmpeg_player(url, &["-t", &seconds.to_string()], out, Stdio::null())
}

fn ffmpeg_player(url: &str, limit: &[&str], out: &Path, stderr: Stdio) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i", url])
        .args(limit)
        .args(["-c", "copy", "-f", "flv"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start ffmpeg player")
}

/// Starts ffmpeg players of `url` (`stream` is its `app/name`), recording into `dir` as
/// `{prefix}{i}.flv`, one at a time until the node has logged players on two cores (at most
/// 16, each logged within 15 s). Returns the players with their files and the cores seen: the
/// caller asserts there are two.
pub fn players_on_both_cores(
    node: &Node,
    url: &str,
    stream: &str,
    dir: &Path,
    prefix: &str,
) -> (Vec<(Child, PathBuf)>, BTreeSet<String>) {
    let mut players = Vec::new();
    let mut cores = BTreeSet::new();
    for i in 0..16 {
        let out = dir.join(format!("{prefix}{i}.flv"));
        players.push((play_to_file(url, &out), out));
        let lines = node
            .wait_log_count(Duration::from_secs(15), i + 1, |l| {
                is_line(l, "play", stream)
            })
            .expect("player registered");
        cores = lines.iter().filter_map(|l| field(l, "core")).collect();
        if cores.len() == 2 {
            break;
        }
    }
    (players, cores)
}

/// Waits (20 s each) for `players` to end after the publisher left (the node tells them
/// NetStream.Play.UnpublishNotify; ffmpeg ends on it) and asserts that each recorded the
/// source's exact video and audio packets from its first keyframe on.
pub fn players_recorded_the_source(source: &Path, players: Vec<(Child, PathBuf)>) {
    let source = packets(source);
    for (mut player, out) in players {
        wait_exit(&mut player, Duration::from_secs(20)).expect("player ended after unpublish");
        let played = packets(&out);
        for kind in ["video", "audio"] {
            let want = from_first_keyframe(&source, kind);
            let got = from_first_keyframe(&played, kind);
            assert!(!want.is_empty());
            assert_eq!(got, want, "{kind} packets differ for {}", out.display());
        }
    }
}

/// Waits for `child` to exit within `limit`; kills it and returns None otherwise.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child's stderr, after it exited (what arrives within 5 s: a child still running, or a
/// grandchild holding the pipe, must not hang the test).
pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let Some(mut e) = child.stderr.take() else {
        return String::new();
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| "(stderr not closed within 5 s)".to_owned())
}

/// One demuxed packet as ffprobe sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// `video` or `audio`.
    pub kind: String,
    /// Keyframe flag.
    pub key: bool,
    /// sha256 of the packet payload.
    pub hash: String,
}

/// The packets of `file` (ffprobe -show_packets -show_data_hash).
pub fn packets(file: &Path) -> Vec<Packet> {
    let out = output_with_deadline(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_packets", "-show_data_hash", "sha256"])
            .args(["-show_entries", "packet=codec_type,flags,data_hash"])
            .args(["-of", "csv=p=0"])
            .arg(file),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "ffprobe failed on {}", file.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let kind = fields.first()?.to_string();
            let hash = fields
                .iter()
                .find(|f| f.starts_with("SHA256:"))?
                .to_string();
            let flags = fields.iter().find(|f| f.contains('_'))?;
            Some(Packet {
                kind,
                key: flags.starts_with('K'),
                hash,
            })
        })
        .collect()
}

/// The packets of one kind from the first video keyframe on.
pub fn from_first_keyframe(packets: &[Packet], kind: &str) -> Vec<Packet> {
    let start = packets
        .iter()
        .position(|p| p.kind == "video" && p.key)
        .unwrap_or(packets.len());
    packets[start..]
        .iter()
        .filter(|p| p.kind == kind)
        .cloned()
        .collect()
}

/// Test media shared by all tests of one test binary: made once per length, kept in a
/// temporary folder for the life of the binary.
pub fn shared_flv(seconds: u32) -> PathBuf {
    use std::sync::{Mutex, OnceLock};
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let name = format!("src-{seconds}s.flv");
    let path = dir.path().join(&name);
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if !path.exists() {
        make_flv(dir.path(), &name, seconds);
    }
    path
}

/// Every video and audio packet of `source` from its first keyframe on arrived, unchanged.
pub fn assert_identical(source: &Path, played: &Path, what: &str) {
    let source = packets(source);
    let played = packets(played);
    for kind in ["video", "audio"] {
        let want = from_first_keyframe(&source, kind);
        assert!(!want.is_empty());
        assert_eq!(
            from_first_keyframe(&played, kind),
            want,
            "{kind} packets differ for {what}"
        );
    }
}

/// ffmpeg players of `stream` (at `url`) on both of the node's cores, then ffmpeg publishing
/// `src` there to its end, asserting both (the players land on two cores, the publisher exits
/// cleanly within 40 s). Returns the players for [`players_recorded_the_source`].
pub fn publish_to_players_on_both_cores(
    node: &Node,
    src: &Path,
    url: &str,
    stream: &str,
    dir: &Path,
) -> Vec<(Child, PathBuf)> {
    let (players, cores) = players_on_both_cores(node, url, stream, dir, "play");
    assert_eq!(
        cores.len(),
        2,
        "players never landed on both cores: {cores:?}"
    );
    let mut publisher = publish(src, url);
    let status = wait_exit(&mut publisher, Duration::from_secs(40)).expect("publisher finished");
    assert!(
        status.success(),
        "publisher failed: {}",
        stderr_of(&mut publisher)
    );
    players
}
