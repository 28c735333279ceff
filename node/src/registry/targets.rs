//! A livestream's push targets in the registry (the `targets` table): add, list, get,
//! change, delete, and the enabled ones a going-live stream hands to the restream engine.
//!
//! The URL is kept whole (the push needs the key); what leaves the registry for an answer or
//! a log is [`crate::livestreams::targets_url::redact`]'s form, and [`Target`]'s `Debug`
//! shows only that. A livestream has at most [`MAX_PER_LIVESTREAM`] targets, so one owner
//! cannot make the node open unbounded connections. Deleting a livestream deletes its targets
//! ([`super::store::delete`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::db::{transaction, Db, DbError, Row};
use crate::livestreams::targets_url::redact;

/// Most targets one livestream may have.
pub const MAX_PER_LIVESTREAM: usize = 16;

/// What every target id starts with.
pub const ID_PREFIX: &str = "tg_";

const COLUMNS: &str = "id, livestream_id, name, url, enabled, enhanced_codecs, created_at";

/// A push target of a livestream.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// `tg_...`: the engine's target id (metrics and logs name it).
    pub id: String,
    /// The livestream it belongs to.
    pub livestream_id: String,
    /// Its owner's name for it.
    pub name: String,
    /// The whole URL, stream key included: never shown.
    pub url: String,
    /// Whether it is pushed to while the livestream is live.
    pub enabled: bool,
    /// Whether it accepts HEVC/AV1 (Enhanced RTMP).
    pub enhanced_codecs: bool,
    /// When it was added (Unix ms).
    pub created_at: i64,
}

impl std::fmt::Debug for Target {
    /// The URL redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("id", &self.id)
            .field("livestream_id", &self.livestream_id)
            .field("name", &self.name)
            .field("url", &redact(&self.url))
            .field("enabled", &self.enabled)
            .field("enhanced_codecs", &self.enhanced_codecs)
            .finish()
    }
}

/// What a change sets (the fields it does not name stay).
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// A new name.
    pub name: Option<String>,
    /// A new URL (checked by the caller).
    pub url: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Accept enhanced codecs or not.
    pub enhanced_codecs: Option<bool>,
}

/// Why a target was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddRefusal {
    /// No such livestream.
    #[error("no such livestream")]
    NoLivestream,
    /// It has [`MAX_PER_LIVESTREAM`] already.
    #[error("a livestream has at most {MAX_PER_LIVESTREAM} targets")]
    TooMany,
}

/// The enabled targets of the livestreams this node publishes, by livestream id: filled when
/// a publish is authorized (in the same registry call) and again after an API change on this
/// node, so the restream engine reads them without waiting on the database when the stream
/// goes live. An entry is replaced, never grown: one per livestream ever live here.
#[derive(Clone, Default)]
pub struct Cache(Arc<Mutex<HashMap<String, Vec<Target>>>>);

impl Cache {
    /// Records `livestream_id`'s enabled targets.
    pub fn set(&self, livestream_id: &str, enabled: Vec<Target>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(livestream_id.to_owned(), enabled);
    }

    /// `livestream_id`'s enabled targets as last recorded.
    pub fn enabled(&self, livestream_id: &str) -> Vec<Target> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(livestream_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether this node has recorded `livestream_id` (it was published here).
    pub fn knows(&self, livestream_id: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(livestream_id)
    }
}

fn target(row: &Row) -> Target {
    Target {
        id: row[0].text(),
        livestream_id: row[1].text(),
        name: row[2].text(),
        url: row[3].text(),
        enabled: row[4].int() != 0,
        enhanced_codecs: row[5].int() != 0,
        created_at: row[6].int(),
    }
}

/// Adds `new` (its id and time set by the caller), or why not.
pub fn add(db: &mut dyn Db, new: &Target) -> Result<Result<Target, AddRefusal>, DbError> {
    transaction(db, |db| {
        // Locking the livestream row makes two adds at once count each other.
        let sql = format!(
            "SELECT id FROM livestreams WHERE id = $1{}",
            db.for_update()
        );
        if db
            .query(&sql, &[new.livestream_id.as_str().into()])?
            .is_empty()
        {
            return Ok(Err(AddRefusal::NoLivestream));
        }
        let count = db.query(
            "SELECT COUNT(*) FROM targets WHERE livestream_id = $1",
            &[new.livestream_id.as_str().into()],
        )?[0][0]
            .int();
        if count as usize >= MAX_PER_LIVESTREAM {
            return Ok(Err(AddRefusal::TooMany));
        }
        db.exec(
            &format!("INSERT INTO targets ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
            &[
                new.id.as_str().into(),
                new.livestream_id.as_str().into(),
                new.name.as_str().into(),
                new.url.as_str().into(),
                i64::from(new.enabled).into(),
                i64::from(new.enhanced_codecs).into(),
                new.created_at.into(),
            ],
        )?;
        Ok(Ok(new.clone()))
    })
}

/// A livestream's targets, oldest first; None when there is no such livestream.
pub fn list(db: &mut dyn Db, livestream_id: &str) -> Result<Option<Vec<Target>>, DbError> {
    if db
        .query(
            "SELECT id FROM livestreams WHERE id = $1",
            &[livestream_id.into()],
        )?
        .is_empty()
    {
        return Ok(None);
    }
    let rows = db.query(
        &format!("SELECT {COLUMNS} FROM targets WHERE livestream_id = $1 ORDER BY created_at, id"),
        &[livestream_id.into()],
    )?;
    Ok(Some(rows.iter().map(target).collect()))
}

/// A livestream's enabled targets (what a going-live stream pushes to).
pub fn enabled(db: &mut dyn Db, livestream_id: &str) -> Result<Vec<Target>, DbError> {
    let rows = db.query(
        &format!(
            "SELECT {COLUMNS} FROM targets WHERE livestream_id = $1 AND enabled = 1 \
             ORDER BY created_at, id"
        ),
        &[livestream_id.into()],
    )?;
    Ok(rows.iter().map(target).collect())
}

/// One target of a livestream.
pub fn get(db: &mut dyn Db, livestream_id: &str, id: &str) -> Result<Option<Target>, DbError> {
    let rows = db.query(
        &format!("SELECT {COLUMNS} FROM targets WHERE livestream_id = $1 AND id = $2"),
        &[livestream_id.into(), id.into()],
    )?;
    Ok(rows.first().map(target))
}

/// Applies `change` to a target; the target as it is now, None if unknown.
pub fn update(
    db: &mut dyn Db,
    livestream_id: &str,
    id: &str,
    change: &Change,
) -> Result<Option<Target>, DbError> {
    transaction(db, |db| {
        let Some(mut found) = get(db, livestream_id, id)? else {
            return Ok(None);
        };
        if let Some(name) = &change.name {
            found.name = name.clone();
        }
        if let Some(url) = &change.url {
            found.url = url.clone();
        }
        found.enabled = change.enabled.unwrap_or(found.enabled);
        found.enhanced_codecs = change.enhanced_codecs.unwrap_or(found.enhanced_codecs);
        db.exec(
            "UPDATE targets SET name = $3, url = $4, enabled = $5, enhanced_codecs = $6 \
             WHERE livestream_id = $1 AND id = $2",
            &[
                livestream_id.into(),
                id.into(),
                found.name.as_str().into(),
                found.url.as_str().into(),
                i64::from(found.enabled).into(),
                i64::from(found.enhanced_codecs).into(),
            ],
        )?;
        Ok(Some(found))
    })
}

/// Deletes a target; false if unknown.
pub fn delete(db: &mut dyn Db, livestream_id: &str, id: &str) -> Result<bool, DbError> {
    Ok(db.exec(
        "DELETE FROM targets WHERE livestream_id = $1 AND id = $2",
        &[livestream_id.into(), id.into()],
    )? == 1)
}

/// Deletes every target of a livestream (inside the caller's transaction).
pub fn delete_all(db: &mut dyn Db, livestream_id: &str) -> Result<(), DbError> {
    db.exec(
        "DELETE FROM targets WHERE livestream_id = $1",
        &[livestream_id.into()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::db::Sqlite;
    use crate::registry::{key, schema, store};

    const T0: i64 = 1_700_000_000_000;

    fn db_with(livestream: &str) -> Sqlite {
        let mut db = Sqlite::open(":memory:").expect("open");
        schema::migrate(&mut db).expect("migrate");
        let hash = key::hash(&key::new_key());
        store::create(
            &mut db,
            livestream,
            "show",
            &hash,
            &serde_json::json!({}),
            T0,
        )
        .expect("create");
        db
    }

    fn new(livestream: &str, id: &str, at: i64) -> Target {
        Target {
            id: id.to_owned(),
            livestream_id: livestream.to_owned(),
            name: "yt".to_owned(),
            url: "rtmps://a.rtmps.youtube.com/live2/secret-key".to_owned(),
            enabled: true,
            enhanced_codecs: false,
            created_at: at,
        }
    }

    #[test]
    fn targets_are_added_listed_changed_and_deleted() {
        let mut db = db_with("ls_a");
        add(&mut db, &new("ls_a", "tg_1", T0))
            .expect("db")
            .expect("added");
        add(&mut db, &new("ls_a", "tg_2", T0 + 1))
            .expect("db")
            .expect("added");
        let all = list(&mut db, "ls_a").expect("db").expect("known");
        assert_eq!(
            all.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["tg_1", "tg_2"]
        );
        let off = Change {
            enabled: Some(false),
            ..Change::default()
        };
        let changed = update(&mut db, "ls_a", "tg_1", &off)
            .expect("db")
            .expect("known");
        assert!(!changed.enabled);
        assert_eq!(changed.name, "yt");
        let on: Vec<_> = enabled(&mut db, "ls_a").expect("db");
        assert_eq!(on.len(), 1);
        assert_eq!(on[0].id, "tg_2");
        assert!(update(&mut db, "ls_b", "tg_1", &off).expect("db").is_none());
        assert!(delete(&mut db, "ls_a", "tg_1").expect("db"));
        assert!(!delete(&mut db, "ls_a", "tg_1").expect("db"));
        assert!(get(&mut db, "ls_a", "tg_1").expect("db").is_none());
    }

    #[test]
    fn an_unknown_livestream_and_too_many_targets_are_refused() {
        let mut db = db_with("ls_a");
        let refused = add(&mut db, &new("ls_x", "tg_1", T0)).expect("db");
        assert_eq!(refused, Err(AddRefusal::NoLivestream));
        assert!(list(&mut db, "ls_x").expect("db").is_none());
        for i in 0..MAX_PER_LIVESTREAM {
            add(&mut db, &new("ls_a", &format!("tg_{i}"), T0))
                .expect("db")
                .expect("added");
        }
        let refused = add(&mut db, &new("ls_a", "tg_last", T0)).expect("db");
        assert_eq!(refused, Err(AddRefusal::TooMany));
    }

    #[test]
    fn deleting_the_livestream_deletes_its_targets() {
        let mut db = db_with("ls_a");
        add(&mut db, &new("ls_a", "tg_1", T0))
            .expect("db")
            .expect("added");
        assert!(store::delete(&mut db, "ls_a").expect("db"));
        assert!(db
            .query("SELECT id FROM targets", &[])
            .expect("db")
            .is_empty());
    }

    #[test]
    fn debug_hides_the_key() {
        let shown = format!("{:?}", new("ls_a", "tg_1", T0));
        assert!(!shown.contains("secret-key"), "{shown}");
        assert!(
            shown.contains("rtmps://a.rtmps.youtube.com:443/live2/…"),
            "{shown}"
        );
    }
}
