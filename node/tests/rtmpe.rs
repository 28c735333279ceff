//! RTMPE (C0 6: Diffie-Hellman and RC4) with the real node and the real client that speaks
//! it, rtmpdump (`rtmpe://`): a stream ffmpeg publishes over plain RTMP plays byte-identical
//! over RTMPE; with `rtmp.rtmpe` off rtmpdump is refused with a logged reason; garbage after
//! C0 6 closes that connection only.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::client::closed_within;
use support::media::{assert_identical, play_to_file, publish, shared_flv, stderr_of, wait_exit};
use support::node::{is_line, Node};

const RTMPE_ON: &str = "[rtmp]\nrtmpe = true\n";

/// `rtmpdump --live -r rtmpe://… -o OUT`, bounded by `timeout`.
fn rtmpdump(node: &Node, stream: &str, out: &Path) -> Child {
    let url = node.url(stream).replacen("rtmp://", "rtmpe://", 1);
    Command::new("timeout")
        .args(["40", "rtmpdump", "--live", "-r", &url, "-o"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rtmpdump must be installed (scripts/install-deps.sh installs it)")
}

#[test]
fn rtmpdump_plays_over_rtmpe_what_ffmpeg_publishes_over_rtmp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let node = Node::start(2, RTMPE_ON, dir.path());
    let stream = "live/obfuscated";

    let rtmpe_out = dir.path().join("rtmpe.flv");
    let mut player = rtmpdump(&node, stream, &rtmpe_out);
    // A plain player beside it: the same listener still serves plain RTMP.
    let plain_out = dir.path().join("plain.flv");
    let mut plain = play_to_file(&node.url(stream), &plain_out);
    node.wait_log_count(Duration::from_secs(20), 2, |l| is_line(l, "play", stream))
        .expect("both players waiting for the stream");
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("RTMPE handshake done")
    })
    .expect("rtmpdump's handshake was RTMPE");

    let mut publisher = publish(&src, &node.url(stream));
    // The API names the transport a client ended up with: rtmpdump's connection is `rtmpe`.
    let transports = support::wait_for(Duration::from_secs(20), || {
        let (code, clients) = node.http_request("GET", "/api/v1/clients", None);
        assert_eq!(code, 200, "{clients}");
        (clients.contains("\"transport\": \"rtmpe\"")).then_some(clients)
    })
    .unwrap_or_else(|| {
        panic!(
            "the RTMPE player not listed as rtmpe: {}",
            node.http_request("GET", "/api/v1/clients", None).1
        )
    });
    assert_eq!(
        transports.matches("\"transport\": \"rtmpe\"").count(),
        1,
        "{transports}"
    );
    let status = wait_exit(&mut publisher, Duration::from_secs(40)).expect("publisher finished");
    assert!(status.success(), "publisher: {}", stderr_of(&mut publisher));
    let status = wait_exit(&mut plain, Duration::from_secs(20)).expect("plain player ended");
    assert!(status.success(), "plain player: {}", stderr_of(&mut plain));
    let status = wait_exit(&mut player, Duration::from_secs(20)).expect("rtmpdump ended");
    assert_ne!(
        status.code(),
        Some(124),
        "rtmpdump did not finish: {}",
        stderr_of(&mut player)
    );
    assert_identical(&src, &rtmpe_out, "rtmpdump over rtmpe");
    assert_identical(&src, &plain_out, "ffmpeg over rtmp");
    let rtmpe = node
        .log()
        .iter()
        .filter(|l| l.contains("RTMPE handshake done"))
        .count();
    assert_eq!(rtmpe, 1, "only rtmpdump asked for RTMPE");
}

#[test]
fn rtmpdump_is_refused_when_rtmpe_is_off_and_the_log_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "", dir.path());
    let out = dir.path().join("refused.flv");
    let mut player = rtmpdump(&node, "live/none", &out);
    let status = wait_exit(&mut player, Duration::from_secs(30)).expect("rtmpdump ended");
    assert!(
        !status.success(),
        "rtmpdump must fail against a node without RTMPE"
    );
    assert_ne!(status.code(), Some(124), "refused at once, not timed out");
    let line = node
        .wait_log(Duration::from_secs(5), |l| l.contains("connection closed"))
        .expect("a close line");
    assert!(line.contains("handshake_error"), "{line}");
    assert!(line.contains("RTMPE"), "the reason names RTMPE: {line}");
    assert!(!node
        .log()
        .iter()
        .any(|l| l.contains("RTMPE handshake done")));
}

/// Sends `bytes` on a fresh connection; true when the node closes it within 10 s.
fn closes_after(node: &Node, bytes: &[u8], half_close: bool) -> bool {
    let addr = node
        .url("x")
        .trim_start_matches("rtmp://")
        .replace("/x", "");
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.write_all(bytes).expect("send");
    if half_close {
        let _ = conn.shutdown(std::net::Shutdown::Write);
    }
    closed_within(&mut conn, Duration::from_secs(10))
}

#[test]
fn garbage_after_c0_6_closes_only_that_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let node = Node::start(1, RTMPE_ON, dir.path());
    let stream = "live/steady";
    let out = dir.path().join("steady.flv");
    let mut player = play_to_file(&node.url(stream), &out);
    node.wait_log(Duration::from_secs(20), |l| is_line(l, "play", stream))
        .expect("player waiting");
    let mut publisher = publish(&src, &node.url(stream));
    node.wait_log(Duration::from_secs(20), |l| is_line(l, "publish", stream))
        .expect("publisher live");

    // A C1 with no digest, one cut short, and 0x08 (RTMPE with XTEA, not offered).
    let garbage: Vec<u8> = [6u8]
        .into_iter()
        .chain((0..1536u32).map(|i| (i * 7) as u8))
        .collect();
    assert!(
        closes_after(&node, &garbage, false),
        "garbage C1 not closed"
    );
    assert!(
        closes_after(&node, &garbage[..300], true),
        "short C1 not closed"
    );
    assert!(closes_after(&node, &[8, 0, 0], false), "C0 8 not refused");
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("malformed RTMPE C1: no valid digest")
    })
    .expect("the garbage C1's reason logged");
    node.wait_log(Duration::from_secs(5), |l| l.contains("version byte 8"))
        .expect("the 0x08 refusal logged");

    let status = wait_exit(&mut publisher, Duration::from_secs(40)).expect("publisher finished");
    assert!(status.success(), "publisher: {}", stderr_of(&mut publisher));
    let status = wait_exit(&mut player, Duration::from_secs(20)).expect("player ended");
    assert!(status.success(), "player: {}", stderr_of(&mut player));
    assert_identical(&src, &out, "the player beside the garbage");
}

#[test]
fn rtmpte_is_refused_even_with_rtmpe_on() {
    // RTMPE is served on rtmp.listen only: the RTMPT tunnel cannot switch to RC4.
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, rtmpt) = support::rtmpt::start_node(1, RTMPE_ON, dir.path());
    let out = dir.path().join("rtmpte.flv");
    let mut player = Command::new("timeout")
        .args(["20", "rtmpdump", "--live", "-r"])
        .arg(format!("rtmpte://{rtmpt}/live/tunnelled"))
        .arg("-o")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rtmpdump");
    let line = node
        .wait_log(Duration::from_secs(15), |l| l.contains("connection closed"))
        .expect("the tunnelled session closed");
    assert!(line.contains("version byte 6"), "{line}");
    let status = wait_exit(&mut player, Duration::from_secs(25)).expect("rtmpdump ended");
    assert!(!status.success(), "rtmpdump must not play over rtmpte");
}
