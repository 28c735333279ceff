//! LL-HLS on `http.listen` with real tools: ffmpeg publishes over RTMP, ffprobe and ffmpeg read
//! the playlist, raw HTTP checks blocking reloads, headers and refusals.

mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::http::get;
use support::media::{publish, shared_flv};
use support::node::{check_config, check_refuses, fast_edge_config, pull_origin, Node};
use support::process::{kill_and_reap, output_with_deadline};
use support::token::play_token;
use support::wait_for;

/// Waits until the stream's playlist answers 200 with at least `segments` segments listed.
fn live_playlist(node: &Node, path: &str, segments: usize) -> String {
    wait_for(Duration::from_secs(30), || {
        let answer = get(node.http, path);
        let text = answer.text();
        (answer.status == 200 && text.matches("#EXTINF").count() >= segments).then_some(text)
    })
    .unwrap_or_else(|| panic!("{path} never listed {segments} segments"))
}

/// The `URI="..."` of the first line starting with `tag`.
fn uri_of(playlist: &str, tag: &str) -> String {
    let line = playlist
        .lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("no {tag} in\n{playlist}"));
    let start = line.find("URI=\"").expect("a URI") + 5;
    let rest = &line[start..];
    rest[..rest.find('"').expect("closing quote")].to_owned()
}

/// The last part listed: (msn, index), from its `p{msn}.{index}.m4s` name.
fn last_part(playlist: &str) -> (u64, usize) {
    let uri = playlist
        .lines()
        .rev()
        .find(|l| l.starts_with("#EXT-X-PART:"))
        .map(|l| uri_of(l, "#EXT-X-PART:"))
        .expect("parts listed");
    let name = uri.rsplit('/').next().expect("a file name");
    let (msn, index) = name
        .strip_prefix('p')
        .and_then(|n| n.strip_suffix(".m4s"))
        .and_then(|n| n.split_once('.'))
        .expect("a part name");
    (msn.parse().expect("msn"), index.parse().expect("index"))
}

fn node() -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, "", dir.path());
    (node, dir)
}

fn stop(mut child: Child) {
    kill_and_reap(&mut child);
}

#[test]
fn ffprobe_and_ffmpeg_read_the_ll_playlist_and_blocking_reload_works() {
    let (node, dir) = node();
    let publisher = publish(&shared_flv(40), &node.url("live/x"));
    let index = "/hls/live/x/index.m3u8";
    let playlist = live_playlist(&node, index, 3);

    // The playlist: LL tags, short cache, CORS.
    let answer = get(node.http, index);
    assert_eq!(
        answer.header("content-type"),
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(answer.header("cache-control"), "max-age=1");
    assert_eq!(answer.header("access-control-allow-origin"), "*");
    for tag in [
        "#EXT-X-PART-INF:PART-TARGET=",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES",
        "#EXT-X-PRELOAD-HINT:TYPE=PART",
        "#EXT-X-MAP:URI=",
    ] {
        assert!(playlist.contains(tag), "{tag} missing from\n{playlist}");
    }
    // The plain playlist has none of the LL tags, under either name.
    for plain in ["/hls/live/x/index.m3u8?ll=0", "/hls/live/x/plain.m3u8"] {
        let text = get(node.http, plain).text();
        assert!(
            text.contains("#EXTINF") && !text.contains("#EXT-X-PART"),
            "{plain}:\n{text}"
        );
    }

    // The multivariant playlist names the LL one with its codecs.
    let master = get(node.http, "/hls/live/x/master.m3u8").text();
    assert!(
        master.contains("CODECS=\"avc1.")
            && master.contains("mp4a.40.2")
            && master.contains("\nindex.m3u8\n"),
        "{master}"
    );

    // Media: immutable, CORS; the hinted part is held until it exists.
    let init = get(
        node.http,
        &format!("/hls/live/x/{}", uri_of(&playlist, "#EXT-X-MAP")),
    );
    assert_eq!(init.status, 200);
    assert_eq!(
        init.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(init.header("access-control-allow-origin"), "*");
    assert_eq!(&init.body[4..8], b"ftyp");
    let hint = uri_of(&get(node.http, index).text(), "#EXT-X-PRELOAD-HINT");
    let part = get(node.http, &format!("/hls/live/x/{hint}"));
    assert_eq!(part.status, 200, "the hinted part {hint}");
    assert_eq!(&part.body[4..8], b"moof");

    // Blocking reload for the next part: it returns once that part (or, if the segment ended
    // first, the segment) is listed.
    let (msn, index_now) = last_part(&get(node.http, index).text());
    let next = index_now + 1;
    let blocked = get(
        node.http,
        &format!("{index}?_HLS_msn={msn}&_HLS_part={next}"),
    );
    assert_eq!(blocked.status, 200);
    let text = blocked.text();
    assert!(
        text.contains(&format!("p{msn}.{next}.m4s")) || text.contains(&format!("/s{msn}.m4s")),
        "neither part {msn}.{next} nor segment {msn} in\n{text}"
    );
    // Out of range and malformed: 400 at once (the hold is 9 s).
    for bad in [
        format!("{index}?_HLS_msn={}", msn + 10),
        format!("{index}?_HLS_msn={msn}&_HLS_part=1000"),
        format!("{index}?_HLS_msn=abc"),
        format!("{index}?_HLS_part=1"),
    ] {
        let started = Instant::now();
        let answer = get(node.http, &bad);
        assert_eq!(answer.status, 400, "{bad}: {}", answer.text());
        assert!(started.elapsed() < Duration::from_secs(5), "{bad} was held");
    }
    // Unknown stream, unknown prefix, unknown file.
    assert_eq!(get(node.http, "/hls/live/nobody/index.m3u8").status, 404);
    assert_eq!(
        get(node.http, "/hls/live/x/AAAAAAAAAAAAAAAA/init.mp4").status,
        404
    );
    let prefix = hint.split('/').next().expect("a prefix");
    assert_eq!(
        get(node.http, &format!("/hls/live/x/{prefix}/s01.m4s")).status,
        404
    );

    // ffprobe reads it; ffmpeg copies 6 s of it with no timestamp warnings.
    let url = format!("http://{}{index}", node.http);
    let probe = output_with_deadline(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name",
                "-of",
                "csv=p=0",
            ])
            .arg(&url),
        Duration::from_secs(60),
    );
    let streams = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(
        streams.contains("h264") && streams.contains("aac"),
        "{streams}"
    );
    let out = dir.path().join("out.mp4");
    let copy = output_with_deadline(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "warning", "-y", "-i"])
            .arg(&url)
            .args(["-c", "copy", "-t", "6", "-f", "mp4"])
            .arg(&out),
        Duration::from_secs(60),
    );
    let warnings = String::from_utf8_lossy(&copy.stderr);
    assert!(copy.status.success(), "ffmpeg: {warnings}");
    for bad in ["imestamp", "DTS", "monoton"] {
        assert!(!warnings.contains(bad), "ffmpeg warned: {warnings}");
    }
    let length = output_with_deadline(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
            ])
            .arg(&out),
        Duration::from_secs(30),
    );
    let seconds: f64 = String::from_utf8_lossy(&length.stdout)
        .trim()
        .parse()
        .expect("a duration");
    assert!((5.0..=7.0).contains(&seconds), "copied {seconds} s");
    stop(publisher);
}

/// Every media name (init, segments, parts) a playlist lists or hints, with its prefix.
fn media_names(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter_map(|l| {
            if l.starts_with('#') {
                l.find("URI=\"")
                    .map(|_| uri_of(l, l.split(':').next().unwrap_or(l)))
            } else {
                (!l.is_empty()).then(|| l.to_owned())
            }
        })
        .collect()
}

#[test]
fn a_publisher_restart_changes_the_prefix_and_reuses_no_name() {
    let (node, _dir) = node();
    let index = "/hls/live/again/index.m3u8";
    let source = shared_flv(40);
    let first = publish(&source, &node.url("live/again"));
    let first_playlist = live_playlist(&node, index, 2);
    let before = uri_of(&first_playlist, "#EXT-X-MAP");
    stop(first);
    wait_for(Duration::from_secs(10), || {
        (get(node.http, index).status == 404).then_some(())
    })
    .expect("the playlist goes once the publisher left");
    let second = publish(&source, &node.url("live/again"));
    // A player that reloads recovers: the playlist is back, under a new prefix.
    let second_playlist = live_playlist(&node, index, 2);
    let after = uri_of(&second_playlist, "#EXT-X-MAP");
    assert_ne!(before, after, "a new publish, a new prefix");
    let prefix = |uri: &str| uri.split('/').next().expect("a prefix").to_owned();
    let (old_prefix, new_prefix) = (prefix(&before), prefix(&after));
    let (old_names, new_names) = (media_names(&first_playlist), media_names(&second_playlist));
    assert!(old_names.len() > 3 && new_names.len() > 3);
    for name in &old_names {
        assert!(name.starts_with(&format!("{old_prefix}/")), "{name}");
    }
    for name in &new_names {
        assert!(name.starts_with(&format!("{new_prefix}/")), "{name}");
        assert!(
            !old_names.contains(name),
            "{name} named two publishes' media"
        );
    }
    assert_eq!(
        get(node.http, &format!("/hls/live/again/{before}")).status,
        404
    );
    assert_eq!(
        get(node.http, &format!("/hls/live/again/{after}")).status,
        200
    );
    // The new publish's media plays: its first listed segment is served.
    let segment = new_names
        .iter()
        .find(|n| n.ends_with(".m4s") && n.contains("/s"))
        .expect("a segment listed");
    assert_eq!(
        get(node.http, &format!("/hls/live/again/{segment}")).status,
        200
    );
    stop(second);
}

/// A finished segment is served whole from its memfd, with `sendfile` (`hls.sendfile`, on by
/// default), and is byte for byte its parts, with the media headers.
#[test]
fn a_segment_is_its_parts_byte_for_byte_and_sent_whole() {
    segment_is_its_parts("", true);
}

/// The same with `hls.sendfile = false`: no memfd, the parts' bytes copied.
#[test]
fn without_sendfile_a_segment_is_still_its_parts() {
    segment_is_its_parts("[hls]\nsendfile = false\n", false);
}

fn segment_is_its_parts(config: &str, in_memfds: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, config, dir.path());
    // Noise keeps segments well over what is sent with sendfile (64 KiB).
    let source = support::media::noise_flv(dir.path(), "noise.flv", 20, 25);
    let publisher = publish(&source, &node.url("live/whole"));
    let playlist = live_playlist(&node, "/hls/live/whole/index.m3u8", 2);
    let segment = playlist
        .lines()
        .rev()
        .find(|l| !l.starts_with('#') && l.contains("/s") && l.ends_with(".m4s"))
        .expect("a segment listed")
        .to_owned();
    let (prefix, name) = segment.split_once('/').expect("prefix/name");
    let msn = &name[1..name.len() - 4];
    let parts: Vec<String> = playlist
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .map(|l| uri_of(l, "#EXT-X-PART:"))
        .filter(|uri| uri.starts_with(&format!("{prefix}/p{msn}.")))
        .collect();
    assert!(
        !parts.is_empty(),
        "segment {msn}'s parts listed in\n{playlist}"
    );
    let mut joined = Vec::new();
    for part in &parts {
        let answer = get(node.http, &format!("/hls/live/whole/{part}"));
        assert_eq!(answer.status, 200, "{part}");
        joined.extend_from_slice(&answer.body);
    }
    let whole = get(node.http, &format!("/hls/live/whole/{segment}"));
    assert_eq!(whole.status, 200, "{segment}");
    assert_eq!(whole.header("content-type"), "video/iso.segment");
    assert_eq!(
        whole.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(whole.header("access-control-allow-origin"), "*");
    assert_eq!(whole.header("content-length"), whole.body.len().to_string());
    assert!(whole.body.len() > 64 * 1024, "{} bytes", whole.body.len());
    assert!(whole.body == joined, "segment {msn} is not its parts");
    // The window's finished segments are held in memfds (one each), not on the heap.
    let memfds = std::fs::read_dir(format!("/proc/{}/fd", node.pid()))
        .expect("the node's descriptors")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("memfd:corecast-media"))
        .count();
    if in_memfds {
        assert!(memfds >= 2, "{memfds} segments in memfds");
    } else {
        assert_eq!(memfds, 0, "hls.sendfile is off");
    }
    stop(publisher);
}

/// `corecast_memory_accounted_bytes` summed over the node's cores.
fn accounted(node: &Node) -> f64 {
    node.http_request("GET", "/metrics", None)
        .1
        .lines()
        .filter(|l| l.starts_with("corecast_memory_accounted_bytes{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// 120 s of noise with a keyframe every 3 s (longer than a 1 s segment target), about
/// 100 MB (some 860 KB a second).
fn long_gop_flv(dir: &std::path::Path) -> std::path::PathBuf {
    support::media::noise_flv(dir, "long-gop.flv", 120, 75)
}

/// `ffmpeg -readrate 8 -i source -c copy -f flv url` in the background.
fn publish_fast(source: &std::path::Path, url: &str) -> Child {
    support::media::publish_paced(source, url, &["-readrate", "8"])
}

#[test]
fn hls_windows_count_in_the_budget_and_a_full_core_refuses_new_publishers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = long_gop_flv(dir.path());
    // One core with the smallest budget (16 MiB); a window of 10 + 3 segments of 3 s holds
    // some 33 MB of this stream.
    let node = Node::start(
        1,
        "[node]\nmemory_budget_bytes = 16777216\n\
         [hls]\nwindow_segments = 10\nsegment_target_ms = 1000\npart_target_ms = 250\n",
        dir.path(),
    );
    let mut publisher = publish_fast(&source, &node.url("live/big"));
    wait_for(Duration::from_secs(60), || {
        (accounted(&node) > 16_777_216.0).then_some(())
    })
    .expect("the window fills the core's budget");
    // The publisher already in goes on; a new connection is refused, cleanly.
    assert!(
        support::client::RtmpClient::connect(node.addr, "live").is_err(),
        "a new publisher is refused on a core over its budget"
    );
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("connection refused") && l.contains("memory budget")
    })
    .expect("the refusal is logged");
    let metrics = node.http_request("GET", "/metrics", None).1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("corecast_connections_refused_total{")
                && l.contains("reason=\"memory_budget\"")
                && !l.ends_with(" 0")),
        "the refusal is counted"
    );
    assert_eq!(get(node.http, "/hls/live/big/index.m3u8").status, 200);
    // The stream gone, its window is released and the core admits again.
    assert!(
        support::media::wait_exit(&mut publisher, Duration::from_secs(60)).is_some(),
        "the publish ends"
    );
    wait_for(Duration::from_secs(10), || {
        (accounted(&node) < 1e6).then_some(())
    })
    .expect("the window is released");
    support::client::RtmpClient::connect(node.addr, "live").expect("admitted again");
}

#[test]
fn a_long_gop_stream_keeps_hls_memory_within_its_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Far more than a window of 3 listed + 2 retired + 1 current 3-s segments.
    let source = long_gop_flv(dir.path());
    let size = std::fs::metadata(&source).expect("source").len() as f64;
    let seconds_of_media = 120.0;
    let node = Node::start(
        1,
        "[hls]\nwindow_segments = 3\nsegment_target_ms = 1000\npart_target_ms = 250\n",
        dir.path(),
    );
    // Warm up, so first-use costs are not counted.
    let warm = publish(&shared_flv(12), &node.url("live/warm"));
    live_playlist(&node, "/hls/live/warm/index.m3u8", 1);
    stop(warm);
    wait_for(Duration::from_secs(10), || {
        (accounted(&node) < 1e6).then_some(())
    })
    .expect("the warm-up's window is released");
    let before_kib = support::rss::rss_kib(node.pid());

    // Eight times real time: 15 s.
    let mut publisher = publish_fast(&source, &node.url("live/long"));
    let (mut peak_accounted, mut peak_kib) = (0.0f64, before_kib);
    let deadline = Instant::now() + Duration::from_secs(90);
    while publisher.try_wait().expect("publisher status").is_none() {
        assert!(Instant::now() < deadline, "the publish never ended");
        peak_accounted = peak_accounted.max(accounted(&node));
        peak_kib = peak_kib.max(support::rss::rss_kib(node.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The window is what HLS holds: 6 segments of 3 s at this stream's rate, plus parts and
    // framing. Stated bound: 8 GOPs' worth.
    let window_bound = size / seconds_of_media * 3.0 * 8.0;
    eprintln!(
        "{size} B source: accounted peak {peak_accounted} B (bound {window_bound}), RSS +{} KiB",
        peak_kib - before_kib
    );
    assert!(
        peak_accounted > size / seconds_of_media * 3.0,
        "the muxer's window (at least one GOP) is accounted: {peak_accounted}"
    );
    assert!(
        peak_accounted < window_bound,
        "accounted {peak_accounted} B, over the window's {window_bound} B"
    );
    // Had the muxer kept the stream, the node would have grown by all of it.
    let grown = (peak_kib - before_kib) as f64 * 1024.0;
    assert!(
        grown < size / 2.0,
        "RSS grew by {grown} B for a {size} B stream"
    );
    // The window is released with the stream.
    wait_for(Duration::from_secs(10), || {
        (accounted(&node) < 1e6).then_some(())
    })
    .expect("the window is released when the stream ends");
    kill_and_reap(&mut publisher);
}

#[test]
fn an_edge_pulls_a_stream_for_its_hls_viewers_and_serves_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (origin, pull) = pull_origin(2, "", dir.path());
    let edge_dir = tempfile::tempdir().expect("temp dir");
    let edge = Node::start(2, &fast_edge_config(&pull), edge_dir.path());
    // Before the publish: the request is held (3 s) while the edge asks upstream, then 404;
    // requests after the publish get the stream.
    let started = Instant::now();
    assert_eq!(get(edge.http, "/hls/live/far/index.m3u8").status, 404);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "held past the hold"
    );
    let publisher = publish(&shared_flv(40), &origin.url("live/far"));
    // No RTMP player: the HLS requests alone make the edge pull the stream.
    let playlist = live_playlist(&edge, "/hls/live/far/index.m3u8", 2);
    assert!(playlist.contains("#EXT-X-PRELOAD-HINT"), "{playlist}");
    let init = get(
        edge.http,
        &format!("/hls/live/far/{}", uri_of(&playlist, "#EXT-X-MAP")),
    );
    assert_eq!(init.status, 200);
    let segment = playlist
        .lines()
        .rev()
        .find(|l| l.ends_with(".m4s") && !l.starts_with('#'))
        .expect("a segment");
    assert_eq!(
        get(edge.http, &format!("/hls/live/far/{segment}")).status,
        200
    );
    // The origin's own muxer is another publish with its own prefix.
    let origin_playlist = live_playlist(&origin, "/hls/live/far/index.m3u8", 1);
    assert_ne!(
        uri_of(&origin_playlist, "#EXT-X-MAP"),
        uri_of(&playlist, "#EXT-X-MAP")
    );
    stop(publisher);
}

#[test]
fn check_refuses_a_bad_hls_section() {
    check_refuses("[hls]\npart_target_ms = 50\n", &["hls.part_target_ms"]);
    // A window longer than ten minutes (every stream holds its window in memory).
    check_refuses(
        "[hls]\nwindow_segments = 400\n",
        &["hls.window_segments", "600 s"],
    );
    let (code, err) = check_config("[hls]\nenabled = false\nwindow_segments = 10\n");
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn hls_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[hls]\nenabled = false\n", dir.path());
    let publisher = publish(&shared_flv(40), &node.url("live/off"));
    wait_for(Duration::from_secs(15), || {
        let (status, body) = node.http_request("GET", "/api/v1/streams", None);
        (status == 200 && body.contains("\"off\"")).then_some(())
    })
    .expect("the stream goes live");
    assert_eq!(get(node.http, "/hls/live/off/index.m3u8").status, 404);
    stop(publisher);
}

#[test]
fn play_tokens_guard_the_playlists_not_the_media() {
    const SECRET: &str = "k1-secret-for-the-hls-tests-00001";
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "[auth]\n[[auth.apps]]\nname = \"live\"\npublish = \"open\"\nplay = \"token\"\n[[auth.keys]]\nid = \"k1\"\nsecret = \"{SECRET}\"\nstate = \"active\"\n"
    );
    let node = Node::start(2, &config, dir.path());
    let publisher = publish(&shared_flv(40), &node.url("live/paid"));
    let token = play_token(SECRET, "paid");
    let index = format!("/hls/live/paid/index.m3u8?token={token}");
    let playlist = live_playlist(&node, &index, 1);
    for refused in [
        "/hls/live/paid/index.m3u8".to_owned(),
        "/hls/live/paid/plain.m3u8?token=forged".to_owned(),
        format!(
            "/hls/live/paid/master.m3u8?token={}",
            play_token(SECRET, "other")
        ),
        format!(
            "/hls/live/paid/index.m3u8?token={}",
            play_token("another-secret-entirely-000000000", "paid")
        ),
    ] {
        let answer = get(node.http, &refused);
        assert_eq!(answer.status, 403, "{refused}: {}", answer.text());
        assert!(!answer.text().contains(&token));
    }
    let master = get(
        node.http,
        &format!("/hls/live/paid/master.m3u8?token={token}"),
    )
    .text();
    assert!(
        master.contains(&format!("\nindex.m3u8?token={token}\n")),
        "{master}"
    );
    // With the token, blocking directives work as before; media needs no token.
    let (msn, part) = last_part(&playlist);
    let blocked = get(
        node.http,
        &format!("{index}&_HLS_msn={msn}&_HLS_part={part}"),
    );
    assert_eq!(blocked.status, 200);
    let init = format!("/hls/live/paid/{}", uri_of(&playlist, "#EXT-X-MAP"));
    assert_eq!(get(node.http, &init).status, 200);
    stop(publisher);
}

/// The NAL units of an Annex B byte stream (start codes removed).
fn annexb_nals(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).map_or(stream.len(), |next| next - 3);
            // A four-byte start code leaves a zero at the end of the previous unit.
            let mut nal = &stream[start..end];
            while nal.last() == Some(&0) {
                nal = &nal[..nal.len() - 1];
            }
            nal
        })
        .collect()
}

/// An HEVC NAL unit's type.
fn hevc_type(nal: &[u8]) -> u8 {
    (nal[0] >> 1) & 0x3F
}

/// The `hvcC` record (ISO/IEC 14496-15 8.3.3) of an 8-bit 4:2:0 stream from its parameter
/// sets: the profile, tier and level are the SPS's `profile_tier_level` bytes.
fn hvcc(vps: &[u8], sps: &[u8], pps: &[u8]) -> Vec<u8> {
    // The SPS without emulation-prevention bytes: 2 header bytes, 1 byte of ids, then the
    // 12 bytes of general profile, tier, flags and level.
    let mut rbsp = Vec::new();
    for &b in sps {
        if b == 3 && rbsp.ends_with(&[0, 0]) {
            continue;
        }
        rbsp.push(b);
    }
    let mut record = vec![1];
    record.extend_from_slice(&rbsp[3..15]);
    record.extend_from_slice(&[0xF0, 0x00, 0xFC, 0xFD, 0xF8, 0xF8, 0x00, 0x00, 0x0F, 3]);
    for nal in [vps, sps, pps] {
        record.push(0x80 | hevc_type(nal));
        record.extend_from_slice(&1u16.to_be_bytes());
        record.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        record.extend_from_slice(nal);
    }
    record
}

/// An Enhanced RTMP video message body: frame type, packet type, FourCC, data.
fn enhanced_video(fourcc: &[u8; 4], keyframe: bool, packet_type: u8, data: &[u8]) -> Vec<u8> {
    let frame_type = if keyframe { 1 } else { 2 };
    let mut body = vec![0x80 | (frame_type << 4) | packet_type];
    body.extend_from_slice(fourcc);
    body.extend_from_slice(data);
    body
}

/// Asserts that `live/{stream}` is served as HLS in the codec published: its multivariant
/// playlist names `codecs` (a prefix of the `CODECS` value) with a measured bit rate, its
/// media playlist lists 3 segments, and ffprobe reads `codec` tagged `tag` from it.
fn served_as(node: &Node, stream: &str, codecs: &str, codec: &str, tag: &str) {
    let master = wait_for(Duration::from_secs(20), || {
        let answer = get(node.http, &format!("/hls/live/{stream}/master.m3u8"));
        (answer.status == 200).then(|| answer.text())
    })
    .expect("the multivariant playlist");
    assert!(master.contains(&format!("CODECS=\"{codecs}")), "{master}");
    assert!(
        !master.contains("BANDWIDTH=1,"),
        "a measured bit rate: {master}"
    );
    live_playlist(node, &format!("/hls/live/{stream}/index.m3u8"), 3);
    let probe = output_with_deadline(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,codec_tag_string",
            ])
            .args(["-of", "csv=p=0"])
            .arg(format!("http://{}/hls/live/{stream}/index.m3u8", node.http)),
        Duration::from_secs(60),
    );
    let streams = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success() && streams.contains(codec) && streams.contains(tag),
        "ffprobe: {streams} {}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

/// 12 s of ffmpeg's test pattern (320x240, 25 fps, yuv420p) encoded with `codec` and
/// `params` into a raw `format` file named `name` under `dir`; its bytes.
fn encode_test_pattern(
    dir: &std::path::Path,
    name: &str,
    codec: &[&str],
    params: &[&str],
    format: &str,
) -> Vec<u8> {
    let raw = dir.join(name);
    let format = ["-pix_fmt", "yuv420p", "-f", format];
    support::media::encode_lavfi(
        "testsrc=size=320x240:rate=25",
        12,
        &[codec, params, &format[..]].concat(),
        &raw,
    );
    std::fs::read(&raw).expect("the encoded stream")
}

#[test]
fn hevc_over_enhanced_rtmp_is_served_as_hvc1() {
    use corecast_common::types::MessageType;
    let dir = tempfile::tempdir().expect("temp dir");
    // 12 s of HEVC at 25 fps, a keyframe a second, no B-frames (PTS = DTS).
    let stream = encode_test_pattern(
        dir.path(),
        "x.hevc",
        &["-c:v", "libx265", "-preset", "ultrafast"],
        &[
            "-x265-params",
            "log-level=error:bframes=0:keyint=25:min-keyint=25",
        ],
        "hevc",
    );
    let nals = annexb_nals(&stream);
    let find = |t: u8| {
        *nals
            .iter()
            .find(|n| hevc_type(n) == t)
            .expect("a parameter set")
    };
    let record = hvcc(find(32), find(33), find(34));

    let (node, _dir) = node();
    let mut client = support::client::RtmpClient::connect(node.addr, "live").expect("connect");
    let status = client.publish("hevc").expect("publish");
    assert_eq!(status, "NetStream.Publish.Start");
    // SequenceStart, then each picture as CodedFramesX (no composition time): its slice NAL
    // units, four-byte length-prefixed (parameter sets and SEI stay out: hvc1).
    client
        .send_media(
            MessageType::VIDEO,
            0,
            &enhanced_video(b"hvc1", true, 0, &record),
        )
        .expect("sequence start");
    let mut frames = 0u32;
    for nal in nals.iter().filter(|n| hevc_type(n) < 32) {
        let mut sample = (nal.len() as u32).to_be_bytes().to_vec();
        sample.extend_from_slice(nal);
        let keyframe = (16..=21).contains(&hevc_type(nal));
        client
            .send_media(
                MessageType::VIDEO,
                frames * 40,
                &enhanced_video(b"hvc1", keyframe, 3, &sample),
            )
            .expect("a frame");
        frames += 1;
    }
    assert!(frames >= 290, "{frames} pictures");

    // The stream stays published (the client is connected) while it is read.
    served_as(&node, "hevc", "hvc1.", "hevc", "hvc1");
    drop(client);
}

/// One OBU of a low-overhead AV1 stream: (type, the whole OBU, its payload).
fn next_obu(stream: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let header = *stream.first()?;
    let kind = (header >> 3) & 0x0F;
    assert!(
        header & 0x02 != 0,
        "OBUs carry their size (ffmpeg's obu muxer)"
    );
    let mut at = 1 + usize::from(header & 0x04 != 0);
    let (mut size, mut shift) = (0usize, 0);
    loop {
        let byte = *stream.get(at)?;
        at += 1;
        size |= usize::from(byte & 0x7F) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let end = at + size;
    Some((kind, stream.get(..end)?, stream.get(at..end)?))
}

/// The `av1C` record (AV1-ISOBMFF 2.3) of an 8-bit 4:2:0 stream from its sequence header
/// OBU: profile, first operating point's level and tier, then the OBU itself.
fn av1c(sequence_header: &[u8], payload: &[u8]) -> Vec<u8> {
    let bit = |n: usize| (payload[n / 8] >> (7 - n % 8)) & 1;
    let bits = |from: usize, count: usize| (from..from + count).fold(0u8, |v, n| (v << 1) | bit(n));
    let profile = bits(0, 3);
    let reduced = bit(4) == 1;
    let (level, tier) = if reduced {
        (bits(5, 5), 0)
    } else {
        assert_eq!(
            bits(5, 2),
            0,
            "no timing info or display delay (SVT-AV1's defaults)"
        );
        // operating_points_cnt_minus_1 (5), then the first point's idc (12) and level (5).
        let level = bits(7 + 5 + 12, 5);
        let tier = if level > 7 { bit(7 + 5 + 12 + 5) } else { 0 };
        (level, tier)
    };
    let mut record = vec![0x81, (profile << 5) | level, (tier << 7) | 0x0C, 0];
    record.extend_from_slice(sequence_header);
    record
}

#[test]
fn av1_over_enhanced_rtmp_is_served_as_av01() {
    use corecast_common::types::MessageType;
    let dir = tempfile::tempdir().expect("temp dir");
    // 12 s of AV1 at 25 fps from SVT-AV1 (fast enough for a test), a keyframe a second.
    let stream = encode_test_pattern(
        dir.path(),
        "x.obu",
        &["-c:v", "libsvtav1", "-preset", "12", "-g", "25"],
        &["-svtav1-params", "keyint=25"],
        "obu",
    );
    // Temporal units: the OBUs between temporal delimiters (type 2), delimiters dropped.
    let mut units: Vec<Vec<u8>> = Vec::new();
    let mut record = None;
    let mut rest = &stream[..];
    while let Some((kind, obu, payload)) = next_obu(rest) {
        rest = &rest[obu.len()..];
        match kind {
            2 => units.push(Vec::new()),
            _ => {
                if kind == 1 && record.is_none() {
                    record = Some(av1c(obu, payload));
                }
                units
                    .last_mut()
                    .expect("a temporal delimiter first")
                    .extend_from_slice(obu);
            }
        }
    }
    assert!(rest.is_empty(), "the whole stream is OBUs");
    let record = record.expect("a sequence header");
    // A key frame: its unit's first frame (header) OBU has show_existing_frame = 0 and
    // frame_type = KEY_FRAME (0).
    let is_key = |unit: &[u8]| {
        let mut rest = unit;
        while let Some((kind, obu, payload)) = next_obu(rest) {
            if kind == 3 || kind == 6 {
                return payload[0] & 0xE0 == 0;
            }
            rest = &rest[obu.len()..];
        }
        false
    };

    let (node, _dir) = node();
    let mut client = support::client::RtmpClient::connect(node.addr, "live").expect("connect");
    let status = client.publish("av1").expect("publish");
    assert_eq!(status, "NetStream.Publish.Start");
    client
        .send_media(
            MessageType::VIDEO,
            0,
            &enhanced_video(b"av01", true, 0, &record),
        )
        .expect("sequence start");
    for (n, unit) in units.iter().enumerate() {
        let body = enhanced_video(b"av01", is_key(unit), 1, unit);
        client
            .send_media(MessageType::VIDEO, n as u32 * 40, &body)
            .expect("a frame");
    }
    assert!(units.len() >= 290, "{} temporal units", units.len());
    assert!(
        units.iter().filter(|u| is_key(u)).count() >= 10,
        "a keyframe a second"
    );

    served_as(&node, "av1", "av01.0.", "av1", "av01");
    drop(client);
}

#[test]
fn an_edge_core_over_its_budget_starts_no_muxer_and_the_stream_still_flows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = long_gop_flv(dir.path());
    let (origin, pull) = pull_origin(1, "[hls]\nenabled = false\n", dir.path());
    // One core with the smallest budget; a window of 10 + 3 three-second segments of the
    // long-GOP stream holds about twice that.
    let edge_dir = tempfile::tempdir().expect("temp dir");
    let edge = Node::start(
        1,
        &format!(
            "[node]\nmemory_budget_bytes = 16777216\n{}\
             [hls]\nwindow_segments = 10\nsegment_target_ms = 1000\npart_target_ms = 250\n",
            fast_edge_config(&pull)
        ),
        edge_dir.path(),
    );
    let mut big = publish_fast(&source, &origin.url("live/big"));
    let small = publish(&shared_flv(40), &origin.url("live/small"));
    // HLS requests make the edge pull the big stream; its window fills the edge's budget.
    wait_for(Duration::from_secs(60), || {
        let _ = get(edge.http, "/hls/live/big/index.m3u8");
        (accounted(&edge) > 16_777_216.0).then_some(())
    })
    .expect("the big stream's window fills the edge's budget");
    // The small stream is pulled, but gets no muxer: its HLS is 404 within the hold ...
    assert_eq!(get(edge.http, "/hls/live/small/index.m3u8").status, 404);
    edge.wait_log(Duration::from_secs(10), |l| {
        l.contains("hls muxer not started") && l.contains("live/small")
    })
    .expect("the refused muxer is logged");
    let metrics = edge.http_request("GET", "/metrics", None).1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("corecast_errors_total{")
                && l.contains("kind=\"hls_over_budget\"")
                && !l.ends_with(" 0")),
        "the refused muxer is counted"
    );
    // ... while it plays over HTTP-FLV, and the big stream's HLS goes on.
    let flv = output_with_deadline(
        Command::new("curl")
            .args(["-sS", "--max-time", "3"])
            .arg(format!("http://{}/live/small.flv", edge.http)),
        Duration::from_secs(20),
    );
    assert!(
        flv.stdout.len() > 10_000 && flv.stdout.starts_with(b"FLV"),
        "{} FLV bytes",
        flv.stdout.len()
    );
    assert_eq!(get(edge.http, "/hls/live/big/index.m3u8").status, 200);
    kill_and_reap(&mut big);
    stop(small);
}

/// One keep-alive response read from `stream` in reads of at most 16 KiB, pausing `pause`
/// after the first (a viewer that stalls: the node's socket fills): (status, body).
fn slow_response(
    stream: &mut std::net::TcpStream,
    buf: &mut Vec<u8>,
    mut pause: Duration,
) -> (u16, Vec<u8>) {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = parsed.parse(buf) {
            let length: usize = parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .expect("a Content-Length");
            if buf.len() >= head + length {
                let status = parsed.code.unwrap_or(0);
                let body = buf[head..head + length].to_vec();
                buf.drain(..head + length);
                return (status, body);
            }
        }
        assert!(Instant::now() < deadline, "no whole response within 20 s");
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the node closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        std::thread::sleep(std::mem::take(&mut pause));
    }
}

#[test]
fn a_busy_core_serves_whole_segments_to_slow_viewers_through_its_read_hub() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[http]\nread_batch_ms = 10\n", dir.path());
    // 6 s segments of ~860 KB a second: more than a socket's send buffer grows to (4 MiB),
    // so a viewer that stalls makes the node's sendfile find the socket full.
    let source = support::media::noise_flv(dir.path(), "noise.flv", 40, 150);
    let publisher = publish(&source, &node.url("live/busy"));
    let playlist = live_playlist(&node, "/hls/live/busy/index.m3u8", 2);
    let segment = playlist
        .lines()
        .find(|l| !l.starts_with('#') && l.ends_with(".m4s"))
        .map(|l| format!("/hls/live/busy/{l}"))
        .expect("a segment listed");
    let whole = get(node.http, &segment);
    assert_eq!(whole.status, 200);
    assert!(whole.body.len() > 4 << 20, "{} bytes", whole.body.len());

    // 16 keep-alive viewers asking for the playlist over and over (hundreds of requests a
    // second: the core is busy) and for the segment every fourth time, stalling for a moment
    // behind a small receive buffer so that the node's sends find the socket full.
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .expect("socket");
                socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
                socket
                    .connect_timeout(&node.http.into(), Duration::from_secs(5))
                    .expect("connect");
                let mut stream: std::net::TcpStream = socket.into();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut buf = Vec::new();
                let end = Instant::now() + Duration::from_secs(4);
                let mut round = 0;
                while Instant::now() < end {
                    round += 1;
                    let (path, pause) = if round % 4 == 0 {
                        (segment.as_str(), Duration::from_millis(50))
                    } else {
                        ("/hls/live/busy/index.m3u8", Duration::ZERO)
                    };
                    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
                    std::io::Write::write_all(&mut stream, request.as_bytes()).expect("write");
                    let (status, body) = slow_response(&mut stream, &mut buf, pause);
                    assert_eq!(status, 200, "{path}");
                    if round % 4 == 0 {
                        assert!(body == whole.body, "the segment came back different");
                    }
                }
            });
        }
    });
    let reads = node.metric_sum("corecast_http_read_batch_wakeups_total");
    let writes = node.metric_sum("corecast_http_read_batch_write_wakeups_total");
    assert!(reads > 0.0, "no read was woken by the hub");
    assert!(
        writes > 0.0,
        "no segment write waited in the hub ({reads} reads did)\n{}",
        node.metrics()
            .lines()
            .filter(|l| l.contains("read_batch") || l.contains("sent_bytes"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    stop(publisher);
}

/// Sends `requests` (method, path) on one keep-alive connection, all in one write (pipelined),
/// and reads their answers: (head without its `date` line, body).
fn keep_alive(node: &Node, requests: &[(&str, String)]) -> Vec<(String, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut stream = support::process::connect(node.http).expect("connect");
    let text: String = requests
        .iter()
        .map(|(method, path)| format!("{method} {path} HTTP/1.1\r\nHost: t\r\nAccept: */*\r\n\r\n"))
        .collect();
    stream.write_all(text.as_bytes()).expect("write");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut buf, mut answers) = (Vec::new(), Vec::new());
    for (method, path) in requests {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = parsed.parse(&buf) {
                let length: usize = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .expect("a Content-Length");
                let length = if *method == "HEAD" { 0 } else { length };
                if buf.len() >= head + length {
                    let text = String::from_utf8_lossy(&buf[..head]).into_owned();
                    let date = text.lines().find(|l| l.starts_with("date: "));
                    let date = date.unwrap_or_else(|| panic!("no date in {text}"));
                    assert!(date.ends_with(" GMT") && date.len() == 35, "{date}");
                    let without = text.replace(&format!("{date}\r\n"), "");
                    answers.push((without, buf[head..head + length].to_vec()));
                    buf.drain(..head + length);
                    break;
                }
            }
            assert!(Instant::now() < deadline, "no answer to {method} {path}");
            let mut chunk = [0u8; 64 * 1024];
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "closed before the answer to {method} {path}");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    answers
}

/// The plain-HTTP fast lane answers segments, parts, the init segment and the plain playlist
/// with the same bytes, head and body, as hyper's route does; what it does not take (a 404,
/// another path) goes to hyper with the connection, pipelined requests in order.
#[test]
fn the_fast_lane_answers_plain_hls_as_hyper_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, "", dir.path());
    let source = support::media::noise_flv(dir.path(), "noise.flv", 20, 25);
    let publisher = publish(&source, &node.url("live/lane"));
    let ll = live_playlist(&node, "/hls/live/lane/index.m3u8", 2);
    let base = "/hls/live/lane";
    let init = format!("{base}/{}", uri_of(&ll, "#EXT-X-MAP:"));
    let segment = ll
        .lines()
        .find(|l| !l.starts_with('#') && l.ends_with(".m4s"))
        .map(|l| format!("{base}/{l}"))
        .expect("a segment listed");
    let part = format!("{base}/{}", uri_of(&ll, "#EXT-X-PART:"));
    let missing = segment.replace("/s", "/s99999");
    let media = [
        ("GET", init),
        ("GET", segment.clone()),
        ("HEAD", segment),
        ("GET", part),
    ];
    let lane_before = node.metric_sum("corecast_http_lane_requests_total");
    // Through the lane: the media, then the playlist, then a 404 that hands over.
    let mut requests = media.to_vec();
    requests.push(("GET", format!("{base}/plain.m3u8")));
    requests.push(("GET", missing.clone()));
    let lane = keep_alive(&node, &requests);
    // Through hyper: a request the lane does not take first.
    let mut requests = vec![("GET", "/healthz".to_owned())];
    requests.extend(media.iter().cloned());
    requests.push(("GET", format!("{base}/plain.m3u8")));
    requests.push(("GET", missing));
    let hyper = keep_alive(&node, &requests);
    let answered = node.metric_sum("corecast_http_lane_requests_total") - lane_before;
    assert!(answered >= 5.0, "the lane answered {answered} requests");
    for (i, (method, path)) in media.iter().enumerate() {
        assert_eq!(lane[i].0, hyper[i + 1].0, "{method} {path}: heads differ");
        assert!(
            lane[i].1 == hyper[i + 1].1,
            "{method} {path}: bodies differ"
        );
        assert!(
            lane[i].0.starts_with("HTTP/1.1 200 OK\r\n"),
            "{}",
            lane[i].0
        );
    }
    assert!(media[1].1.ends_with(".m4s") && lane[1].1.len() > 64 * 1024);
    assert_eq!(lane[2].1.len(), 0, "HEAD has no body");
    // The playlist may have moved on between the two: the same head but for its length.
    let strip = |head: &str| -> String {
        head.lines()
            .filter(|l| !l.starts_with("content-length"))
            .collect()
    };
    assert_eq!(strip(&lane[4].0), strip(&hyper[5].0));
    assert!(lane[4].1.starts_with(b"#EXTM3U"));
    assert_eq!(lane[5], hyper[6], "the 404 is hyper's");
    assert!(lane[5].0.starts_with("HTTP/1.1 404"), "{}", lane[5].0);
    stop(publisher);
}
