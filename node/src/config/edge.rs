//! Validation of the limits that keep one client (or one edge's players) from costing the
//! node more than a bounded share: the pull listener's own connection cap, an edge's
//! concurrent pulls, streams per node and per address; and the pull port's token.
//!
//! Kept apart from `config.rs`'s `validate` so the checks of one concern read together. The
//! token check is a step of its own ([`Config::check_pull_token`]): a file may leave the
//! token to what is applied after it is parsed (the environment, in a deployment), so it is
//! checked once everything has been applied, not when the file is read.

use super::{Config, ConfigError};

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl Config {
    /// Refuses a `cluster.pull_listen` that is not a loopback address while `cluster.token`
    /// is empty: anyone who reached the port could pull every stream. Call it on the config
    /// in force (file, command line and environment applied); `corecast --check` does.
    pub fn check_pull_token(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        let Some(pull) = &c.pull_listen.0 else {
            return Ok(());
        };
        let open = pull.addrs().iter().find(|a| !a.ip().is_loopback());
        match (open, c.token.is_empty()) {
            (Some(addr), true) => Err(invalid(
                "cluster.token",
                format!(
                    "must be set when cluster.pull_listen ({addr}) is not a loopback address: \
                     anyone who reaches the port could pull every stream"
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Refuses limits that cannot work.
pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    let c = &config.cluster;
    if c.max_pull_connections_per_core == 0 {
        return Err(invalid(
            "cluster.max_pull_connections_per_core",
            "must be at least 1",
        ));
    }
    if c.max_concurrent_pulls == 0 {
        return Err(invalid(
            "cluster.max_concurrent_pulls",
            "must be at least 1",
        ));
    }
    if c.negative_cache_secs > 300 {
        return Err(invalid(
            "cluster.negative_cache_secs",
            "must be at most 300 (a stream published meanwhile would stay unreachable)",
        ));
    }
    let s = &config.stream;
    if s.max_streams_per_node == 0 || s.max_streams_per_address == 0 {
        return Err(invalid(
            "stream.max_streams_per_node / stream.max_streams_per_address",
            "must be at least 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml")
    }

    fn token_check(text: &str) -> Result<(), ConfigError> {
        check(text).expect("parses").check_pull_token()
    }

    #[test]
    fn a_public_pull_port_needs_a_token() {
        let open = "[cluster]\npull_listen = \"0.0.0.0:1940\"\n";
        let e = token_check(open).expect_err("no token").to_string();
        assert!(
            e.contains("cluster.token") && e.contains("0.0.0.0:1940"),
            "{e}"
        );
        token_check(&format!("{open}token = \"s3cret\"\n")).expect("a token makes it fine");
        token_check("[cluster]\npull_listen = \"127.0.0.1:1940\"\n").expect("loopback: none");
        token_check("[cluster]\npull_listen = \"\"\n").expect("no pull port: none");
        let e = token_check("[cluster]\npull_listen = \":1940\"\n").expect_err("wildcard");
        assert!(e.to_string().contains("cluster.token"), "{e}");
        // A token applied after the file was read (as the environment does) satisfies it.
        let mut config = check(open).expect("the file alone parses");
        config.cluster.token = "from-the-environment".into();
        config
            .check_pull_token()
            .expect("the token in force counts");
    }

    #[test]
    fn limits_must_allow_something() {
        for (text, field) in [
            (
                "[cluster]\nmax_pull_connections_per_core = 0\n",
                "max_pull_connections_per_core",
            ),
            (
                "[cluster]\nmax_concurrent_pulls = 0\n",
                "max_concurrent_pulls",
            ),
            (
                "[cluster]\nnegative_cache_secs = 3600\n",
                "negative_cache_secs",
            ),
            (
                "[stream]\nmax_streams_per_node = 0\n",
                "max_streams_per_node",
            ),
            (
                "[stream]\nmax_streams_per_address = 0\n",
                "max_streams_per_address",
            ),
        ] {
            let e = check(text).expect_err(text).to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }
}
