//! Secrets from the environment: `CORECAST_CLUSTER_TOKEN` and `CORECAST_API_TOKEN` override
//! `cluster.token` and `http.api_token`, so a config file (a Kubernetes ConfigMap, a file under
//! version control) never has to hold them. An empty or unset variable leaves the file's value.

use super::Config;

/// The environment variables that carry secrets, and the field each one sets.
pub const SECRET_VARIABLES: [(&str, &str); 2] = [
    ("CORECAST_CLUSTER_TOKEN", "cluster.token"),
    ("CORECAST_API_TOKEN", "http.api_token"),
];

impl Config {
    /// Applies the secret variables that `lookup` finds set and non-empty (the caller passes
    /// `std::env::var`; tests pass a map). Returns the fields that were set, for the log.
    pub fn apply_secret_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Vec<&'static str> {
        let mut applied = Vec::new();
        for (variable, field) in SECRET_VARIABLES {
            let Some(value) = lookup(variable).filter(|value| !value.is_empty()) else {
                continue;
            };
            match variable {
                "CORECAST_CLUSTER_TOKEN" => self.cluster.token = value,
                _ => self.http.api_token = value,
            }
            applied.push(field);
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn set_variables_override_the_file_and_are_reported() {
        let mut config = Config::default();
        config.cluster.token = "from-file".into();
        let applied = config.apply_secret_env(env(&[
            ("CORECAST_CLUSTER_TOKEN", "cluster-secret"),
            ("CORECAST_API_TOKEN", "api-secret"),
        ]));
        assert_eq!(config.cluster.token, "cluster-secret");
        assert_eq!(config.http.api_token, "api-secret");
        assert_eq!(applied, vec!["cluster.token", "http.api_token"]);
    }

    #[test]
    fn unset_or_empty_variables_leave_the_file_value() {
        let mut config = Config::default();
        config.cluster.token = "from-file".into();
        config.http.api_token = "api-from-file".into();
        let applied = config.apply_secret_env(env(&[("CORECAST_CLUSTER_TOKEN", "")]));
        assert_eq!(config.cluster.token, "from-file");
        assert_eq!(config.http.api_token, "api-from-file");
        assert!(applied.is_empty());
    }
}
