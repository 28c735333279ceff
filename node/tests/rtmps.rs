//! RTMPS: the real node with `[rtmps]` on, driven by ffmpeg over `rtmps://` and `rtmp://`, by
//! a pure-Rust TLS client that checks which certificate the node presents, and by clients that
//! misbehave at the TLS layer. Certificates are generated per test (rcgen).

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::client::closed_within;
use support::media::{assert_identical, play_to_file, publish, shared_flv, stderr_of, wait_exit};
use support::node::{field, free_port, is_line, Node};
use support::process::output_with_deadline;
use support::tls::{
    client_hello, presented_certificate, replace, rtmps_section, self_signed, tls_connect,
    CertFiles,
};
use support::wait_for;

fn rtmps_url(addr: SocketAddr, path: &str) -> String {
    format!("rtmps://{addr}/{path}")
}

/// A node with RTMPS on, serving `files`; returns it and its RTMPS address.
fn start(cores: usize, dir: &Path, files: &CertFiles, rtmps_extra: &str) -> (Node, SocketAddr) {
    let (toml, tls) = rtmps_section(files, rtmps_extra);
    (Node::start(cores, &toml, dir), tls)
}

/// Waits until log lines after the first `since` matching `pred` come from `cores` distinct
/// cores.
fn wait_cores(node: &Node, since: usize, cores: usize, pred: impl Fn(&str) -> bool) -> bool {
    wait_for(Duration::from_secs(10), || {
        let seen: BTreeSet<String> = node.log()[since..]
            .iter()
            .filter(|l| pred(l))
            .filter_map(|l| field(l, "core"))
            .collect();
        (seen.len() >= cores).then_some(())
    })
    .is_some()
}

#[test]
fn ffmpeg_publishes_over_rtmps_and_plays_over_rtmps_and_rtmp_byte_identical() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let files = CertFiles::in_dir(dir.path());
    files.install(&self_signed("corecast.test"));
    let (node, tls) = start(2, dir.path(), &files, "");
    let stream = "live/secure";

    let urls = [
        rtmps_url(tls, stream),
        node.url(stream),
        rtmps_url(tls, stream),
        node.url(stream),
    ];
    let mut players = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let out = dir.path().join(format!("play{i}.flv"));
        players.push((play_to_file(url, &out), out, url.clone()));
    }
    // rtmpdump (librtmp over gnutls) as well: it hangs up on TLS 1.3 session tickets.
    let rtmpdump_out = dir.path().join("rtmpdump.flv");
    let mut rtmpdump = Command::new("timeout")
        .args(["40", "rtmpdump", "--live", "-q", "-r"])
        .arg(rtmps_url(tls, stream))
        .arg("-o")
        .arg(&rtmpdump_out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rtmpdump must be installed (make test installs it)");
    node.wait_log_count(Duration::from_secs(20), urls.len() + 1, |l| {
        is_line(l, "play", stream)
    })
    .expect("every player waiting for the stream");

    let mut publisher = publish(&src, &rtmps_url(tls, stream));
    let status = wait_exit(&mut publisher, Duration::from_secs(40)).expect("publisher finished");
    assert!(
        status.success(),
        "rtmps publisher failed: {}",
        stderr_of(&mut publisher)
    );
    for (mut player, out, url) in players {
        // The node tells players NetStream.Play.UnpublishNotify; ffmpeg ends on it.
        let status = wait_exit(&mut player, Duration::from_secs(20)).expect("player ended");
        assert!(
            status.success(),
            "player {url} failed: {}",
            stderr_of(&mut player)
        );
        assert_identical(&src, &out, &url);
    }
    let status = wait_exit(&mut rtmpdump, Duration::from_secs(20)).expect("rtmpdump ended");
    assert!(
        status.code() != Some(124),
        "rtmpdump did not finish: {}",
        stderr_of(&mut rtmpdump)
    );
    assert_identical(&src, &rtmpdump_out, "rtmpdump over rtmps");
    let handshakes = node
        .log()
        .iter()
        .filter(|l| l.contains("tls handshake done"))
        .count();
    assert_eq!(
        handshakes, 4,
        "two ffmpeg players, rtmpdump and the publisher over rtmps"
    );
}

#[test]
fn certificate_file_change_reloads_for_new_connections_while_a_tls_player_keeps_receiving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(10);
    let files = CertFiles::in_dir(dir.path());
    let first = self_signed("first.test");
    files.install(&first);
    let (node, tls) = start(2, dir.path(), &files, "reload_check_secs = 1\n");
    let stream = "live/reload";

    // Publish over plain RTMP, play over RTMPS.
    let out = dir.path().join("player.flv");
    let mut player = play_to_file(&rtmps_url(tls, stream), &out);
    node.wait_log(Duration::from_secs(15), |l| is_line(l, "play", stream))
        .expect("rtmps player waiting");
    let mut publisher = publish(&src, &node.url(stream));
    node.wait_log(Duration::from_secs(15), |l| is_line(l, "publish", stream))
        .expect("publish logged");
    assert_eq!(presented_certificate(tls).expect("tls probe"), first.der);

    let second = self_signed("second.test");
    let since = node.log().len();
    files.install(&second);
    assert!(
        wait_cores(&node, since, 2, |l| l.contains("tls certificate reloaded")),
        "both cores must reload after the files change"
    );
    // New connections land on either core; every one sees the new certificate.
    for _ in 0..6 {
        assert_eq!(
            presented_certificate(tls).expect("tls probe"),
            second.der,
            "a new connection got the old certificate"
        );
    }

    // A broken chain file is refused; the current certificate stays in use.
    let since = node.log().len();
    replace(
        &files.cert,
        b"-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
    );
    assert!(
        wait_cores(&node, since, 2, |l| l
            .contains("tls certificate reload failed")),
        "a broken file must be reported by both cores"
    );
    for _ in 0..4 {
        assert_eq!(presented_certificate(tls).expect("tls probe"), second.der);
    }

    assert!(
        publisher.try_wait().expect("publisher status").is_none(),
        "the stream ended before the reloads were checked: the test media is too short"
    );
    let status = wait_exit(&mut publisher, Duration::from_secs(30)).expect("publisher finished");
    assert!(status.success(), "publisher: {}", stderr_of(&mut publisher));
    wait_exit(&mut player, Duration::from_secs(20)).expect("player ended after unpublish");
    // The player connected before both reloads and got every packet.
    assert_identical(&src, &out, "the rtmps player");
}

#[test]
fn sighup_reloads_the_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = CertFiles::in_dir(dir.path());
    let first = self_signed("first.test");
    files.install(&first);
    // No file polling: only the signal reloads.
    let (mut node, tls) = start(2, dir.path(), &files, "reload_check_secs = 0\n");
    assert_eq!(presented_certificate(tls).expect("tls probe"), first.der);

    let second = self_signed("second.test");
    files.install(&second);
    let since = node.log().len();
    let pid = i32::try_from(node.pid()).expect("pid");
    // SAFETY: sending a signal to the child process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(
        wait_cores(&node, since, 2, |l| {
            l.contains("tls certificate reloaded") && l.contains("trigger=\"sighup\"")
                || l.contains("tls certificate reloaded") && l.contains("trigger=sighup")
        }),
        "both cores must reload on SIGHUP"
    );
    assert!(node.is_running(), "SIGHUP must not stop the node");
    for _ in 0..6 {
        assert_eq!(presented_certificate(tls).expect("tls probe"), second.der);
    }
}

/// Reads from a TLS stream until the node closes it; true when that happens within `limit`.
fn tls_closed_within(
    stream: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    let mut tmp = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut tmp) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn bad_tls_clients_close_only_their_own_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(8);
    let files = CertFiles::in_dir(dir.path());
    files.install(&self_signed("corecast.test"));
    let (node, tls) = start(2, dir.path(), &files, "handshake_timeout_secs = 2\n");
    let stream = "live/steady";
    let out = dir.path().join("player.flv");
    let mut player = play_to_file(&rtmps_url(tls, stream), &out);
    node.wait_log(Duration::from_secs(15), |l| is_line(l, "play", stream))
        .expect("rtmps player waiting");
    let mut publisher = publish(&src, &node.url(stream));
    node.wait_log(Duration::from_secs(15), |l| is_line(l, "publish", stream))
        .expect("publish logged");

    // Silent and half-handshake clients first: their timeouts run while the others are tried.
    let mut silent = support::process::connect(tls).expect("connect");
    let hello = client_hello();
    let mut partial = support::process::connect(tls).expect("connect");
    partial.write_all(&hello[..hello.len() / 2]).expect("write");

    // Plaintext RTMP (C0 + C1) on the TLS port.
    let mut plaintext = support::process::connect(tls).expect("connect");
    let mut c0c1 = vec![0u8; 1537];
    c0c1[0] = 3;
    plaintext.write_all(&c0c1).expect("write");
    assert!(
        closed_within(&mut plaintext, Duration::from_secs(5)),
        "plaintext RTMP on the TLS port not closed"
    );

    // A ClientHello, then the client goes away.
    let mut aborted = support::process::connect(tls).expect("connect");
    aborted.write_all(&hello).expect("write");
    drop(aborted);

    // TLS is fine but what it carries is not RTMP: the session's own checks apply.
    let mut garbage = tls_connect(tls).expect("tls connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    garbage.flush().expect("flush");
    assert!(
        tls_closed_within(&mut garbage, Duration::from_secs(5)),
        "garbage over TLS not closed"
    );

    assert!(
        closed_within(&mut silent, Duration::from_secs(6)),
        "silent client not closed after the TLS handshake timeout"
    );
    assert!(
        closed_within(&mut partial, Duration::from_secs(6)),
        "half a ClientHello not closed after the TLS handshake timeout"
    );
    node.expect_close_reasons(&[
        "tls_error",
        "tls_aborted",
        "tls_handshake_timeout",
        "handshake_error",
    ]);
    node.wait_log_count(Duration::from_secs(5), 2, |l| {
        l.contains("tls_handshake_timeout")
    })
    .expect("both the silent and the half-hello client timed out");

    assert!(
        publisher.try_wait().expect("publisher status").is_none(),
        "the stream ended before the bad clients were done: the test media is too short"
    );
    let status = wait_exit(&mut publisher, Duration::from_secs(30)).expect("publisher finished");
    assert!(status.success(), "publisher: {}", stderr_of(&mut publisher));
    wait_exit(&mut player, Duration::from_secs(20)).expect("player ended after unpublish");
    // The TLS player got every packet while the bad clients came and went.
    assert_identical(&src, &out, "the rtmps player");
}

fn corecast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corecast"))
}

/// Runs the node on `config` (not `--check`): it must exit within 10 s; returns its stderr.
fn failed_start(config: &Path) -> String {
    let mut child = corecast()
        .arg("--config")
        .arg(config)
        .args(["--rtmp-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start corecast");
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("corecast must not start");
    assert!(!status.success());
    stderr_of(&mut child)
}

#[test]
fn rtmps_without_a_usable_certificate_fails_start_up_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = CertFiles::in_dir(dir.path());
    let (toml, _) = rtmps_section(&files, "");
    let config = dir.path().join("corecast.toml");
    std::fs::write(&config, toml).expect("write config");

    // Neither file exists.
    let out = output_with_deadline(
        corecast().arg("--config").arg(&config).arg("--check"),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&files.cert.display().to_string()), "{err}");
    let err = failed_start(&config);
    assert!(err.contains(&files.cert.display().to_string()), "{err}");

    // The chain is there, the key is not.
    let cert = self_signed("corecast.test");
    replace(&files.cert, cert.cert_pem.as_bytes());
    let err = failed_start(&config);
    assert!(err.contains(&files.key.display().to_string()), "{err}");

    // A key that belongs to another certificate.
    replace(&files.key, self_signed("other.test").key_pem.as_bytes());
    let err = failed_start(&config);
    assert!(err.contains("rtmps"), "{err}");
    assert!(err.contains(&files.key.display().to_string()), "{err}");

    // Both right: --check passes, and --rtmps-listen overrides the address.
    replace(&files.key, cert.key_pem.as_bytes());
    let addr = format!("127.0.0.1:{}", free_port());
    let out = output_with_deadline(
        corecast()
            .arg("--config")
            .arg(&config)
            .args(["--check", "--rtmps-listen", &addr]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("rtmps on {addr}")), "{stdout}");
}

/// Over RTMPS too, the RTMP handshake and `connect` run under one deadline after the TLS
/// handshake: a client that finishes both handshakes and then trickles a byte a second is
/// closed at it, with reason `handshake_timeout`.
#[test]
fn a_tls_client_trickling_bytes_before_connect_is_closed_at_the_deadline() {
    use corecast_common::handshake::{ClientHandshake, HandshakeKind, HandshakeStatus};

    const DEADLINE_SECS: u64 = 3;
    let dir = tempfile::tempdir().expect("temp dir");
    let files = CertFiles::in_dir(dir.path());
    files.install(&self_signed("corecast.test"));
    let (rtmps, tls) = rtmps_section(&files, "");
    let config = format!("{rtmps}\n[rtmp]\nhandshake_timeout_secs = {DEADLINE_SECS}\n");
    let node = Node::start(1, &config, dir.path());

    let mut client = tls_connect(tls).expect("tls connect");
    let tls_done = Instant::now();
    client
        .sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let random = [7u8; 2 * corecast_common::handshake::HANDSHAKE_SIZE];
    let mut handshake = ClientHandshake::new(HandshakeKind::Digest, 0, &random);
    let mut input = bytes::BytesMut::new();
    loop {
        while let Some(out) = handshake.poll_output() {
            client.write_all(&out).expect("write handshake");
        }
        client.flush().expect("flush");
        if handshake.handle_input(&mut input).expect("handshake") == HandshakeStatus::Done {
            break;
        }
        assert!(
            tls_done.elapsed() < Duration::from_secs(DEADLINE_SECS),
            "RTMP handshake over TLS did not finish"
        );
        let mut tmp = [0u8; 4096];
        match client.read(&mut tmp) {
            Ok(0) => panic!("closed during the RTMP handshake"),
            Ok(n) => input.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    while let Some(out) = handshake.poll_output() {
        client.write_all(&out).expect("write C2");
    }

    // The start of a command message, then its payload, one byte a second.
    let mut bytes = vec![0x03, 0, 0, 0, 0x00, 0x10, 0x00, 0x14, 0, 0, 0, 0];
    bytes.extend(std::iter::repeat_n(0x05u8, 100));
    let mut closed_after = None;
    for byte in bytes {
        if tls_done.elapsed() > Duration::from_secs(DEADLINE_SECS + 10) {
            break;
        }
        if client
            .write_all(&[byte])
            .and_then(|()| client.flush())
            .is_err()
            || tls_closed_within(&mut client, Duration::from_secs(1))
        {
            closed_after = Some(tls_done.elapsed());
            break;
        }
    }
    closed_after.expect("the trickling TLS client is closed within the deadline + 10 s");
    node.expect_close_reasons(&["handshake_timeout"]);
}

#[test]
fn rtmpts_ffmpeg_publishes_and_ffmpeg_and_rtmpdump_play_through_the_tls_tunnel() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let files = CertFiles::in_dir(dir.path());
    files.install(&self_signed("corecast.test"));
    let rtmpts: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let (toml, _) = rtmps_section(&files, "");
    let config = format!("{toml}[rtmpt]\nenabled = true\nlisten = \"{rtmpts}\"\ntls = true\n");
    let node = Node::start(2, &config, dir.path());
    let stream = "live/tunnelled";
    let url = format!("rtmpts://{rtmpts}/{stream}");

    let played = dir.path().join("ffmpeg.flv");
    let mut player = play_to_file(&url, &played);
    let dumped = dir.path().join("rtmpdump.flv");
    let mut rtmpdump = Command::new("timeout")
        .args(["40", "rtmpdump", "--live", "-q", "-r"])
        .arg(&url)
        .arg("-o")
        .arg(&dumped)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rtmpdump must be installed (make test installs it)");
    node.wait_log_count(Duration::from_secs(20), 2, |l| is_line(l, "play", stream))
        .expect("both players waiting for the stream");

    // ffmpeg's tunnel client sends what it buffered only every rtmp_flush_interval packets.
    let mut publisher = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(&src)
        .args(["-c", "copy", "-rtmp_flush_interval", "1", "-f", "flv"])
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    let status = wait_exit(&mut publisher, Duration::from_secs(40)).expect("publisher finished");
    assert!(
        status.success(),
        "rtmpts publisher failed: {}",
        stderr_of(&mut publisher)
    );
    let status = wait_exit(&mut player, Duration::from_secs(20)).expect("player ended");
    assert!(
        status.success(),
        "rtmpts player failed: {}",
        stderr_of(&mut player)
    );
    assert_identical(&src, &played, "ffmpeg over rtmpts");
    let status = wait_exit(&mut rtmpdump, Duration::from_secs(20)).expect("rtmpdump ended");
    assert!(
        status.code() != Some(124),
        "rtmpdump did not finish: {}",
        stderr_of(&mut rtmpdump)
    );
    assert_identical(&src, &dumped, "rtmpdump over rtmpts");

    // Plain RTMPT on the TLS port is no tunnel: refused with a log line, the node unharmed.
    let mut plain = TcpStream::connect(rtmpts).expect("connect");
    plain
        .write_all(b"POST /open/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n\0")
        .expect("write");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(
        !String::from_utf8_lossy(&reply).contains("200 OK"),
        "plain RTMPT answered"
    );
    assert!(
        node.wait_log(Duration::from_secs(5), |l| l
            .contains("tls connection closed")
            && l.contains("transport=\"rtmpts\""))
            .is_some(),
        "no log line for the failed handshake: {:?}",
        node.log()
            .iter()
            .filter(|l| l.contains("tls"))
            .collect::<Vec<_>>()
    );
}
