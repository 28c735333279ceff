//! Live reload: on SIGHUP (or `POST /api/v1/reload`) the node reads its config file again,
//! with the command line's overrides and the environment's secrets applied as at start. A
//! file that does not load or check changes nothing; one that changes a setting only a
//! restart can change ([`Config::fixed_changes`]) is refused whole, naming the settings; any
//! other is applied to every core without dropping a connection (each connection keeps the
//! settings it started with where they are per connection, such as its queue limits; new
//! connections get the new ones). Reloads run one at a time, on the reload thread or the
//! API's request, so a storm of signals is a series of reloads, each complete.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::config::{Config, LogFilter};
use crate::shared::{AdminCommand, NodeShared};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new config is running (or was the same as the running one: `changed` false).
    Applied {
        /// Whether anything differed.
        changed: bool,
    },
    /// The new config changes settings only a restart can; nothing changed.
    Refused {
        /// Those settings.
        fields: Vec<&'static str>,
    },
    /// The new config did not load or check; nothing changed.
    Invalid(String),
}

/// Where a reload reads the running config and applies a new one.
pub trait ReloadTarget {
    /// The config the node runs now.
    fn running(&self) -> Arc<Config>;
    /// Puts `next` in force everywhere (cores, log filter, shared state).
    fn apply(&self, next: Arc<Config>) -> Result<(), String>;
}

/// Reloads: reads the config with `load`, checks what changes, applies it to `target`.
/// Serialized by `lock`, so concurrent triggers (signals, API calls) never interleave.
pub fn reload(
    lock: &Mutex<()>,
    target: &dyn ReloadTarget,
    load: &dyn Fn() -> Result<Config, String>,
) -> Outcome {
    let _one_at_a_time = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let next = match load() {
        Ok(next) => next,
        Err(e) => {
            warn!(error = %e, "reload failed: the config does not load; the running config stays");
            return Outcome::Invalid(e);
        }
    };
    let running = target.running();
    let fields = running.fixed_changes(&next);
    if !fields.is_empty() {
        warn!(
            fields = %fields.join(", "),
            "reload refused: these settings change only with a restart; the running config stays"
        );
        return Outcome::Refused { fields };
    }
    if *running == next {
        info!("reload: the config is unchanged");
        return Outcome::Applied { changed: false };
    }
    if let Err(e) = target.apply(Arc::new(next)) {
        warn!(error = %e, "reload failed while applying; the running config stays");
        return Outcome::Invalid(e);
    }
    info!("reload: the new config is in force");
    Outcome::Applied { changed: true }
}

/// Reads the config again as at start (file, command line, environment), with the log filter
/// that goes with it.
pub type LoadFn = dyn Fn() -> Result<(Config, LogFilter), String> + Send + Sync;
/// Puts a log filter in force.
pub type SetLogFn = dyn Fn(&LogFilter) -> Result<(), String> + Send + Sync;

/// A node's way to reload: how to read its config again and how to change its log filter.
pub struct Reloader {
    load: Box<LoadFn>,
    set_log: Box<SetLogFn>,
    lock: Mutex<()>,
}

impl Reloader {
    /// A reloader that reads with `load` and sets the log filter with `set_log`.
    pub fn new(load: Box<LoadFn>, set_log: Box<SetLogFn>) -> Reloader {
        Reloader {
            load,
            set_log,
            lock: Mutex::new(()),
        }
    }

    /// Reloads `shared`'s config (see the module doc); blocks only on another reload.
    pub fn reload(&self, shared: &NodeShared) -> Outcome {
        let filter = RefCell::new(None);
        let load = || {
            let (config, log_filter) = (self.load)()?;
            *filter.borrow_mut() = Some(log_filter);
            Ok(config)
        };
        let target = NodeTarget {
            shared,
            set_log: &*self.set_log,
            filter: &filter,
        };
        reload(&self.lock, &target, &load)
    }
}

/// The node as a [`ReloadTarget`]: the shared config, every core's copy, the log filter.
struct NodeTarget<'a> {
    shared: &'a NodeShared,
    set_log: &'a SetLogFn,
    filter: &'a RefCell<Option<LogFilter>>,
}

impl ReloadTarget for NodeTarget<'_> {
    fn running(&self) -> Arc<Config> {
        self.shared.config()
    }

    fn apply(&self, next: Arc<Config>) -> Result<(), String> {
        if let Some(filter) = self.filter.borrow_mut().take() {
            (self.set_log)(&filter)?;
        }
        *self
            .shared
            .config
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::clone(&next);
        // Each core swaps its copy between two tasks, on its housekeeping tick (100 ms).
        for admin in &self.shared.admin {
            let _ = admin.send(AdminCommand::Reload(Arc::clone(&next)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    struct Fake {
        running: StdMutex<Arc<Config>>,
        applied: StdMutex<usize>,
        fail_apply: bool,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                running: StdMutex::new(Arc::new(Config::default())),
                applied: StdMutex::new(0),
                fail_apply: false,
            }
        }
    }

    impl ReloadTarget for Fake {
        fn running(&self) -> Arc<Config> {
            Arc::clone(&self.running.lock().expect("lock"))
        }
        fn apply(&self, next: Arc<Config>) -> Result<(), String> {
            if self.fail_apply {
                return Err("no".into());
            }
            *self.running.lock().expect("lock") = next;
            *self.applied.lock().expect("lock") += 1;
            Ok(())
        }
    }

    fn parsed(text: &str) -> impl Fn() -> Result<Config, String> + '_ {
        move || toml::from_str::<Config>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_live_change_is_applied_and_an_unchanged_file_is_not() {
        let (lock, target) = (Mutex::new(()), Fake::new());
        let text = "[http]\napi_token = \"rotated\"\n";
        assert_eq!(
            reload(&lock, &target, &parsed(text)),
            Outcome::Applied { changed: true }
        );
        assert_eq!(target.running().http.api_token, "rotated");
        assert_eq!(
            reload(&lock, &target, &parsed(text)),
            Outcome::Applied { changed: false }
        );
        assert_eq!(*target.applied.lock().expect("lock"), 1);
    }

    #[test]
    fn a_fixed_change_or_a_bad_file_changes_nothing() {
        let (lock, target) = (Mutex::new(()), Fake::new());
        let outcome = reload(
            &lock,
            &target,
            &parsed("[rtmp]\nlisten = \"127.0.0.1:1\"\n[http]\napi_token = \"x\"\n"),
        );
        assert_eq!(
            outcome,
            Outcome::Refused {
                fields: vec!["rtmp.listen"]
            }
        );
        assert!(matches!(
            reload(&lock, &target, &parsed("[http\n")),
            Outcome::Invalid(_)
        ));
        assert_eq!(*target.running(), Config::default());
        assert_eq!(*target.applied.lock().expect("lock"), 0);
    }

    #[test]
    fn a_failed_apply_is_reported() {
        let lock = Mutex::new(());
        let target = Fake {
            fail_apply: true,
            ..Fake::new()
        };
        let outcome = reload(&lock, &target, &parsed("[http]\napi_token = \"x\"\n"));
        assert_eq!(outcome, Outcome::Invalid("no".into()));
    }
}
