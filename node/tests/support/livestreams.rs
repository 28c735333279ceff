//! The livestream API from a test: JSON calls with a body, a webhook receiver that checks
//! signatures, and a throwaway PostgreSQL (scripts/pg-test-cluster.sh).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::node::{free_port, Node};
use super::process::output_with_deadline;

/// The API token the tests' nodes use.
pub const TOKEN: &str = "test-api-token";
/// The webhook secret the tests' nodes use.
pub const SECRET: &str = "test-webhook-secret-0123";

/// One API call: (status, lower-cased head, body as JSON, or Null when empty / not JSON).
pub fn call(
    node: &Node,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, serde_json::Value) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let headers = format!("{auth}Content-Type: application/json\r\n");
    let (status, head, body) =
        super::http::exchange(node.http, method, path, &headers, body.unwrap_or(""));
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (status, head.to_ascii_lowercase(), json)
}

/// `call` with the token; panics unless the status is `want`; the body.
pub fn ok(
    node: &Node,
    method: &str,
    path: &str,
    body: Option<&str>,
    want: u16,
) -> serde_json::Value {
    let (status, _, json) = call(node, method, path, Some(TOKEN), body);
    assert_eq!(status, want, "{method} {path}: {json}");
    json
}

/// Creates a livestream; (id, stream key, the whole answer).
pub fn create(node: &Node, name: &str) -> (String, String, serde_json::Value) {
    let created = ok(
        node,
        "POST",
        "/api/v1/livestreams",
        Some(&format!(r#"{{"name": "{name}"}}"#)),
        201,
    );
    let id = created["id"].as_str().expect("id").to_owned();
    let key = created["stream_key"]
        .as_str()
        .expect("stream_key")
        .to_owned();
    (id, key, created)
}

/// The livestream as `GET /api/v1/livestreams/{id}` shows it (asserting 200).
pub fn get(node: &Node, id: &str) -> serde_json::Value {
    ok(node, "GET", &format!("/api/v1/livestreams/{id}"), None, 200)
}

/// `POST /api/v1/livestreams/{id}/{action}` (`disable`, `enable`, `reset-key`), asserting
/// 200; the answer.
pub fn act(node: &Node, id: &str, action: &str) -> serde_json::Value {
    ok(
        node,
        "POST",
        &format!("/api/v1/livestreams/{id}/{action}"),
        None,
        200,
    )
}

/// The livestream's status as `GET` shows it.
pub fn status_of(node: &Node, id: &str) -> String {
    get(node, id)["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Config for a node with the registry at `url`, the API token and, if given, webhooks.
pub fn config(url: &str, node_id: &str, webhook: Option<&str>) -> String {
    let hooks = webhook
        .map(|u| format!("[webhooks]\nurls = [\"{u}\"]\nsecret = \"{SECRET}\"\n"))
        .unwrap_or_default();
    format!(
        "[http]\napi_token = \"{TOKEN}\"\n\n[registry]\nurl = \"{url}\"\nnode_id = \"{node_id}\"\nrenew_ms = 500\nlease_secs = 3\n\n\
         [livestreams]\nhttp_url = \"https://live.example.com/\"\n\n\
         [[auth.apps]]\nname = \"live\"\npublish = \"keys\"\nplay = \"open\"\n\n{hooks}"
    )
}

/// ffmpeg publishing `file` as OBS does: the server URL (`rtmp://HOST:PORT/live`) and the
/// stream key as the stream name, given apart (`-rtmp_app`, `-rtmp_playpath`).
pub fn publish_with_key(node: &Node, file: &Path, key: &str) -> std::process::Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(file)
        .args([
            "-c",
            "copy",
            "-f",
            "flv",
            "-rtmp_app",
            "live",
            "-rtmp_playpath",
            key,
        ])
        .arg(format!("rtmp://{}", node.addr))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ffmpeg publisher")
}

/// Waits until `GET` shows the livestream with `status`; the body.
pub fn wait_status(node: &Node, id: &str, status: &str, limit: Duration) -> serde_json::Value {
    super::wait_for(limit, || {
        let got = get(node, id);
        (got["status"] == status).then_some(got)
    })
    .unwrap_or_else(|| {
        let got = get(node, id);
        panic!("{id} not {status} within {limit:?}: {got}")
    })
}

/// A webhook as received.
#[derive(Debug, Clone)]
pub struct Hook {
    /// The event's `type`.
    pub kind: String,
    /// The livestream's id.
    pub livestream: String,
    /// Whether `Corecast-Signature` was right for the body.
    pub signed: bool,
}

/// A webhook receiver on a loopback port; answers 500 to the first `fail_first` requests.
pub struct Receiver {
    /// Its URL.
    pub url: String,
    /// What it accepted (2xx), in order.
    pub hooks: Arc<Mutex<Vec<Hook>>>,
}

impl Receiver {
    /// Starts it on its own thread (for the rest of the test process).
    pub fn start(fail_first: usize) -> Receiver {
        Receiver::start_at(0, fail_first)
    }

    /// The same on `port` (0: any).
    pub fn start_at(port: u16, fail_first: usize) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&hooks);
        std::thread::spawn(move || {
            let mut failed = 0;
            for stream in listener.incoming().map_while(Result::ok) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Some(hook) = read_hook(&stream) else {
                    continue;
                };
                let fail = failed < fail_first;
                let status = if fail {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let mut out = &stream;
                let _ = write!(
                    out,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                if fail {
                    failed += 1;
                } else {
                    sink.lock().expect("hooks").push(hook);
                }
            }
        });
        Receiver {
            url: format!("http://{addr}/hooks"),
            hooks,
        }
    }

    /// What arrived so far.
    pub fn received(&self) -> Vec<Hook> {
        self.hooks.lock().expect("hooks").clone()
    }
}

fn read_hook(stream: &std::net::TcpStream) -> Option<Hook> {
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    let mut signature = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().ok()?,
                "corecast-signature" => signature = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let body = String::from_utf8(body).ok()?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(Hook {
        kind: json["type"].as_str()?.to_owned(),
        livestream: json["data"]["id"].as_str()?.to_owned(),
        signed: verify(&signature, &body),
    })
}

/// Checks `t=...,v1=...` as a receiver should: HMAC-SHA256 over "t.body", a recent `t`.
fn verify(header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if (now - t).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(format!("{t}.{body}").as_bytes());
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == v1
}

/// A throwaway PostgreSQL (scripts/pg-test-cluster.sh), stopped on drop.
pub struct Postgres {
    /// Its connection URL.
    pub url: String,
    dir: PathBuf,
}

impl Postgres {
    /// Starts one in `dir`.
    pub fn start(dir: &Path) -> Postgres {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg-test-cluster.sh");
        let port = free_port().to_string();
        let out = output_with_deadline(
            Command::new(script)
                .arg("start")
                .arg(dir)
                .arg(&port)
                .arg("300"),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "PostgreSQL did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Postgres {
            url: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            dir: dir.to_owned(),
        }
    }
}

impl Postgres {
    /// Restarts it as after a crash: every client's connection is cut.
    pub fn restart(&self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg-test-cluster.sh");
        let out = output_with_deadline(
            Command::new(script).arg("restart").arg(&self.dir),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "PostgreSQL did not restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg-test-cluster.sh");
        let _ = output_with_deadline(
            Command::new(script).arg("stop").arg(&self.dir),
            Duration::from_secs(30),
        );
    }
}
