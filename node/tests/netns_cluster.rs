//! A cluster on separate hosts: network namespaces with their own addresses on one bridge
//! (`support::netns`), two origins, two edges and HAProxy in front of both tiers (PROXY
//! protocol v2 to the nodes), an ffmpeg publisher and harness players on a client host, at
//! 1 Mbit/s. Between edges and origins: 1 % loss each way (nftables `numgen random`) and 25 ms
//! each way (a user-space relay: this kernel has no `netem`). Three phases, each its own
//! harness run: the impaired cluster delivers without a drop or a gap; an origin killed
//! mid-stream fails over with no player lost; a drained edge hands its players on (Enhanced
//! RTMP reconnect through the load balancer) without a gap. An impairment that cannot be
//! made here is skipped with a message; the rest is not.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::netns::{DelayRelay, Host, Lan};
use support::node::Node;
use support::process::{kill_and_reap, output_with_deadline, wait_with_output_deadline};
use support::wait_for;

const RTMP: u16 = 1935;
const INGEST: u16 = 1936;
const HTTP: u16 = 8081;
const PULL: u16 = 1940;
const PLAYERS: usize = 8;
const STREAM: &str = "live/cluster";
const TOKEN: &str = "cluster-test-token";

fn at(addr: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((addr, port))
}

/// `GET path` from inside `host`, with deadlines; the body, or None.
fn http_get(host: &Host, addr: SocketAddr, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    host.run(move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
    })
}

/// The clients `node` (in `host`) serves, as its API lists them.
fn clients(host: &Host) -> Vec<serde_json::Value> {
    http_get(host, at(host.addr, HTTP), "/api/v1/clients?limit=1000")
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|v| v["data"].as_array().cloned())
        .unwrap_or_default()
}

fn playing(host: &Host) -> Vec<serde_json::Value> {
    clients(host)
        .into_iter()
        .filter(|c| c["role"] == "playing" && c["transport"] == "rtmp")
        .collect()
}

/// A 1 Mbit/s H.264/AAC test stream, 20 s, looped by the publisher.
fn media(dir: &Path) -> PathBuf {
    let path = dir.join("cluster.flv");
    let out = output_with_deadline(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args([
                "-t",
                "20",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "50",
            ])
            .args([
                "-b:v", "900k", "-maxrate", "1000k", "-bufsize", "500k", "-pix_fmt", "yuv420p",
            ])
            .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv"])
            .arg(&path),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// A process killed and reaped when dropped: a failed assertion leaves nothing running (the
/// publisher loops forever, HAProxy serves until stopped).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

/// ffmpeg on the client host publishing `file` in a loop through the load balancer.
fn publish(client: &Host, lb: Ipv4Addr, file: &Path) -> Reaped {
    client
        .command("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(file)
        .args(["-c", "copy", "-f", "flv"])
        .arg(format!("rtmp://{lb}:{INGEST}/{STREAM}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Reaped)
        .expect("start ffmpeg")
}

fn loadtest_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_corecast")).with_file_name("corecast-loadtest");
    assert!(
        bin.exists(),
        "{} is missing: make test builds it",
        bin.display()
    );
    bin
}

/// Harness players on the client host for `secs`, following reconnect requests.
fn players(client: &Host, lb: Ipv4Addr, secs: u32, report: &Path) -> Child {
    client
        .command(loadtest_binary().to_str().expect("path"))
        .args(["play", &format!("rtmp://{lb}:{RTMP}/{STREAM}"), "--players"])
        .arg(PLAYERS.to_string())
        .args([
            "--duration",
            &secs.to_string(),
            "--ramp",
            "0",
            "--reconnect",
            "--json",
        ])
        .arg(report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the harness")
}

/// Waits for the harness and reads its report.
fn finish(players: Child, report: &Path) -> serde_json::Value {
    let out = wait_with_output_deadline(players, Duration::from_secs(90), "the harness");
    let text = std::fs::read(report)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    serde_json::from_slice(&text).expect("report json")
}

fn haproxy_config(lb: Ipv4Addr, edges: [Ipv4Addr; 2], origins: [Ipv4Addr; 2]) -> String {
    let server = |name: &str, addr: Ipv4Addr| {
        format!(
            "    server {name} {addr}:{RTMP} send-proxy-v2 check port {HTTP} inter 300 fall 1 rise 1\n"
        )
    };
    format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 120s\n    timeout server 120s\n    \
         option redispatch\n    retries 3\n\
         frontend play\n    bind {lb}:{RTMP}\n    default_backend edges\n\
         backend edges\n    balance roundrobin\n    option httpchk GET /readyz\n{}{}\
         frontend ingest\n    bind {lb}:{INGEST}\n    default_backend origins\n\
         backend origins\n    balance first\n    option httpchk GET /readyz\n{}{}",
        server("e1", edges[0]),
        server("e2", edges[1]),
        server("o1", origins[0]),
        server("o2", origins[1]),
    )
}

#[test]
fn a_cluster_on_separate_hosts_keeps_its_players_through_loss_an_origin_crash_and_an_edge_drain() {
    let lan = Lan::new(&["o1", "o2", "e1", "e2", "lb", "client"]).unwrap_or_else(|e| {
        panic!("cannot make network namespaces here ({e}): this test needs root and iproute2")
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let (o1, o2, e1, e2, lb, client) = (
        lan.host("o1"),
        lan.host("o2"),
        lan.host("e1"),
        lan.host("e2"),
        lan.host("lb"),
        lan.host("client"),
    );
    let proxy = format!(
        "[proxy_protocol]\nlisteners = [\"rtmp\"]\ntrusted = [\"{}\"]\n",
        lb.addr
    );
    let origin = |host: &Host| {
        let config = format!(
            "[cluster]\nrole = \"origin\"\npull_listen = \"0.0.0.0:{PULL}\"\ntoken = \"{TOKEN}\"\n{proxy}"
        );
        Node::start_in(
            &host.wrapper(),
            2,
            &config,
            dir.path(),
            at(host.addr, RTMP),
            at(host.addr, HTTP),
        )
    };
    let mut origin1 = origin(o1);
    let _origin2 = origin(o2);

    // Each edge reaches the origins through delaying relays of its own, over lossy links.
    let delay = Duration::from_millis(25);
    let mut relays = Vec::new();
    let mut edge = |host: &Host| {
        let upstreams: Vec<String> = [o1, o2]
            .iter()
            .map(|origin| {
                let relay = DelayRelay::start(host, at(origin.addr, PULL), delay);
                let addr = format!("\"{}\"", relay.addr);
                relays.push(relay);
                addr
            })
            .collect();
        let loss = format!(
            "table inet cc_loss {{\n\
             chain out {{ type filter hook output priority 0; policy accept; ip daddr {{ {a}, {b} }} tcp dport {PULL} numgen random mod 100 < 1 drop; }}\n\
             chain in {{ type filter hook input priority 0; policy accept; ip saddr {{ {a}, {b} }} tcp sport {PULL} numgen random mod 100 < 1 drop; }}\n}}\n",
            a = o1.addr,
            b = o2.addr
        );
        if let Err(e) = host.nft(&loss) {
            eprintln!(
                "SKIPPED IMPAIRMENT: 1 % loss between {} and the origins cannot be made here: {e}",
                host.netns
            );
        }
        let config = format!(
            "[node]\nshutdown_grace_secs = 20\nreconnect_url = \"rtmp://{lb}:{RTMP}\"\n\
             [cluster]\nrole = \"edge\"\nupstreams = [{}]\ntoken = \"{TOKEN}\"\nretry_max_secs = 1\nconnect_timeout_secs = 2\n{proxy}",
            upstreams.join(", "),
            lb = lb.addr
        );
        Node::start_in(
            &host.wrapper(),
            2,
            &config,
            dir.path(),
            at(host.addr, RTMP),
            at(host.addr, HTTP),
        )
    };
    let edge1 = edge(e1);
    let _edge2 = edge(e2);

    let haproxy_cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &haproxy_cfg,
        haproxy_config(lb.addr, [e1.addr, e2.addr], [o1.addr, o2.addr]),
    )
    .expect("haproxy config");
    let haproxy = lb
        .command("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&haproxy_cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Reaped)
        .expect("start haproxy");
    let lb_addr = lb.addr;
    let up = wait_for(Duration::from_secs(20), || {
        client
            .run(move || {
                TcpStream::connect_timeout(&at(lb_addr, RTMP), Duration::from_secs(1)).is_ok()
            })
            .then_some(())
    });
    assert!(up.is_some(), "haproxy did not come up");

    let file = media(dir.path());
    let publisher = publish(client, lb.addr, &file);
    let live = wait_for(Duration::from_secs(30), || {
        clients(o1)
            .iter()
            .any(|c| c["role"] == "publishing")
            .then_some(())
    });
    assert!(
        live.is_some(),
        "the publisher did not reach the first origin through haproxy"
    );

    // Phase 1: through loss and delay, every player plays to the end without a gap.
    let report = dir.path().join("phase1.json");
    let run = finish(players(client, lb.addr, 20, &report), &report);
    let c = &run["connections"];
    assert_eq!(c["ok"], PLAYERS as u64, "phase 1: {c}");
    assert_eq!(c["dropped"], 0, "phase 1: {c}");
    assert_eq!(
        run["players"]["gaps"]["total"], 0,
        "phase 1: {}",
        run["players"]["gaps"]
    );
    // The edges saw the client host's address through the PROXY protocol, not haproxy's.
    // (Checked on the next run's players, while they play.)

    // Phase 2: the origin with the stream dies; the publisher comes back through haproxy to
    // the other one; the edges fail over and keep every player.
    let report = dir.path().join("phase2.json");
    let run2 = players(client, lb.addr, 25, &report);
    let spread = wait_for(Duration::from_secs(30), || {
        let (a, b) = (playing(e1), playing(e2));
        (a.len() + b.len() >= PLAYERS).then_some((a, b))
    });
    let (on_e1, on_e2) = spread.expect("phase 2: the players did not start on the edges");
    for player in on_e1.iter().chain(&on_e2) {
        let addr = player["addr"].as_str().unwrap_or_default();
        assert!(
            addr.starts_with(&format!("{}:", client.addr)),
            "an edge sees {addr}, not the client host {}",
            client.addr
        );
    }
    origin1.kill();
    drop(publisher);
    let publisher = publish(client, lb.addr, &file);
    let run = finish(run2, &report);
    let c = &run["connections"];
    assert_eq!(c["ok"], PLAYERS as u64, "phase 2: {c}");
    assert_eq!(
        c["dropped"], 0,
        "phase 2, an origin crash lost players: {c}"
    );

    // Phase 3: the first edge drains; its players move through haproxy to the other edge.
    let report = dir.path().join("phase3.json");
    let run3 = players(client, lb.addr, 20, &report);
    // Exactly this run's players, the same count twice: the API's view is refreshed once a
    // second, so the last run's players may still be listed for a moment.
    let mut since: Option<(usize, std::time::Instant)> = None;
    let started = wait_for(Duration::from_secs(30), || {
        let a = playing(e1).len();
        if a == 0 || a + playing(e2).len() != PLAYERS {
            since = None;
            return None;
        }
        match since {
            Some((count, at)) if count == a => {
                (at.elapsed() > Duration::from_millis(1500)).then_some(a)
            }
            _ => {
                since = Some((a, std::time::Instant::now()));
                None
            }
        }
    });
    let on_first = started.expect("phase 3: the players did not start on both edges");
    edge1.terminate();
    let run = finish(run3, &report);
    let c = &run["connections"];
    assert_eq!(c["dropped"], 0, "phase 3, the drain lost players: {c}");
    assert_eq!(c["reconnected_players"], on_first as u64, "phase 3: {c}");
    assert_eq!(
        run["players"]["gaps"]["total"], 0,
        "phase 3: {}",
        run["players"]["gaps"]
    );
    assert_eq!(
        run["players"]["gaps"]["rewinds"], 0,
        "phase 3: {}",
        run["players"]["gaps"]
    );

    drop(publisher);
    drop(haproxy);
    drop(relays);
}
