//! Restream: the real node pushing a live stream to real servers: an `ffmpeg -listen 1` sink,
//! a second Corecast over RTMPS with a private CA (and with the wrong one), nginx-rtmp, and
//! targets that refuse or never answer beside a live one and players. Every wait has a
//! deadline; every process is killed when its guard drops.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::media::{
    assert_identical, packets, play_to_file, publish, shared_flv, stderr_of, wait_exit, RtmpSink,
};
use support::node::{free_port, Node};
use support::process::{kill_and_reap, output_with_deadline};
use support::tls::{rtmps_section, CertFiles, TestCa};
use support::wait_for;

const TOKEN: &str = "s3cret";

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
    let sink = RtmpSink::start(port, "app/secretkey", &dir.path().join("sink.flv"));
    let url = format!("rtmp://127.0.0.1:{port}/app/secretkey");
    // Two cores: the target runs on whichever core took the publisher; the API answers on any.
    let node = Node::start(2, &config(&target("sink", &url, "")), dir.path());
    let mut publisher = publish(&src, &node.url("live/cam"));
    wait_state(&node, "sink", "live", Duration::from_secs(10));
    let (code, _) = node.http_request("GET", "/api/v1/restream", None);
    assert_eq!(code, 401, "the listing needs the API token");
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

/// How a [`FakeIngest`] behaves.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// A server that accepts a publish on stream id `0`.
    Accept(u32),
    /// Answers the handshake with garbage.
    Garbage,
    /// Accepts connections and never answers.
    Silent,
    /// Accepts a publish on stream 1, then stops reading (a target that cannot keep up).
    Stall,
}

/// Media messages a [`FakeIngest`] received: (message type, message stream id, payload).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(u8, u32, Vec<u8>)>>>;

/// A minimal RTMP ingest server built from corecast-common's sans-IO parts, recording the
/// media messages it receives: (message type, message stream id, payload).
struct FakeIngest {
    addr: std::net::SocketAddr,
    received: Received,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeIngest {
    fn start(behaviour: Behaviour) -> FakeIngest {
        use std::sync::{Arc, Mutex};

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        if behaviour == Behaviour::Stall {
            // A small receive window (inherited by accepted sockets): a stalled reader fills
            // the node's side at once instead of the kernel's buffers.
            rustix::net::sockopt::set_socket_recv_buffer_size(&listener, 4096).expect("SO_RCVBUF");
        }
        let addr = listener.local_addr().expect("addr");
        let received: Received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (sink, count) = (Arc::clone(&received), Arc::clone(&connections));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || serve(stream, behaviour, &sink));
            }
        });
        FakeIngest {
            addr,
            received,
            connections,
        }
    }

    fn url(&self) -> String {
        format!("rtmp://{}/app/secretkey", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One connection of a [`FakeIngest`]; returns when the client leaves (or after 60 s).
fn serve(
    mut stream: std::net::TcpStream,
    behaviour: Behaviour,
    sink: &std::sync::Mutex<Vec<(u8, u32, Vec<u8>)>>,
) {
    use bytes::BytesMut;
    use corecast_common::amf0::Amf0Value;
    use corecast_common::chunk::{ChunkDecoder, ChunkEncoder};
    use corecast_common::command::{status_info, Command};
    use corecast_common::handshake::{HandshakeStatus, ServerHandshake};
    use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};
    use std::io::{Read, Write};

    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let id = match behaviour {
        Behaviour::Accept(id) => id,
        Behaviour::Stall => 1,
        Behaviour::Garbage => {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nnot rtmp at all");
            let _ = stream.read(&mut [0u8; 4096]);
            return;
        }
        Behaviour::Silent => {
            let mut scratch = [0u8; 4096];
            while matches!(stream.read(&mut scratch), Ok(n) if n > 0) {}
            return;
        }
    };
    let mut handshake = ServerHandshake::new(0, &[9; 64]);
    let mut decoder = ChunkDecoder::default();
    let mut encoder = ChunkEncoder::new();
    let mut buf = BytesMut::new();
    let mut done = false;
    let mut scratch = vec![0u8; 65536];
    loop {
        let n = match stream.read(&mut scratch) {
            Ok(n) if n > 0 => n,
            _ => return,
        };
        buf.extend_from_slice(&scratch[..n]);
        if !done {
            let status = handshake.handle_input(&mut buf).expect("client handshake");
            while let Some(out) = handshake.poll_output() {
                stream.write_all(&out).expect("write");
            }
            done = status == HandshakeStatus::Done;
            if !done {
                continue;
            }
        }
        let mut out = BytesMut::new();
        while let Some(message) = decoder.decode(&mut buf).expect("chunk stream") {
            let reply = |command: Command, stream_id: u32| RtmpMessage {
                chunk_stream_id: ChunkStreamId::COMMAND,
                timestamp: 0,
                message_type: MessageType::COMMAND_AMF0,
                message_stream_id: MessageStreamId(stream_id),
                payload: command.encode(),
            };
            match message.message_type {
                MessageType::AUDIO | MessageType::VIDEO | MessageType::DATA_AMF0 => {
                    sink.lock().expect("lock").push((
                        message.message_type.0,
                        message.message_stream_id.0,
                        message.payload.to_vec(),
                    ));
                }
                MessageType::COMMAND_AMF0 => {
                    let command =
                        Command::decode(message.message_type, &message.payload).expect("command");
                    let tx = command.transaction_id;
                    let answer = match command.name.as_str() {
                        "connect" => Some(reply(Command::result(tx, Amf0Value::Null, vec![]), 0)),
                        "createStream" => Some(reply(
                            Command::result(tx, Amf0Value::Null, vec![f64::from(id).into()]),
                            0,
                        )),
                        "publish" => {
                            let info = status_info("status", "NetStream.Publish.Start", "go");
                            Some(reply(Command::on_status(info), id))
                        }
                        _ => None,
                    };
                    if let Some(answer) = answer {
                        encoder.encode(&answer, &mut out);
                    }
                }
                _ => {}
            }
        }
        if !out.is_empty() && stream.write_all(&out).is_err() {
            return;
        }
        if behaviour == Behaviour::Stall && out.windows(7).any(|w| w == b"Publish") {
            // Live: read nothing more while the test lasts.
            std::thread::sleep(Duration::from_secs(120));
            return;
        }
    }
}

#[test]
fn a_server_that_answers_another_stream_id_gets_reheaded_frames() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let ingest = FakeIngest::start(Behaviour::Accept(7));
    let node = Node::start(1, &config(&target("fake", &ingest.url(), "")), dir.path());
    let mut publisher = publish(&src, &node.url("live/cam"));
    wait_state(&node, "fake", "live", Duration::from_secs(10));
    let status = wait_exit(&mut publisher, Duration::from_secs(30)).expect("publisher ended");
    assert!(status.success(), "{}", stderr_of(&mut publisher));
    // Every media message on stream 7; video from a keyframe (0x17 AVC keyframe header).
    let received = wait_for(Duration::from_secs(10), || {
        let got = ingest.received.lock().expect("lock").clone();
        (got.iter().filter(|m| m.0 == 9).count() >= 90).then_some(got)
    })
    .expect("the video arrived");
    assert!(
        received.iter().all(|m| m.1 == 7),
        "a message not on stream 7"
    );
    let first_video = received.iter().find(|m| m.0 == 9).expect("video");
    assert_eq!(
        first_video.2[0], 0x17,
        "starts with a keyframe (or its sequence header)"
    );
}

#[test]
fn targets_that_refuse_answer_garbage_or_never_answer_back_off_while_the_live_one_and_players_see_no_gap(
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(6);
    let garbage = FakeIngest::start(Behaviour::Garbage);
    let silent = FakeIngest::start(Behaviour::Silent);
    let live = FakeIngest::start(Behaviour::Accept(1));
    let refused = format!("rtmp://127.0.0.1:{}/app/secretkey", free_port());
    let targets = [
        target("live", &live.url(), ""),
        target("garbage", &garbage.url(), ""),
        target("silent", &silent.url(), ""),
        target("refused", &refused, ""),
    ]
    .concat();
    let node = Node::start(1, &config(&targets), dir.path());
    let players: Vec<_> = (0..50)
        .map(|_| {
            let addr = node.addr;
            std::thread::spawn(move || video_timestamps(addr, "cam"))
        })
        .collect();
    node.wait_log_count(Duration::from_secs(20), 50, |l| {
        l.contains("play") && l.contains("live/cam")
    })
    .expect("50 players waiting");
    let mut publisher = publish(&src, &node.url("live/cam"));
    wait_state(&node, "live", "live", Duration::from_secs(10));
    let garbage_state = wait_for(Duration::from_secs(10), || {
        listed(&node, "garbage").filter(|s| s["reason"] == "protocol")
    });
    assert!(garbage_state.is_some(), "{:?}", listed(&node, "garbage"));
    let silent_state = wait_for(Duration::from_secs(10), || {
        listed(&node, "silent").filter(|s| s["reason"] == "timeout")
    });
    assert!(silent_state.is_some(), "{:?}", listed(&node, "silent"));
    let refused_state = wait_for(Duration::from_secs(10), || {
        listed(&node, "refused")
            .filter(|s| s["reason"] == "refused" && s["reconnects"].as_u64() >= Some(2))
    });
    assert!(refused_state.is_some(), "{:?}", listed(&node, "refused"));
    assert!(garbage.connections() >= 1 && silent.connections() >= 1);
    let status = wait_exit(&mut publisher, Duration::from_secs(40)).expect("publisher ended");
    assert!(status.success(), "{}", stderr_of(&mut publisher));
    let source_video = packets(&src).iter().filter(|p| p.kind == "video").count();
    for player in players {
        let timestamps = player.join().expect("player thread");
        assert_no_gap(&timestamps, source_video, "a player");
    }
    let received = live.received.lock().expect("lock").clone();
    let video = received.iter().filter(|m| m.0 == 9).count();
    assert!(
        video + 2 >= source_video,
        "the live target got {video} of {source_video} video messages"
    );
}

/// Plays `name` with a light RTMP reader until the stream ends; the video timestamps seen.
fn video_timestamps(addr: std::net::SocketAddr, name: &str) -> Vec<u32> {
    use corecast_common::types::MessageType;
    let mut client = support::client::RtmpClient::connect(addr, "live").expect("connect");
    client.play(name).expect("play");
    let mut seen = Vec::new();
    while let Ok(Some(message)) = client.next_message(Duration::from_secs(20)) {
        if message.message_type == MessageType::VIDEO {
            seen.push(message.timestamp);
        }
        if message.message_type == MessageType::COMMAND_AMF0 {
            let text = String::from_utf8_lossy(&message.payload).into_owned();
            if text.contains("UnpublishNotify") {
                break;
            }
        }
    }
    seen
}

/// Every video frame of the source arrived (the first at most a frame late: the reader may
/// join at a keyframe after the sequence header) and none is more than 2 frames after the
/// previous one.
fn assert_no_gap(timestamps: &[u32], source_video: usize, what: &str) {
    assert!(
        timestamps.len() + 2 >= source_video,
        "{what} got {} of {source_video} video frames",
        timestamps.len()
    );
    for pair in timestamps.windows(2) {
        assert!(
            pair[1] >= pair[0] && pair[1] - pair[0] <= 80,
            "{what}: gap between {} and {} ms",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn a_killed_sink_is_backed_off_with_growing_delays_and_resumed_at_a_keyframe() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(20);
    let port = free_port();
    let sink = RtmpSink::start(port, "app/secretkey", &dir.path().join("first.flv"));
    let url = format!("rtmp://127.0.0.1:{port}/app/secretkey");
    let node = Node::start(1, &config(&target("sink", &url, "")), dir.path());
    let mut publisher = publish(&src, &node.url("live/cam"));
    wait_state(&node, "sink", "live", Duration::from_secs(10));
    drop(sink);
    // Refused reconnects, each after a longer delay (200 ms doubling, with jitter).
    let backoff = wait_for(Duration::from_secs(15), || {
        listed(&node, "sink")
            .filter(|s| s["state"] == "backoff" && s["reconnects"].as_u64() >= Some(3))
    })
    .unwrap_or_else(|| panic!("no backoff: {:?}", listed(&node, "sink")));
    assert_eq!(backoff["reason"], "refused", "{backoff}");
    let delays: Vec<u64> = node
        .log()
        .iter()
        .filter(|l| l.contains("restream target failed") && l.contains("target=sink"))
        .filter_map(|l| support::node::field(l, "retry_ms")?.parse().ok())
        .collect();
    assert!(delays.len() >= 3, "{delays:?}");
    assert!(delays[2] > delays[0], "the delay did not grow: {delays:?}");
    let text = metrics(&node);
    assert!(
        text.contains("corecast_restream_reconnects_total{target=\"sink\"}"),
        "{text}"
    );
    let resumed = RtmpSink::start(port, "app/secretkey", &dir.path().join("second.flv"));
    wait_state(&node, "sink", "live", Duration::from_secs(10));
    let status = wait_exit(&mut publisher, Duration::from_secs(40)).expect("publisher ended");
    assert!(status.success(), "{}", stderr_of(&mut publisher));
    let mut resumed = resumed;
    wait_exit(&mut resumed.child, Duration::from_secs(15)).expect("the sink saw the end");
    assert!(
        first_video_is_keyframe(&resumed.out),
        "resumed without a keyframe"
    );
    assert_monotonic(&resumed.out);
    // What arrived after the resume is an unchanged run of the source's packets.
    let source = packets(&src);
    let got: Vec<_> = packets(&resumed.out)
        .into_iter()
        .filter(|p| p.kind == "video")
        .collect();
    let want: Vec<_> = source.into_iter().filter(|p| p.kind == "video").collect();
    assert!(
        got.len() > 25,
        "only {} video packets after the resume",
        got.len()
    );
    let start = want
        .iter()
        .position(|p| p == &got[0])
        .expect("the first packet is one of the source's");
    assert_eq!(&want[start..start + got.len()], &got[..]);
}

/// An nginx with the RTMP module on `port` (app `live`, and app `copy` that hands its players
/// the publisher's metadata as it came: `meta copy`); killed on drop.
struct Nginx(Child);

impl Nginx {
    fn start(dir: &Path, port: u16) -> Nginx {
        let conf = dir.join("nginx.conf");
        std::fs::create_dir_all(dir.join("logs")).expect("logs dir");
        std::fs::write(
            &conf,
            format!(
                "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\ndaemon off;\nmaster_process off;\nerror_log {}/logs/error.log info;\npid {}/nginx.pid;\nevents {{ worker_connections 256; }}\nrtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} application copy {{ live on; meta copy; }} }} }}\n",
                dir.display(),
                dir.display()
            ),
        )
        .expect("nginx.conf");
        let child = Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx with the rtmp module (scripts/install-deps.sh installs it)");
        wait_for(Duration::from_secs(10), || {
            TcpListener::bind(("127.0.0.1", port))
                .is_err()
                .then_some(())
        })
        .expect("nginx listening");
        Nginx(child)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

#[test]
fn pushes_to_nginx_rtmp_whose_player_gets_identical_packets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let port = free_port();
    let nginx = Nginx::start(dir.path(), port);
    let played = dir.path().join("played.flv");
    let mut player = play_to_file(&format!("rtmp://127.0.0.1:{port}/live/copy"), &played);
    let url = format!("rtmp://127.0.0.1:{port}/live/copy");
    let node = Node::start(1, &config(&target("nginx", &url, "")), dir.path());
    // nginx-rtmp accepts a play before the stream exists: wait until it logged ffmpeg's.
    let error_log = dir.path().join("logs/error.log");
    wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&error_log).unwrap_or_default();
        text.contains("play: name='copy'").then_some(())
    })
    .expect("nginx's player asked for the stream");
    let mut publisher = publish(&src, &node.url("live/cam"));
    wait_state(&node, "nginx", "live", Duration::from_secs(10));
    let status = wait_exit(&mut publisher, Duration::from_secs(30)).expect("publisher ended");
    assert!(status.success(), "{}", stderr_of(&mut publisher));
    // The push ended politely: nginx logs our deleteStream.
    wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&error_log).unwrap_or_default();
        text.contains("deleteStream").then_some(())
    })
    .expect("nginx saw deleteStream");
    // nginx-rtmp keeps its players waiting for a next publish: ending nginx ends the player,
    // which finishes its file.
    drop(nginx);
    wait_exit(&mut player, Duration::from_secs(20)).expect("nginx's player ended");
    assert_identical(&src, &played, "a player of nginx-rtmp");
}

#[test]
fn enhanced_codecs_go_only_to_targets_that_accept_them() {
    use corecast_common::types::MessageType;
    let dir = tempfile::tempdir().expect("temp dir");
    let plain = FakeIngest::start(Behaviour::Accept(1));
    let enhanced = FakeIngest::start(Behaviour::Accept(1));
    let targets = [
        target("plain", &plain.url(), ""),
        target("enhanced", &enhanced.url(), "enhanced_codecs = true"),
    ]
    .concat();
    let node = Node::start(1, &config(&targets), dir.path());
    let mut publisher = support::client::RtmpClient::connect(node.addr, "live").expect("connect");
    assert_eq!(
        publisher.publish("cam").expect("publish"),
        "NetStream.Publish.Start"
    );
    wait_state(&node, "enhanced", "live", Duration::from_secs(10));
    // HEVC: a sequence header and frames with the legacy codec id 12 (what some encoders
    // send), enough to pass the GOP to the target.
    publisher
        .send_media(MessageType::VIDEO, 0, &[0x1C, 0, 0, 0, 0, 1, 2, 3])
        .expect("sequence header");
    for i in 1..30u32 {
        let frame = if i % 10 == 1 { 0x1C } else { 0x2C };
        publisher
            .send_media(MessageType::VIDEO, i * 40, &[frame, 1, 0, 0, 0, 9, 9, 9])
            .expect("frame");
    }
    let failed = wait_state(&node, "plain", "failed", Duration::from_secs(10));
    assert_eq!(failed["reason"], "unsupported_codec", "{failed}");
    let got = wait_for(Duration::from_secs(10), || {
        let n = enhanced.received.lock().expect("lock").len();
        (n >= 10).then_some(n)
    });
    assert!(got.is_some(), "the enhanced target got no HEVC");
    assert!(
        plain
            .received
            .lock()
            .expect("lock")
            .iter()
            .all(|m| m.0 != 9 || m.2[0] & 0x0F != 0x0C),
        "HEVC reached a target that does not accept it"
    );
}

#[test]
fn the_shipped_restream_config_checks_and_a_bad_url_is_refused_without_its_key() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let binary = env!("CARGO_BIN_EXE_corecast");
    let out = output_with_deadline(
        Command::new(binary).args([
            "--config",
            &format!("{root}/config/restream.toml"),
            "--check",
        ]),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (url, why) in [
        ("srt://h:9000/app/secretkey", "unsupported scheme"),
        ("rtmp://h:99999/app/secretkey", "bad port"),
        ("rtmp://h/secretkey", "needs /app/key"),
    ] {
        let (code, stderr) = support::node::check_config(&config(&target("bad", url, "")));
        assert_ne!(code, Some(0), "{url} was accepted");
        assert!(
            stderr.contains("restream.targets") && stderr.contains(why),
            "{stderr}"
        );
        assert!(!stderr.contains("secretkey"), "{stderr}");
    }
}

#[test]
fn a_stream_published_again_pushes_again_under_the_same_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let ingest = FakeIngest::start(Behaviour::Accept(1));
    let node = Node::start(1, &config(&target("again", &ingest.url(), "")), dir.path());
    for round in 1..=2 {
        let mut publisher = publish(&src, &node.url("live/cam"));
        wait_state(&node, "again", "live", Duration::from_secs(10));
        let status = wait_exit(&mut publisher, Duration::from_secs(30)).expect("publisher ended");
        assert!(status.success(), "{}", stderr_of(&mut publisher));
        wait_for(Duration::from_secs(10), || {
            listed(&node, "again").is_none().then_some(())
        })
        .expect("unlisted once the stream ended");
        assert_eq!(ingest.connections(), round, "one connection per publish");
    }
}

#[test]
fn a_reload_starts_new_targets_and_ends_removed_ones_on_a_live_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(20);
    let first = FakeIngest::start(Behaviour::Accept(1));
    let second = FakeIngest::start(Behaviour::Accept(1));
    let node = Node::start(1, &config(&target("first", &first.url(), "")), dir.path());
    let mut publisher = publish(&src, &node.url("live/cam"));
    wait_state(&node, "first", "live", Duration::from_secs(10));
    std::fs::write(
        &node.config_path,
        config(&target("second", &second.url(), "")),
    )
    .expect("rewrite config");
    let (code, body) = node.http_request("POST", "/api/v1/reload", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    wait_state(&node, "second", "live", Duration::from_secs(10));
    wait_for(Duration::from_secs(10), || {
        listed(&node, "first").is_none().then_some(())
    })
    .expect("the removed target ended");
    let video = |ingest: &FakeIngest| {
        let received = ingest.received.lock().expect("lock");
        received
            .iter()
            .filter(|m| m.0 == 9)
            .map(|m| m.2[0])
            .collect::<Vec<u8>>()
    };
    let got = wait_for(Duration::from_secs(10), || {
        let v = video(&second);
        (v.len() > 30).then_some(v)
    })
    .expect("the new target gets video");
    assert_eq!(got[0] >> 4, 1, "the new target starts at a keyframe");
    kill_and_reap(&mut publisher);
}

#[test]
fn the_sans_io_client_plays_from_a_real_node() {
    use bytes::BytesMut;
    use corecast_common::client::url::TargetUrl;
    use corecast_common::client::{ClientEvent, ClientSession, ClientSettings, Role};
    use corecast_common::types::MessageType;
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let node = Node::start(1, "", dir.path());
    let mut publisher = publish(&src, &node.url("live/cam"));
    let url = TargetUrl::parse(&node.url("live/cam")).expect("url");
    let mut session = ClientSession::new(ClientSettings::new(&url, Role::Play), 0, &[3; 16]);
    let mut socket = std::net::TcpStream::connect(node.addr).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (mut buf, mut scratch) = (BytesMut::new(), vec![0u8; 65536]);
    let (mut live, mut video, mut first_video) = (false, 0, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while video < 50 && std::time::Instant::now() < deadline {
        while let Some(bytes) = session.poll_output() {
            socket.write_all(&bytes).expect("write");
        }
        let n = socket.read(&mut scratch).expect("read within 10 s");
        assert!(n > 0, "the node closed the connection");
        buf.extend_from_slice(&scratch[..n]);
        session
            .handle_input(&mut buf)
            .expect("a well-formed server");
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::Live { .. } => live = true,
                ClientEvent::Media(m) if m.message_type == MessageType::VIDEO => {
                    first_video.get_or_insert(m.payload[0]);
                    video += 1;
                }
                _ => {}
            }
        }
    }
    assert!(live, "no NetStream.Play.Start");
    assert!(video >= 50, "only {video} video messages");
    assert_eq!(
        first_video,
        Some(0x17),
        "starts with the AVC sequence header"
    );
    kill_and_reap(&mut publisher);
}

#[test]
fn a_target_that_cannot_keep_up_skips_to_keyframes_and_players_see_no_gap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(20);
    let stalled = FakeIngest::start(Behaviour::Stall);
    let toml = config(&target("slow", &stalled.url(), "")).replace(
        "send_timeout_ms = 3000",
        "send_timeout_ms = 60000\nqueue_max_bytes = 16384\nqueue_hard_max_bytes = 67108864\nsocket_send_buffer_bytes = 4096",
    );
    let node = Node::start(1, &toml, dir.path());
    let player = {
        let addr = node.addr;
        std::thread::spawn(move || video_timestamps(addr, "cam"))
    };
    node.wait_log(Duration::from_secs(20), |l| {
        l.contains("play") && l.contains("live/cam")
    })
    .expect("the player waits");
    let mut publisher = publish(&src, &node.url("live/cam"));
    wait_state(&node, "slow", "live", Duration::from_secs(10));
    let slow = wait_for(Duration::from_secs(20), || {
        listed(&node, "slow").filter(|s| s["dropped_frames"].as_u64() > Some(0))
    })
    .unwrap_or_else(|| panic!("no frame skipped: {:?}", listed(&node, "slow")));
    assert_eq!(
        slow["state"], "live",
        "a slow target is not cut before its hard bound"
    );
    assert!(metrics(&node).contains("corecast_restream_dropped_frames_total{target=\"slow\"}"));
    let status = wait_exit(&mut publisher, Duration::from_secs(40)).expect("publisher ended");
    assert!(status.success(), "{}", stderr_of(&mut publisher));
    let source_video = packets(&src).iter().filter(|p| p.kind == "video").count();
    assert_no_gap(&player.join().expect("player"), source_video, "the player");
}

/// The metadata messages (type 18 `onMetaData`, in either form) a fake ingest received, and
/// how many media messages came before the first.
fn metadata_received(ingest: &FakeIngest) -> (Vec<Vec<corecast_common::amf0::Amf0Value>>, usize) {
    use corecast_common::command::DataMessage;
    use corecast_common::types::MessageType;
    let received = ingest.received.lock().expect("lock").clone();
    let mut metadata = Vec::new();
    let mut before = None;
    for (i, (kind, _, payload)) in received.iter().enumerate() {
        if *kind != 18 {
            continue;
        }
        let data = DataMessage::decode(MessageType::DATA_AMF0, payload).expect("AMF0 data");
        if data.player_metadata().is_some() {
            before.get_or_insert(i);
            metadata.push(data.values);
        }
    }
    (metadata, before.unwrap_or(usize::MAX))
}

#[test]
fn targets_get_metadata_as_a_publisher_sends_it_once_before_the_media() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    // Stream id 1 (the shared frames) and 7 (re-headed frames): the two ways a push writes.
    let shared = FakeIngest::start(Behaviour::Accept(1));
    let reheaded = FakeIngest::start(Behaviour::Accept(7));
    let targets = [
        target("shared", &shared.url(), ""),
        target("reheaded", &reheaded.url(), ""),
    ]
    .concat();
    let node = Node::start(1, &config(&targets), dir.path());
    let mut publisher = publish(&src, &node.url("live/cam"));
    wait_state(&node, "shared", "live", Duration::from_secs(10));
    wait_state(&node, "reheaded", "live", Duration::from_secs(10));
    let status = wait_exit(&mut publisher, Duration::from_secs(30)).expect("publisher ended");
    assert!(status.success(), "{}", stderr_of(&mut publisher));
    for (what, ingest) in [("shared", &shared), ("reheaded", &reheaded)] {
        wait_for(Duration::from_secs(10), || {
            let got = ingest.received.lock().expect("lock").clone();
            (got.iter().filter(|m| m.0 == 9).count() >= 90).then_some(())
        })
        .unwrap_or_else(|| panic!("{what}: the video did not arrive"));
        let (metadata, before) = metadata_received(ingest);
        assert_eq!(metadata.len(), 1, "{what}: metadata once, not {metadata:?}");
        assert_eq!(before, 0, "{what}: metadata before any media");
        let names: Vec<_> = metadata[0].iter().take(2).map(|v| v.as_str()).collect();
        assert_eq!(
            names,
            [Some("@setDataFrame"), Some("onMetaData")],
            "{what}: not in publisher form"
        );
        assert!(
            metadata[0].get(2).and_then(|v| v.as_object()).is_some(),
            "{what}: no metadata object"
        );
    }
}

/// The `comment` tag ffprobe shows for `file` (empty when there is none).
fn comment_of(file: &Path) -> String {
    let out = output_with_deadline(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format_tags=comment"])
            .args(["-of", "default=nw=1:nk=1"])
            .arg(file),
        Duration::from_secs(60),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn nginx_rtmp_and_an_ffmpeg_sink_receive_the_publisher_s_metadata() {
    const COMMENT: &str = "corecast-metadata-check";
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let (nginx_port, sink_port) = (free_port(), free_port());
    let nginx = Nginx::start(dir.path(), nginx_port);
    let from_nginx = dir.path().join("nginx-player.flv");
    let mut player = play_to_file(
        &format!("rtmp://127.0.0.1:{nginx_port}/copy/cam"),
        &from_nginx,
    );
    let error_log = dir.path().join("logs/error.log");
    wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&error_log).unwrap_or_default();
        text.contains("play: name='cam'").then_some(())
    })
    .expect("nginx's player asked for the stream");
    let sink = RtmpSink::start(sink_port, "app/secretkey", &dir.path().join("sink.flv"));
    let targets = [
        target(
            "nginx",
            &format!("rtmp://127.0.0.1:{nginx_port}/copy/cam"),
            "",
        ),
        target(
            "sink",
            &format!("rtmp://127.0.0.1:{sink_port}/app/secretkey"),
            "",
        ),
    ]
    .concat();
    let node = Node::start(1, &config(&targets), dir.path());
    // A publisher whose metadata carries a field of its own.
    let mut publisher = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(&src)
        .args(["-c", "copy", "-metadata", &format!("comment={COMMENT}")])
        .args(["-f", "flv", &node.url("live/cam")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg publisher");
    wait_state(&node, "nginx", "live", Duration::from_secs(10));
    wait_state(&node, "sink", "live", Duration::from_secs(10));
    let status = wait_exit(&mut publisher, Duration::from_secs(30)).expect("publisher ended");
    assert!(status.success(), "{}", stderr_of(&mut publisher));
    let mut sink = sink;
    wait_exit(&mut sink.child, Duration::from_secs(15)).expect("the sink saw the stream end");
    assert_eq!(
        comment_of(&sink.out),
        COMMENT,
        "the ffmpeg sink's recording"
    );
    wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&error_log).unwrap_or_default();
        text.contains("deleteStream").then_some(())
    })
    .expect("nginx saw deleteStream");
    drop(nginx);
    wait_exit(&mut player, Duration::from_secs(20)).expect("nginx's player ended");
    assert_eq!(
        comment_of(&from_nginx),
        COMMENT,
        "nginx-rtmp's player's recording"
    );
}
