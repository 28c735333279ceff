//! The player page's scripts: hls.js and mpegts.js as npm installed them (read from
//! `[player_page] assets_dir`), and the page's own script and style (built into the binary).
//!
//! The npm files are read once, at start ([`preload`]) or by the first request, into `Bytes`
//! every core serves as they are. They are read again when `assets_dir` changes (a reload) and,
//! while they are missing, at most every [`RETRY`] (so `npm ci --prefix player` on a running
//! node is picked up). Each file is served under a name that carries a hash of its content
//! (`?v=`), so it can be cached for a year and an upgrade is still seen at once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::config::PlayerPageConfig;

/// How often missing files are looked for again.
pub const RETRY: Duration = Duration::from_secs(5);

/// The command that installs the npm files (named in every message about them).
pub const INSTALL: &str = "npm ci --prefix player";

/// The files served under `/play/assets/`: (name, path under `assets_dir`, content type).
/// `None` for a path: built into the binary.
const FILES: &[(&str, Option<&str>, &str)] = &[
    (
        "hls.min.js",
        Some("hls.js/dist/hls.min.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "mpegts.js",
        Some("mpegts.js/dist/mpegts.js"),
        "text/javascript; charset=utf-8",
    ),
    ("player.js", None, "text/javascript; charset=utf-8"),
    ("player.css", None, "text/css; charset=utf-8"),
];

const OWN_SCRIPT: &str = include_str!("player.js");
const OWN_STYLE: &str = include_str!("player.css");

/// One file served under `/play/assets/{name}`.
#[derive(Debug, Clone)]
pub struct Asset {
    /// Its name under `/play/assets/`.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: Bytes,
    /// The first 12 hex digits of its SHA-256 (the `?v=` of its URL).
    pub tag: String,
}

impl Asset {
    fn new(name: &'static str, content_type: &'static str, body: Bytes) -> Asset {
        let digest = Sha256::digest(&body);
        let tag = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Asset {
            name,
            content_type,
            body,
            tag,
        }
    }

    /// The URL the page loads it from.
    pub fn url(&self) -> String {
        format!("/play/assets/{}?v={}", self.name, self.tag)
    }
}

/// What one read of `assets_dir` found.
#[derive(Debug)]
pub struct Assets {
    /// `assets_dir` as configured (what a reload compares).
    configured: String,
    /// The folder read.
    pub dir: PathBuf,
    /// Every file, or what was missing (a message for people).
    pub files: Result<Vec<Asset>, String>,
    read_at: Instant,
}

impl Assets {
    /// Reads the npm files from `config`'s folder; the built-in ones always succeed.
    pub fn load(config: &PlayerPageConfig) -> Assets {
        let dir = config.resolved_dir();
        Assets {
            configured: config.assets_dir.clone(),
            files: read_all(&dir),
            dir,
            read_at: Instant::now(),
        }
    }

    /// The file named `name`: `Ok(None)` when no such file is served, `Err` (why) when it
    /// is one of the npm files and they are missing.
    pub fn get(&self, name: &str) -> Result<Option<Asset>, &str> {
        if let Some(own) = own().iter().find(|a| a.name == name) {
            return Ok(Some(own.clone()));
        }
        if !FILES.iter().any(|(n, _, _)| *n == name) {
            return Ok(None);
        }
        match &self.files {
            Ok(files) => Ok(files.iter().find(|a| a.name == name).cloned()),
            Err(why) => Err(why),
        }
    }

    /// The URL of `name` with its `?v=` (the bare path when missing).
    pub fn url(&self, name: &str) -> String {
        match self.get(name) {
            Ok(Some(asset)) => asset.url(),
            _ => format!("/play/assets/{name}"),
        }
    }
}

/// The page's own files, hashed once.
fn own() -> &'static [Asset] {
    static OWN: OnceLock<Vec<Asset>> = OnceLock::new();
    OWN.get_or_init(|| {
        let body = |name: &str| match name {
            "player.js" => OWN_SCRIPT,
            _ => OWN_STYLE,
        };
        FILES
            .iter()
            .filter(|(_, path, _)| path.is_none())
            .map(|(name, _, ty)| Asset::new(name, ty, Bytes::from_static(body(name).as_bytes())))
            .collect()
    })
}

/// Reads every npm file under `dir`, or says which are missing and how to install them.
fn read_all(dir: &Path) -> Result<Vec<Asset>, String> {
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for (name, path, ty) in FILES {
        let Some(path) = path else { continue };
        match std::fs::read(dir.join(path)) {
            Ok(body) => files.push(Asset::new(name, ty, Bytes::from(body))),
            Err(e) => missing.push(format!("{path} ({e})")),
        }
    }
    if missing.is_empty() {
        return Ok(files);
    }
    Err(format!(
        "the player scripts are not installed in {}: missing {}; run `{INSTALL}` in the \
         repository, or set [player_page] assets_dir to a node_modules folder that has them",
        dir.display(),
        missing.join(", ")
    ))
}

/// The files for `config` now: the ones read before, unless `assets_dir` changed since or
/// they were missing [`RETRY`] ago.
pub fn current(config: &PlayerPageConfig) -> Arc<Assets> {
    static CACHE: Mutex<Option<Arc<Assets>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(assets) = cache.as_ref() {
        let fresh = assets.files.is_ok() || assets.read_at.elapsed() < RETRY;
        if assets.configured == config.assets_dir && fresh {
            return Arc::clone(assets);
        }
    }
    let assets = Arc::new(Assets::load(config));
    *cache = Some(Arc::clone(&assets));
    assets
}

/// Reads the files at start, so that no request waits for the disk, and logs what it found:
/// missing files are a warning when `assets_dir` names a folder, and an info line when it is
/// the default (a node run without the page's scripts installed is a choice; the page and
/// `--check` still say what to run).
pub fn preload(config: &PlayerPageConfig) {
    if !config.enabled {
        return;
    }
    let assets = current(config);
    match &assets.files {
        Ok(_) => tracing::info!(dir = %assets.dir.display(), "player page scripts loaded"),
        Err(why) if config.assets_dir.is_empty() => tracing::info!("player page: {why}"),
        Err(why) => tracing::warn!("player page: {why}"),
    }
}

/// `corecast --check`'s warning about the files, if any.
pub fn check(config: &PlayerPageConfig) -> Option<String> {
    if !config.enabled {
        return None;
    }
    read_all(&config.resolved_dir()).err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> PlayerPageConfig {
        PlayerPageConfig {
            enabled: true,
            assets_dir: dir.display().to_string(),
        }
    }

    #[test]
    fn missing_files_are_named_with_the_command_that_installs_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let assets = Assets::load(&config(dir.path()));
        let why = assets.files.as_ref().expect_err("nothing is installed");
        assert!(why.contains("hls.js/dist/hls.min.js"), "{why}");
        assert!(why.contains(INSTALL), "{why}");
        assert!(assets.get("hls.min.js").is_err());
        // The page's own files never go missing.
        assert!(matches!(assets.get("player.js"), Ok(Some(_))));
        assert!(matches!(assets.get("nothing.js"), Ok(None)));
        assert!(check(&config(dir.path())).is_some());
    }

    fn install(dir: &Path) {
        for (path, text) in [
            ("hls.js/dist/hls.min.js", "var Hls;"),
            ("mpegts.js/dist/mpegts.js", "var mpegts;"),
        ] {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(file, text).expect("write");
        }
    }

    #[test]
    fn a_changed_folder_is_read_again() {
        let (empty, full) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        install(full.path());
        assert!(current(&config(empty.path())).files.is_err());
        // Within RETRY the same folder is not read again...
        install(empty.path());
        assert!(current(&config(empty.path())).files.is_err());
        // ...but another folder (a reload that changed assets_dir) is, at once.
        let reloaded = current(&config(full.path()));
        assert!(reloaded.files.is_ok());
        assert!(Arc::ptr_eq(&reloaded, &current(&config(full.path()))));
    }

    #[test]
    fn installed_files_are_served_under_a_name_that_changes_with_their_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        install(dir.path());
        let assets = Assets::load(&config(dir.path()));
        let hls = assets.get("hls.min.js").expect("installed").expect("known");
        assert_eq!(&hls.body[..], b"var Hls;");
        assert_eq!(hls.content_type, "text/javascript; charset=utf-8");
        assert_eq!(hls.tag.len(), 12);
        assert_ne!(assets.url("hls.min.js"), assets.url("mpegts.js"));
        assert!(assets
            .url("hls.min.js")
            .starts_with("/play/assets/hls.min.js?v="));
        assert!(check(&config(dir.path())).is_none());
    }
}
