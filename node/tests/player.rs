//! The player page (`/play/{app}/{name}`): in headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from node/tests/console/, with hls.js and mpegts.js from `player/`) it
//! plays an ffmpeg publish over LL-HLS in hls.js's low-latency mode, fetching parts, and over
//! WebSocket-FLV with mpegts.js; over raw HTTP its headers, its scripts' types and caching, its
//! refusals, and what it says when the players' files are not installed.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::http::get;
use support::media::{publish_looping, shared_flv};
use support::node::Node;
use support::process::{output_with_deadline, Reaped};
use support::token::play_token;

/// A node whose players' files are small stand-ins in `dir/node_modules` (so these tests do
/// not need npm), or, with `installed = false`, a folder without them.
fn node_with_assets(dir: &Path, installed: bool) -> Node {
    let modules = dir.join("node_modules");
    if installed {
        for (path, text) in [
            ("hls.js/dist/hls.min.js", "/* hls stand-in */"),
            ("mpegts.js/dist/mpegts.js", "/* mpegts stand-in */"),
        ] {
            let file = modules.join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(file, text).expect("write");
        }
    }
    let config = format!("[player_page]\nassets_dir = {:?}\n", modules.display());
    Node::start(1, &config, dir)
}

/// The `src`/`href` of the page's `/play/assets/{name}` (with its `?v=`).
fn asset_url(page: &str, name: &str) -> String {
    let start = page
        .find(&format!("/play/assets/{name}"))
        .unwrap_or_else(|| panic!("{name} not in the page:\n{page}"));
    let end = start + page[start..].find('"').expect("a closing quote");
    page[start..end].to_owned()
}

#[test]
fn the_page_has_a_strict_policy_and_its_scripts_are_typed_and_cached_by_version() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with_assets(dir.path(), true);
    let page = get(node.http, "/play/live/x");
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    let csp = page.header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("referrer-policy"), "no-referrer");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert_eq!(page.header("cache-control"), "no-cache");
    for (name, content_type, body) in [
        ("hls.min.js", "text/javascript", Some("/* hls stand-in */")),
        (
            "mpegts.js",
            "text/javascript",
            Some("/* mpegts stand-in */"),
        ),
        ("player.js", "text/javascript", None),
        ("player.css", "text/css", None),
    ] {
        let url = asset_url(&page.text(), name);
        let asset = get(node.http, &url);
        assert_eq!(asset.status, 200, "{url}");
        assert_eq!(
            asset.header("content-type"),
            format!("{content_type}; charset=utf-8"),
            "{url}"
        );
        assert_eq!(
            asset.header("cache-control"),
            "public, max-age=31536000, immutable",
            "{url}"
        );
        assert_eq!(asset.header("x-content-type-options"), "nosniff");
        if let Some(body) = body {
            assert_eq!(asset.text(), body, "{url}");
        }
        // Without its current version the same bytes are not cached for long.
        let bare = get(node.http, &format!("/play/assets/{name}"));
        assert_eq!(bare.status, 200);
        assert_eq!(bare.header("cache-control"), "no-cache", "{name}");
    }
    assert_eq!(get(node.http, "/play/assets/nothing.js").status, 404);
}

#[test]
fn reserved_apps_and_impossible_names_are_refused_logged_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with_assets(dir.path(), true);
    for app in ["api", "hls", "play", "console", "metrics"] {
        let answer = get(node.http, &format!("/play/{app}/x"));
        assert_eq!(answer.status, 404, "/play/{app}/x: {}", answer.text());
    }
    for path in [
        "/play/live/a%0Ab",
        "/play/live/a%2Fb",
        &format!("/play/live/{}", "n".repeat(300)),
    ] {
        assert_eq!(get(node.http, path).status, 400, "{path}");
    }
    // A stream that is not live (yet) is no refusal: the page waits for it.
    assert_eq!(get(node.http, "/play/live/not-yet").status, 200);
    assert_eq!(node.errors_counted("player_reserved_app"), 5.0);
    assert_eq!(node.errors_counted("player_bad_name"), 3.0);
    assert!(
        node.wait_log(Duration::from_secs(5), |l| l
            .contains("player page refused")
            && l.contains("player_reserved_app"))
            .is_some(),
        "a refusal is logged with its reason"
    );
}

#[test]
fn missing_player_files_are_a_503_page_naming_npm_ci_and_check_warns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with_assets(dir.path(), false);
    let page = get(node.http, "/play/live/x");
    assert_eq!(page.status, 503, "{}", page.text());
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(
        page.text().contains("npm ci --prefix player"),
        "{}",
        page.text()
    );
    assert!(
        page.text().contains("hls.js/dist/hls.min.js"),
        "{}",
        page.text()
    );
    let script = get(node.http, "/play/assets/hls.min.js");
    assert_eq!(script.status, 503);
    assert!(
        script.text().contains("npm ci --prefix player"),
        "{}",
        script.text()
    );
    // The page's own files are built in.
    assert_eq!(get(node.http, "/play/assets/player.js").status, 200);
    assert_eq!(node.errors_counted("player_assets_missing"), 2.0);
    assert!(
        node.wait_log(Duration::from_secs(5), |l| l.contains("WARN")
            && l.contains("npm ci --prefix player"))
            .is_some(),
        "the start-up warns"
    );
    // `--check` passes, with a warning that says what to run.
    let missing = dir.path().join("node_modules");
    let (code, stderr) = support::node::check_config(&format!(
        "[player_page]\nassets_dir = {:?}\n",
        missing.display()
    ));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("npm ci --prefix player"),
        "{stderr}"
    );
}

#[test]
fn the_page_off_is_a_404() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[player_page]\nenabled = false\n", dir.path());
    assert_eq!(get(node.http, "/play/live/x").status, 404);
    assert_eq!(get(node.http, "/play/assets/player.js").status, 404);
}

/// The folder of play.mjs and the players' `node_modules`, once it is checked that they and
/// the browser are there. The browser test needs Debian's chromium, `npm ci` in node/tests/console (playwright-core)
/// and in player/ (hls.js, mpegts.js); scripts/install-deps.sh does all three. Missing, the
/// test fails and says so: `make test` installs them first.
fn browser() -> (PathBuf, PathBuf) {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let players = Path::new(env!("CARGO_MANIFEST_DIR")).join("../player/node_modules");
    let ready = Path::new("/usr/bin/chromium").exists()
        && script_dir.join("node_modules/playwright-core").exists()
        && players.join("hls.js/dist/hls.min.js").exists()
        && players.join("mpegts.js/dist/mpegts.js").exists();
    assert!(
        ready,
        "chromium, playwright-core or the players missing: run scripts/install-deps.sh"
    );
    (script_dir, players)
}

/// Plays `page` in Chromium until its video advanced 5 s: what play.mjs saw.
fn play_in_chromium(script_dir: &Path, page: &str) -> serde_json::Value {
    let (played, seen) = try_in_chromium(script_dir, page, 60);
    assert!(played, "the browser never played {page}: {seen}");
    seen
}

/// Opens `page` in Chromium and waits `wait_secs` for its video to play (then 5 s of it):
/// whether it played, and what play.mjs saw. Any certificate is accepted (a test CA's).
fn try_in_chromium(script_dir: &Path, page: &str, wait_secs: u64) -> (bool, serde_json::Value) {
    let out = output_with_deadline(
        Command::new("node")
            .current_dir(script_dir)
            .env("PLAY_INSECURE", "1")
            .arg("play.mjs")
            .arg(page)
            .args(["5", "0", &wait_secs.to_string()]),
        Duration::from_secs(wait_secs + 90),
    );
    let seen = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON from the browser run of {page} ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), seen)
}

#[test]
fn chromium_plays_the_page_over_ll_hls_in_low_latency_mode_and_over_websocket_flv() {
    let (script_dir, players) = browser();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("[player_page]\nassets_dir = {:?}\n", players.display());
    let node = Node::start(1, &config, dir.path());
    let publisher = publish_looping(&shared_flv(10), &node.url("live/x"));

    let hls = play_in_chromium(&script_dir, &format!("http://{}/play/live/x", node.http));
    assert_eq!(hls["mode"], "hls", "{hls}");
    assert!(hls["played"].as_f64().unwrap_or_default() >= 5.0, "{hls}");
    assert_eq!(
        hls["lowLatencyMode"], true,
        "hls.js runs in low-latency mode: {hls}"
    );
    assert!(
        hls["partUrls"].as_u64().unwrap_or_default() >= 1,
        "parts fetched: {hls}"
    );
    assert!(
        hls["parts"].as_u64().unwrap_or_default() >= 1,
        "parts loaded: {hls}"
    );

    let flv = play_in_chromium(
        &script_dir,
        &format!("http://{}/play/live/x?via=flv", node.http),
    );
    assert_eq!(flv["mode"], "flv", "{flv}");
    assert!(flv["played"].as_f64().unwrap_or_default() >= 5.0, "{flv}");
    assert!(flv["webSockets"].as_u64().unwrap_or_default() >= 1, "{flv}");

    for seen in [&hls, &flv] {
        let errors = seen["consoleErrors"].to_string();
        assert!(
            !errors.contains("Content Security Policy"),
            "the CSP blocked something: {errors}"
        );
    }
    drop(publisher);
}

#[test]
fn the_page_passes_its_token_on_to_the_playlist() {
    const SECRET: &str = "k1-secret-for-the-player-tests-01";
    let (script_dir, players) = browser();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "[player_page]\nassets_dir = {:?}\n[auth]\n[[auth.apps]]\nname = \"live\"\npublish = \"open\"\nplay = \"token\"\n[[auth.keys]]\nid = \"k1\"\nsecret = \"{SECRET}\"\nstate = \"active\"\n",
        players.display()
    );
    let node = Node::start(1, &config, dir.path());
    let publisher = publish_looping(&shared_flv(10), &node.url("live/paid"));
    let base = format!("http://{}/play/live/paid", node.http);
    let token = play_token(SECRET, "paid");
    let paid = play_in_chromium(&script_dir, &format!("{base}?token={token}"));
    assert!(paid["played"].as_f64().unwrap_or_default() >= 5.0, "{paid}");
    // Without it the page plays nothing and says why.
    let (played, refused) = try_in_chromium(&script_dir, &base, 8);
    assert!(!played, "played without a token: {refused}");
    assert!(
        refused["status"]
            .as_str()
            .is_some_and(|s| s.contains("not authorized")),
        "{refused}"
    );
    drop(publisher);
}

#[test]
fn the_page_plays_on_after_a_publisher_restart() {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::mpsc;
    let (script_dir, players) = browser();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("[player_page]\nassets_dir = {:?}\n", players.display());
    let node = Node::start(1, &config, dir.path());
    let source = shared_flv(10);
    for page in ["/play/live/again", "/play/live/again?via=flv"] {
        let first = publish_looping(&source, &node.url("live/again"));
        let mut browser = Reaped(
            Command::new("node")
                .current_dir(&script_dir)
                .env("PLAY_RESTART", "1")
                .arg("play.mjs")
                .arg(format!("http://{}{page}", node.http))
                .arg("5")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start node play.mjs"),
        );
        let (tx, lines) = mpsc::channel();
        let stdout = browser.0.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let asked = lines.recv_timeout(Duration::from_secs(120));
        assert_eq!(asked.as_deref(), Ok("restart"), "{page} never played");
        // The publisher goes and comes back: a new publish, new HLS names.
        drop(first);
        let second = publish_looping(&source, &node.url("live/again"));
        let mut stdin = browser.0.stdin.take().expect("stdin");
        writeln!(stdin, "go").expect("tell play.mjs");
        let answer = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("no answer from play.mjs for {page}: {e}"));
        let seen: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        assert!(
            seen["replayed"].as_f64().unwrap_or_default() >= 5.0,
            "{page} did not play on after the restart: {seen}"
        );
        drop((browser, second));
    }
}

#[test]
fn over_https_the_page_plays_ll_hls_and_websocket_flv_over_wss() {
    use support::tls::{rtmps_section, CertFiles, TestCa};
    let (script_dir, players) = browser();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("corecast test CA");
    let files = CertFiles::in_dir(dir.path());
    files.install(&ca.issue(&["127.0.0.1", "localhost"]));
    let (rtmps, _) = rtmps_section(&files, "");
    let config = format!(
        "{rtmps}\n[http]\ntls = true\n[player_page]\nassets_dir = {:?}\n",
        players.display()
    );
    let node = Node::start(1, &config, dir.path());
    let publisher = publish_looping(&shared_flv(10), &node.url("live/tls"));
    let base = format!("https://localhost:{}/play/live/tls", node.http.port());
    let hls = play_in_chromium(&script_dir, &base);
    assert!(hls["played"].as_f64().unwrap_or_default() >= 5.0, "{hls}");
    assert!(hls["partUrls"].as_u64().unwrap_or_default() >= 1, "{hls}");
    let flv = play_in_chromium(&script_dir, &format!("{base}?via=flv"));
    assert!(flv["played"].as_f64().unwrap_or_default() >= 5.0, "{flv}");
    assert!(flv["webSockets"].as_u64().unwrap_or_default() >= 1, "{flv}");
    drop(publisher);
}
