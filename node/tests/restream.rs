//! Restream: the real node pushing a live stream to real servers: an `ffmpeg -listen 1` sink,
//! a second Corecast over RTMPS with a private CA (and with the wrong one), nginx-rtmp, and
//! targets that refuse or never answer beside a live one and players. Every wait has a
//! deadline; every process is killed when its guard drops.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::media::{
    assert_identical, packets, play_to_file, publish, shared_flv, stderr_of, wait_exit,
};
use support::node::{free_port, Node};
use support::process::{kill_and_reap, output_with_deadline};
use support::tls::{rtmps_section, CertFiles, TestCa};
use support::wait_for;

const TOKEN: &str = "s3cret";

/// An `ffmpeg -listen 1` RTMP server recording what it receives; killed on drop.
struct Sink {
    child: Child,
    out: PathBuf,
}

impl Sink {
    fn start(port: u16, out: &Path) -> Sink {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-listen", "1"])
            .args(["-i", &format!("rtmp://127.0.0.1:{port}/app/secretkey")])
            .args(["-c", "copy", "-f", "flv"])
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ffmpeg sink");
        // Listening once the port refuses a second bind.
        wait_for(Duration::from_secs(10), || {
            TcpListener::bind(("127.0.0.1", port))
                .is_err()
                .then_some(())
        })
        .expect("ffmpeg sink listening");
        Sink {
            child,
            out: out.to_owned(),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// `[restream]` with fast retries and the API token, plus `targets`.
fn config(targets: &str) -> String {
    format!(
        "[http]\napi_token = \"{TOKEN}\"\n[restream]\nconnect_timeout_ms = 2000\nsend_timeout_ms = 3000\nbackoff_initial_ms = 200\nbackoff_max_ms = 1600\n{targets}"
    )
}

fn target(id: &str, url: &str, extra: &str) -> String {
    format!("[[restream.targets]]\nid = \"{id}\"\napp = \"live\"\nstream = \"cam\"\nurl = \"{url}\"\n{extra}\n")
}

/// The API's view of target `id`, when it runs.
fn listed(node: &Node, id: &str) -> Option<serde_json::Value> {
    let (code, body) = node.http_request("GET", "/api/v1/restream", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    list["data"]
        .as_array()?
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
}

fn wait_state(node: &Node, id: &str, state: &str, limit: Duration) -> serde_json::Value {
    wait_for(limit, || listed(node, id).filter(|s| s["state"] == state)).unwrap_or_else(|| {
        panic!(
            "target {id} never {state}: {:?}\n{}",
            listed(node, id),
            node.log().join("\n")
        )
    })
}

fn metrics(node: &Node) -> String {
    node.http_request("GET", "/metrics", None).1
}

/// Video and audio decoding timestamps never go backwards.
fn assert_monotonic(file: &Path) {
    let out = output_with_deadline(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "packet=codec_type,dts"])
            .args(["-of", "csv=p=0"])
            .arg(file),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for kind in ["video", "audio"] {
        let dts: Vec<i64> = text
            .lines()
            .filter(|l| l.starts_with(kind))
            .filter_map(|l| l.split(',').nth(1)?.parse().ok())
            .collect();
        assert!(!dts.is_empty(), "no {kind} packets in {}", file.display());
        assert!(
            dts.windows(2).all(|w| w[0] <= w[1]),
            "{kind} dts go backwards"
        );
    }
}

fn first_video_is_keyframe(file: &Path) -> bool {
    packets(file)
        .iter()
        .find(|p| p.kind == "video")
        .is_some_and(|p| p.key)
}

#[test]
fn pushes_to_an_ffmpeg_sink_from_a_keyframe_byte_identical() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let port = free_port();
    let sink = Sink::start(port, &dir.path().join("sink.flv"));
    let url = format!("rtmp://127.0.0.1:{port}/app/secretkey");
    let node = Node::start(1, &config(&target("sink", &url, "")), dir.path());
    let mut publisher = publish(&src, &node.url("live/cam"));
    wait_state(&node, "sink", "live", Duration::from_secs(10));
    let shown = listed(&node, "sink").expect("listed");
    assert_eq!(shown["url"], format!("rtmp://127.0.0.1:{port}/app/…"));
    let status = wait_exit(&mut publisher, Duration::from_secs(30)).expect("publisher ended");
    assert!(status.success(), "{}", stderr_of(&mut publisher));
    // The stream's end reaches the sink (FCUnpublish, deleteStream): ffmpeg finishes its file.
    let mut sink = sink;
    let ended = wait_exit(&mut sink.child, Duration::from_secs(15));
    assert!(ended.is_some(), "the sink did not see the stream end");
    assert!(first_video_is_keyframe(&sink.out));
    assert_monotonic(&sink.out);
    assert_identical(&src, &sink.out, "the ffmpeg sink");
    let log = node.log().join("\n");
    assert!(!log.contains("secretkey"), "the stream key is in the log");
    assert!(!metrics(&node).contains("secretkey"));
    // Gone from the listing once the stream ended.
    wait_for(Duration::from_secs(5), || {
        listed(&node, "sink").is_none().then_some(())
    })
    .expect("target unlisted after the stream ended");
}

#[test]
fn pushes_over_rtmps_to_a_second_corecast_trusting_a_private_ca_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let ca = TestCa::new("restream test CA");
    let files = CertFiles::in_dir(dir.path());
    files.install(&ca.issue(&["127.0.0.1"]));
    let (toml, tls) = rtmps_section(&files, "");
    let second = Node::start(1, &toml, dir.path());
    let played = dir.path().join("played.flv");
    let mut player = play_to_file(&second.url("live/copy"), &played);
    second
        .wait_log(Duration::from_secs(10), |l| {
            l.contains("play") && l.contains("live/copy")
        })
        .expect("player waiting on the second node");

    let right = ca.write_to(&dir.path().join("ca.pem"));
    let wrong = TestCa::new("restream test CA").write_to(&dir.path().join("wrong.pem"));
    let targets = [
        target(
            "right",
            &format!("rtmps://127.0.0.1:{}/live/copy", tls.port()),
            &format!("ca_file = \"{}\"", right.display()),
        ),
        target(
            "wrong",
            &format!("rtmps://127.0.0.1:{}/live/other", tls.port()),
            &format!("ca_file = \"{}\"", wrong.display()),
        ),
    ]
    .concat();
    let first = Node::start(1, &config(&targets), dir.path());
    let mut publisher = publish(&src, &first.url("live/cam"));
    wait_state(&first, "right", "live", Duration::from_secs(10));
    let failed = wait_state(&first, "wrong", "failed", Duration::from_secs(10));
    assert_eq!(failed["reason"], "tls", "{failed}");
    let text = metrics(&first);
    assert!(
        text.contains("corecast_restream_state{state=\"failed\",target=\"wrong\"} 1"),
        "{text}"
    );
    assert!(text.contains("corecast_restream_state{state=\"live\",target=\"right\"} 1"));
    let status = wait_exit(&mut publisher, Duration::from_secs(30)).expect("publisher ended");
    assert!(status.success(), "{}", stderr_of(&mut publisher));
    let status = wait_exit(&mut player, Duration::from_secs(20)).expect("player ended");
    assert!(status.success(), "{}", stderr_of(&mut player));
    assert_identical(&src, &played, "a player of the second node");
}
