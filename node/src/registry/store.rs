//! The registry's operations, written once over [`Db`]: livestreams (create, list, get,
//! disable, reset, delete), the live sessions' leases (authorize, renew, release, expire) and
//! the webhook outbox that every status change writes in its own transaction.
//!
//! Every function takes `now` (Unix milliseconds): no clock is read here, so tests move time
//! by hand. A session row is `active` while `expires_at > now`; a node renews its rows every
//! `registry.renew_ms`, and any node's sweep ([`expire`]) deletes the rows of a node that
//! stopped renewing, sending `livestream.idle` for them.

use serde_json::json;

use super::db::{transaction, Db, DbError, Row, Value};
use super::key;
use super::model::{EventType, Livestream, Refusal, Session, SessionStats, Status, StopReason};

/// What a status change tells the webhooks: the URLs to queue it for.
pub type Targets<'a> = &'a [String];

const LIVESTREAM_COLUMNS: &str =
    "l.id, l.name, l.disabled, l.settings, l.created_at, s.node, s.core, s.since, s.expires_at, s.info";
const FROM_LIVESTREAMS: &str = "FROM livestreams l LEFT JOIN sessions s ON s.livestream_id = l.id";

/// A livestream from a row of [`LIVESTREAM_COLUMNS`].
fn livestream(row: &Row, now: i64) -> Livestream {
    let live = !matches!(row[5], Value::Null) && row[8].int() > now;
    let session = live.then(|| Session {
        node: row[5].text(),
        core: row[6].int(),
        since: row[7].int() / 1000,
        stats: serde_json::from_str::<SessionStats>(&row[9].text()).unwrap_or_default(),
    });
    let status = match (row[2].int() != 0, live) {
        (true, _) => Status::Disabled,
        (false, true) => Status::Active,
        (false, false) => Status::Idle,
    };
    Livestream {
        id: row[0].text(),
        name: row[1].text(),
        status,
        settings: serde_json::from_str(&row[3].text()).unwrap_or(serde_json::Value::Null),
        created_at: row[4].int() / 1000,
        session,
    }
}

/// Creates a livestream whose key hashes to `key_hash`.
pub fn create(
    db: &mut dyn Db,
    id: &str,
    name: &str,
    key_hash: &[u8],
    settings: &serde_json::Value,
    now: i64,
) -> Result<Livestream, DbError> {
    db.exec(
        "INSERT INTO livestreams (id, name, key_hash, disabled, settings, created_at) \
         VALUES ($1, $2, $3, 0, $4, $5)",
        &[
            id.into(),
            name.into(),
            key_hash.into(),
            settings.to_string().into(),
            now.into(),
        ],
    )?;
    get(db, id, now).map(|found| found.unwrap_or_else(|| unreachable_livestream(id)))
}

/// Only reached if a row vanished inside one connection's two statements.
fn unreachable_livestream(id: &str) -> Livestream {
    Livestream {
        id: id.to_owned(),
        name: String::new(),
        status: Status::Idle,
        settings: serde_json::Value::Null,
        created_at: 0,
        session: None,
    }
}

/// One page of livestreams, oldest first, and how many there are.
pub fn list(
    db: &mut dyn Db,
    limit: usize,
    offset: usize,
    now: i64,
) -> Result<(Vec<Livestream>, usize), DbError> {
    let total = db.query("SELECT COUNT(*) FROM livestreams", &[])?[0][0].int() as usize;
    let rows = db.query(
        &format!(
            "SELECT {LIVESTREAM_COLUMNS} {FROM_LIVESTREAMS} \
             ORDER BY l.created_at, l.id LIMIT $1 OFFSET $2"
        ),
        &[(limit as i64).into(), (offset as i64).into()],
    )?;
    Ok((rows.iter().map(|r| livestream(r, now)).collect(), total))
}

/// One livestream.
pub fn get(db: &mut dyn Db, id: &str, now: i64) -> Result<Option<Livestream>, DbError> {
    let rows = db.query(
        &format!("SELECT {LIVESTREAM_COLUMNS} {FROM_LIVESTREAMS} WHERE l.id = $1"),
        &[id.into()],
    )?;
    Ok(rows.first().map(|r| livestream(r, now)))
}

/// Disables or enables a livestream; a disable queues `livestream.disabled`. None if unknown.
pub fn set_disabled(
    db: &mut dyn Db,
    id: &str,
    disabled: bool,
    now: i64,
    targets: Targets,
) -> Result<Option<Livestream>, DbError> {
    transaction(db, |db| {
        let changed = db.exec(
            "UPDATE livestreams SET disabled = $2 WHERE id = $1 AND disabled <> $2",
            &[id.into(), i64::from(disabled).into()],
        )?;
        let Some(found) = get(db, id, now)? else {
            return Ok(None);
        };
        if changed == 1 && disabled {
            enqueue(db, targets, &found, EventType::Disabled, now)?;
        }
        Ok(Some(found))
    })
}

/// Gives a livestream a new key hash (the old key is refused from now on). None if unknown.
pub fn reset_key(
    db: &mut dyn Db,
    id: &str,
    key_hash: &[u8],
    now: i64,
) -> Result<Option<Livestream>, DbError> {
    let changed = db.exec(
        "UPDATE livestreams SET key_hash = $2 WHERE id = $1",
        &[id.into(), key_hash.into()],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    get(db, id, now)
}

/// Deletes a livestream and its session; false if unknown. Queued events are still sent.
pub fn delete(db: &mut dyn Db, id: &str) -> Result<bool, DbError> {
    transaction(db, |db| {
        db.exec(
            "DELETE FROM sessions WHERE livestream_id = $1",
            &[id.into()],
        )?;
        super::targets::delete_all(db, id)?;
        Ok(db.exec("DELETE FROM livestreams WHERE id = $1", &[id.into()])? == 1)
    })
}

/// Who asks for a lease.
#[derive(Debug, Clone)]
pub struct Holder<'a> {
    /// The node (`registry.node_id`).
    pub node: &'a str,
    /// The core the publish runs on.
    pub core: usize,
    /// This publish's own token: release and renewal touch only its row.
    pub token: &'a str,
    /// The lease's length in milliseconds.
    pub lease_ms: i64,
}

/// The livestream whose key `stream_key` is, leased to `holder` (`livestream.active` queued),
/// or why not. A live lease of another node refuses; one of this node is taken over (an
/// encoder reconnecting before its old connection was seen to end).
pub fn authorize(
    db: &mut dyn Db,
    stream_key: &str,
    holder: &Holder,
    now: i64,
    targets: Targets,
) -> Result<Result<Livestream, Refusal>, DbError> {
    let hash = key::hash(stream_key);
    transaction(db, |db| {
        let sql = format!(
            "SELECT id, key_hash, disabled FROM livestreams WHERE key_hash = $1{}",
            db.for_update()
        );
        let rows = db.query(&sql, &[hash.as_slice().into()])?;
        let Some(row) = rows
            .first()
            .filter(|r| key::matches(stream_key, &r[1].bytes()))
        else {
            return Ok(Err(Refusal::UnknownKey));
        };
        if row[2].int() != 0 {
            return Ok(Err(Refusal::Disabled));
        }
        let id = row[0].text();
        let held = db.query(
            "SELECT node, expires_at FROM sessions WHERE livestream_id = $1",
            &[id.as_str().into()],
        )?;
        let live = held.first().filter(|s| s[1].int() > now);
        if let Some(other) = live.filter(|s| s[0].text() != holder.node) {
            return Ok(Err(Refusal::LiveElsewhere(other[0].text())));
        }
        let was_live = live.is_some();
        upsert_session(db, &id, holder, &hash, now, now, "{}")?;
        let found = get(db, &id, now)?.unwrap_or_else(|| unreachable_livestream(&id));
        if !was_live {
            if !held.is_empty() {
                // A lease that ran out unswept: its end is news before the new start.
                enqueue(db, targets, &found, EventType::Idle, now)?;
            }
            enqueue(db, targets, &found, EventType::Active, now)?;
        }
        Ok(Ok(found))
    })
}

fn upsert_session(
    db: &mut dyn Db,
    id: &str,
    holder: &Holder,
    key_hash: &[u8],
    since: i64,
    now: i64,
    info: &str,
) -> Result<(), DbError> {
    db.exec(
        "INSERT INTO sessions (livestream_id, token, node, core, key_hash, since, expires_at, info) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (livestream_id) DO UPDATE SET token = $2, node = $3, core = $4, \
         key_hash = $5, since = $6, expires_at = $7, info = $8",
        &[
            id.into(),
            holder.token.into(),
            holder.node.into(),
            (holder.core as i64).into(),
            key_hash.into(),
            since.into(),
            (now + holder.lease_ms).into(),
            info.into(),
        ],
    )?;
    Ok(())
}

/// Ends the session `token` holds (`livestream.idle` queued); false if it holds none.
pub fn release(
    db: &mut dyn Db,
    id: &str,
    token: &str,
    now: i64,
    targets: Targets,
) -> Result<bool, DbError> {
    transaction(db, |db| {
        let gone = db.exec(
            "DELETE FROM sessions WHERE livestream_id = $1 AND token = $2",
            &[id.into(), token.into()],
        )?;
        if gone == 0 {
            return Ok(false);
        }
        if let Some(found) = get(db, id, now)? {
            enqueue(db, targets, &found, EventType::Idle, now)?;
        }
        Ok(true)
    })
}

/// One live session a node holds, as it renews it.
#[derive(Debug, Clone)]
pub struct Renewal<'a> {
    /// The livestream.
    pub id: &'a str,
    /// Who holds it.
    pub holder: Holder<'a>,
    /// The key hash it was authorized with (a reset changes the livestream's).
    pub key_hash: &'a [u8],
    /// When it began (Unix ms).
    pub since: i64,
    /// What the node reports of it now.
    pub stats: &'a SessionStats,
}

/// Extends one lease and records its stats; why it must end instead, if it must. A row lost
/// (a sweep while the database was out of reach) is written again, `livestream.active` too.
pub fn renew(
    db: &mut dyn Db,
    renewal: &Renewal,
    now: i64,
    targets: Targets,
) -> Result<Option<StopReason>, DbError> {
    transaction(db, |db| {
        let sql = format!(
            "SELECT key_hash, disabled FROM livestreams WHERE id = $1{}",
            db.for_update()
        );
        let rows = db.query(&sql, &[renewal.id.into()])?;
        let Some(row) = rows.first() else {
            return Ok(Some(StopReason::Deleted));
        };
        if row[1].int() != 0 {
            return Ok(Some(StopReason::Disabled));
        }
        if row[0].bytes() != renewal.key_hash {
            return Ok(Some(StopReason::KeyReset));
        }
        let held = db.query(
            "SELECT token, node, expires_at FROM sessions WHERE livestream_id = $1",
            &[renewal.id.into()],
        )?;
        let holder = &renewal.holder;
        match held.first() {
            Some(s) if s[0].text() == holder.token => {}
            Some(s) if s[2].int() > now && s[1].text() != holder.node => {
                return Ok(Some(StopReason::Superseded))
            }
            // This node's newer publish of it took over: that one renews the row.
            Some(s) if s[2].int() > now => return Ok(None),
            _ => {
                let info = serde_json::to_string(renewal.stats).unwrap_or_default();
                upsert_session(
                    db,
                    renewal.id,
                    holder,
                    renewal.key_hash,
                    renewal.since,
                    now,
                    &info,
                )?;
                if let Some(found) = get(db, renewal.id, now)? {
                    if !held.is_empty() {
                        // A lease that ran out unswept: its end is news before the new start.
                        enqueue(db, targets, &found, EventType::Idle, now)?;
                    }
                    enqueue(db, targets, &found, EventType::Active, now)?;
                }
                return Ok(None);
            }
        }
        let info = serde_json::to_string(renewal.stats).unwrap_or_default();
        db.exec(
            "UPDATE sessions SET expires_at = $3, info = $4 WHERE livestream_id = $1 AND token = $2",
            &[
                renewal.id.into(),
                holder.token.into(),
                (now + holder.lease_ms).into(),
                info.into(),
            ],
        )?;
        Ok(None)
    })
}

/// Deletes the sessions whose lease ran out (their nodes stopped renewing), queueing
/// `livestream.idle` for each; how many.
pub fn expire(db: &mut dyn Db, now: i64, targets: Targets) -> Result<usize, DbError> {
    transaction(db, |db| {
        let gone = db.query(
            "DELETE FROM sessions WHERE expires_at <= $1 RETURNING livestream_id",
            &[now.into()],
        )?;
        for row in &gone {
            if let Some(found) = get(db, &row[0].text(), now)? {
                enqueue(db, targets, &found, EventType::Idle, now)?;
            }
        }
        Ok(gone.len())
    })
}

/// Queues `event` about `livestream` for every target (inside the caller's transaction).
fn enqueue(
    db: &mut dyn Db,
    targets: Targets,
    livestream: &Livestream,
    event: EventType,
    now: i64,
) -> Result<(), DbError> {
    if targets.is_empty() {
        return Ok(());
    }
    let body = json!({
        "id": format!("evt_{}", &key::new_id()[key::ID_PREFIX.len()..]),
        "type": event.as_str(),
        "created_at": now / 1000,
        "data": livestream,
    })
    .to_string();
    for target in targets {
        db.exec(
            "INSERT INTO outbox (livestream_id, target, body, attempts, next_at, claimed_until) \
             VALUES ($1, $2, $3, 0, $4, 0)",
            &[
                livestream.id.as_str().into(),
                target.as_str().into(),
                body.as_str().into(),
                now.into(),
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
