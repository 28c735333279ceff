//! Webhooks: the outbox's queue and the sender thread that drains it.
//!
//! Every status change queues its event in `outbox` in the same transaction (one row per
//! URL), so an event is sent if and only if the change happened, even across a crash. The
//! sender is a thread of its own with its own connection: a slow or dead receiver holds up
//! only the sender, never the registry's answers and never ingest.
//!
//! Order: only the oldest row of each (livestream, URL) is ever due, so `active` always
//! reaches a receiver before the `idle` that followed it, whichever origin wrote them and
//! across restarts. Several nodes may drain one PostgreSQL outbox: a row is *claimed* (a
//! short lease on the row) before it is sent, so one node sends it. A failed try waits
//! 1 s, 2 s, 4 s ... up to `webhooks.max_backoff_secs`; after `max_attempts` it is dropped
//! with a log line and a metric so the ones behind it can go.
//!
//! Each POST carries `Corecast-Signature: t=<unix secs>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`: the receiver recomputes it, compares in constant time and refuses old
//! timestamps (a replayed request).

use std::time::Duration;

use crossbeam_channel::Receiver;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tracing::{debug, info, warn};

use super::db::{Db, DbError};
use super::now_ms;
use crate::config::{RegistryTarget, WebhooksConfig};

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "Corecast-Signature";
/// How long a claimed row is this sender's (past any POST's deadline).
const CLAIM_MS: i64 = 60_000;
/// Rows sent per pass.
const BATCH: i64 = 64;
/// How often the outbox is read when nothing wakes the sender.
const POLL: Duration = Duration::from_millis(500);

/// The signature header's value for `body` at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// The wait after `attempts` failed tries.
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempts.min(20)).min(max)
}

/// One queued delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The outbox row.
    pub seq: i64,
    /// The URL.
    pub target: String,
    /// The JSON body.
    pub body: String,
    /// Tries so far.
    pub attempts: u32,
}

/// The deliveries due now: the oldest of each (livestream, URL), unclaimed and past its wait.
pub fn due(db: &mut dyn Db, now: i64) -> Result<Vec<Delivery>, DbError> {
    let rows = db.query(
        "SELECT seq, target, body, attempts FROM outbox o \
         WHERE next_at <= $1 AND claimed_until <= $1 AND seq = (SELECT MIN(seq) FROM outbox i \
         WHERE i.livestream_id = o.livestream_id AND i.target = o.target) ORDER BY seq LIMIT $2",
        &[now.into(), BATCH.into()],
    )?;
    Ok(rows
        .into_iter()
        .map(|r| Delivery {
            seq: r[0].int(),
            target: r[1].text(),
            body: r[2].text(),
            attempts: r[3].int().clamp(0, i64::from(u32::MAX)) as u32,
        })
        .collect())
}

/// Claims a row for this sender; false when another node has it.
pub fn claim(db: &mut dyn Db, seq: i64, now: i64) -> Result<bool, DbError> {
    let claimed = db.exec(
        "UPDATE outbox SET claimed_until = $3 WHERE seq = $1 AND claimed_until <= $2",
        &[seq.into(), now.into(), (now + CLAIM_MS).into()],
    )?;
    Ok(claimed == 1)
}

/// Removes a row (delivered, or given up).
pub fn remove(db: &mut dyn Db, seq: i64) -> Result<(), DbError> {
    db.exec("DELETE FROM outbox WHERE seq = $1", &[seq.into()])?;
    Ok(())
}

/// Puts a row back to be tried again at `next_at`.
pub fn retry(db: &mut dyn Db, seq: i64, attempts: u32, next_at: i64) -> Result<(), DbError> {
    db.exec(
        "UPDATE outbox SET attempts = $2, next_at = $3, claimed_until = 0 WHERE seq = $1",
        &[seq.into(), i64::from(attempts).into(), next_at.into()],
    )?;
    Ok(())
}

/// The sender thread's state.
pub struct Sender {
    /// Its own connection.
    pub db: Box<dyn Db>,
    /// What it connects to (again, after a lost connection).
    pub target: RegistryTarget,
    /// URLs, secret, deadlines.
    pub config: WebhooksConfig,
    /// Rings when an event was queued (or the node stops: disconnected).
    pub wake: Receiver<()>,
    /// Counts deliveries by result.
    pub count: Box<dyn Fn(&'static str) + Send>,
}

impl Sender {
    /// Sends until the registry goes away.
    pub fn run(mut self) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(self.config.timeout_secs)))
            .http_status_as_error(false)
            .build()
            .into();
        loop {
            if let Err(e) = self.pass(&agent) {
                warn!(error = %e, "webhook outbox unreadable; trying again");
                super::reopen_if_lost(&mut self.db, &self.target, &e);
            }
            match self.wake.recv_timeout(POLL) {
                Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Sends what is due now.
    fn pass(&mut self, agent: &ureq::Agent) -> Result<(), DbError> {
        for delivery in due(self.db.as_mut(), now_ms())? {
            if !claim(self.db.as_mut(), delivery.seq, now_ms())? {
                continue;
            }
            let result = self.post(agent, &delivery);
            self.settle(&delivery, result)?;
        }
        Ok(())
    }

    fn post(&self, agent: &ureq::Agent, delivery: &Delivery) -> Result<(), String> {
        let signature = sign(
            self.config.secret.as_bytes(),
            now_ms() / 1000,
            &delivery.body,
        );
        let response = agent
            .post(&delivery.target)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .send(delivery.body.as_str())
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    }

    fn settle(&mut self, delivery: &Delivery, result: Result<(), String>) -> Result<(), DbError> {
        let url = delivery.target.as_str();
        match result {
            Ok(()) => {
                debug!(url, seq = delivery.seq, "webhook delivered");
                (self.count)("delivered");
                remove(self.db.as_mut(), delivery.seq)
            }
            Err(error) if delivery.attempts + 1 >= self.config.max_attempts => {
                warn!(url, seq = delivery.seq, %error, "webhook given up");
                (self.count)("given_up");
                remove(self.db.as_mut(), delivery.seq)
            }
            Err(error) => {
                let wait = backoff(
                    delivery.attempts,
                    Duration::from_secs(self.config.max_backoff_secs),
                );
                info!(url, seq = delivery.seq, %error, retry_in_ms = wait.as_millis() as u64, "webhook failed");
                (self.count)("failed");
                let next_at = now_ms() + wait.as_millis() as i64;
                retry(
                    self.db.as_mut(),
                    delivery.seq,
                    delivery.attempts + 1,
                    next_at,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let a = sign(b"secret", 1700000000, "{}");
        assert!(a.starts_with("t=1700000000,v1="), "{a}");
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, sign(b"secret", 1700000001, "{}"));
        assert_ne!(a, sign(b"secret", 1700000000, "{ }"));
        assert_ne!(a, sign(b"other", 1700000000, "{}"));
        assert_eq!(a, sign(b"secret", 1700000000, "{}"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(300);
        assert_eq!(backoff(0, max), Duration::from_secs(1));
        assert_eq!(backoff(3, max), Duration::from_secs(8));
        assert_eq!(backoff(9, max), max);
        assert_eq!(backoff(u32::MAX, max), max);
    }
}
