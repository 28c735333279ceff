//! The console page: signing in sets an HttpOnly, SameSite=Strict session cookie, changes
//! made with it need its CSRF token, and in headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from node/tests/console/) the page creates a livestream that ffmpeg then
//! publishes to with the key the page showed. The screenshot is kept in the target folder.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::livestreams::{config, publish_with_key, wait_status, TOKEN};
use support::media::shared_flv;
use support::node::Node;
use support::process::{connect, output_with_deadline};

fn console_node(dir: &Path) -> Node {
    let url = format!("sqlite://{}", dir.join("registry.db").display());
    let config = config(&url, "node-a", None).replacen(
        "[livestreams]\n",
        "[livestreams]\nconsole = true\n",
        1,
    );
    Node::start(1, &config, dir)
}

/// A raw exchange: (status, head, body).
fn exchange(
    node: &Node,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = connect(node.http).expect("http connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("http write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("http read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, head.to_owned(), body.to_owned())
}

#[test]
fn signing_in_sets_a_strict_http_only_cookie_and_changes_need_the_csrf_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = console_node(dir.path());
    let (status, head, _) = exchange(&node, "GET", "/console", "", "");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy"),
        "{head}"
    );
    let (status, _, _) = exchange(
        &node,
        "POST",
        "/console/session",
        "",
        r#"{"token": "wrong"}"#,
    );
    assert_eq!(status, 401);
    let (status, head, body) = exchange(
        &node,
        "POST",
        "/console/session",
        "",
        &format!(r#"{{"token": "{TOKEN}"}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let cookie_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a session cookie");
    let flags = cookie_line.to_ascii_lowercase();
    assert!(flags.contains("; httponly"), "{cookie_line}");
    assert!(flags.contains("; samesite=strict"), "{cookie_line}");
    let cookie = cookie_line["set-cookie:".len()..]
        .trim()
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let csrf = serde_json::from_str::<serde_json::Value>(&body).expect("json")["csrf"]
        .as_str()
        .expect("csrf")
        .to_owned();
    // The cookie reads; a change with it alone is refused; with its CSRF token it is made.
    let with_cookie = format!("Cookie: {cookie}\r\n");
    assert_eq!(
        exchange(&node, "GET", "/api/v1/livestreams", &with_cookie, "").0,
        200
    );
    let create = r#"{"name": "by cookie"}"#;
    let (status, _, body) = exchange(&node, "POST", "/api/v1/livestreams", &with_cookie, create);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("csrf"), "{body}");
    let wrong = format!("{with_cookie}X-CSRF-Token: {}\r\n", "0".repeat(64));
    assert_eq!(
        exchange(&node, "POST", "/api/v1/livestreams", &wrong, create).0,
        403
    );
    let right = format!("{with_cookie}X-CSRF-Token: {csrf}\r\n");
    let (status, _, body) = exchange(&node, "POST", "/api/v1/livestreams", &right, create);
    assert_eq!(status, 201, "{body}");
    // A cookie this node did not sign is no session.
    let forged = "Cookie: corecast_console=v1.99999999999.x.00\r\n";
    assert_eq!(
        exchange(&node, "GET", "/api/v1/livestreams", forged, "").0,
        401
    );
}

#[test]
fn the_console_off_serves_no_page() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("registry.db").display());
    let node = Node::start(1, &config(&url, "node-a", None), dir.path());
    assert_eq!(exchange(&node, "GET", "/console", "", "").0, 404);
}

/// The console's browser test needs Debian's chromium and `npm ci` in node/tests/console
/// (scripts/install-deps.sh does both); missing, the test
/// fails and says so: `make test` installs them first.
fn require_browser(script_dir: &Path) {
    let ready = Path::new("/usr/bin/chromium").exists()
        && script_dir.join("node_modules/playwright-core").exists();
    assert!(
        ready,
        "chromium or playwright-core missing: run scripts/install-deps.sh"
    );
}

#[test]
fn the_console_creates_a_livestream_that_ffmpeg_publishes_to() {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    require_browser(&script_dir);
    let dir = tempfile::tempdir().expect("temp dir");
    let node = console_node(dir.path());
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let out = output_with_deadline(
        Command::new("node")
            .current_dir(&script_dir)
            .arg("console.mjs")
            .arg(format!("http://{}", node.http))
            .arg(TOKEN)
            .arg(&screenshot),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "the browser run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the script's JSON answer");
    assert_eq!(seen["ingest"], "rtmp://localhost:1935/live", "{seen}");
    assert!(seen["listed"].as_u64().unwrap_or_default() >= 1, "{seen}");
    let cookie = &seen["cookies"][0];
    assert_eq!(cookie["httpOnly"], true, "{seen}");
    assert_eq!(cookie["sameSite"], "Strict", "{seen}");
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    let key = seen["key"].as_str().expect("the key the page showed");
    let created = support::livestreams::ok(&node, "GET", "/api/v1/livestreams", None, 200);
    let id = created["data"][0]["id"].as_str().expect("id").to_owned();
    let mut encoder = publish_with_key(&node, &shared_flv(30), key);
    wait_status(&node, &id, "active", Duration::from_secs(15));
    support::process::kill_and_reap(&mut encoder);
    eprintln!("console screenshot: {}", screenshot.display());
}
