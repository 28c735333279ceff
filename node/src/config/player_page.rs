//! `[player_page]`: the browser player page at `/play/{app}/{name}` on `http.listen`
//! (see [`crate::player`]), and where the players' JavaScript (hls.js, mpegts.js, installed
//! from npm into `player/node_modules`) is read from.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[player_page]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlayerPageConfig {
    /// Serve the page and its scripts.
    pub enabled: bool,
    /// The `node_modules` folder holding `hls.js/` and `mpegts.js/`. Empty: `player/node_modules`
    /// under the working directory, else under the repository the binary was built from.
    pub assets_dir: String,
}

impl Default for PlayerPageConfig {
    fn default() -> Self {
        PlayerPageConfig {
            enabled: true,
            assets_dir: String::new(),
        }
    }
}

impl PlayerPageConfig {
    /// The folder the scripts are read from: `assets_dir` as given (relative to the working
    /// directory), or when empty the first of the default places that exists (the first one
    /// when none does, so that a message can name it).
    pub fn resolved_dir(&self) -> PathBuf {
        if !self.assets_dir.is_empty() {
            return PathBuf::from(&self.assets_dir);
        }
        let candidates = default_dirs();
        candidates
            .iter()
            .find(|dir| dir.is_dir())
            .unwrap_or(&candidates[0])
            .clone()
    }
}

/// Where `npm ci --prefix player` puts the scripts: under the working directory (`make run`
/// starts the node in the repository), then under the repository this binary was built in
/// (a node started from elsewhere on the build machine, the tests).
fn default_dirs() -> [PathBuf; 2] {
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../player/node_modules");
    [PathBuf::from("player/node_modules"), built_in]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_folder_is_used_as_given_and_an_empty_one_falls_back_to_a_default() {
        let given = PlayerPageConfig {
            assets_dir: "/srv/js".to_owned(),
            ..PlayerPageConfig::default()
        };
        assert_eq!(given.resolved_dir(), PathBuf::from("/srv/js"));
        let resolved = PlayerPageConfig::default().resolved_dir();
        assert!(resolved.ends_with("player/node_modules"), "{resolved:?}");
    }
}
