//! Pull-ins added through the API, kept in the registry (the `pulls` table) so that a node
//! resumes them after a restart, as it does the `[[ingest.pull]]` ones.
//!
//! A row belongs to the node that took the `POST` (`registry.node_id`): with PostgreSQL
//! shared by several origins each resumes its own pulls only, so a source is never pulled
//! twice. The URL is kept whole (the pull needs its key); [`StoredPull`]'s `Debug` shows it
//! redacted. `DELETE /api/v1/pulls/{id}` removes the row.

use super::db::{Db, DbError, Row};
use crate::livestreams::targets_url::redact;

const COLUMNS: &str = "id, app, name, url, ca_file, created_at";

/// A pull as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredPull {
    /// Its id (`pl_...` or the caller's).
    pub id: String,
    /// The local app.
    pub app: String,
    /// The local stream name.
    pub name: String,
    /// The source URL, key included: never shown.
    pub url: String,
    /// PEM CAs for an `rtmps://` source; empty = the system's roots.
    pub ca_file: String,
    /// When it was added (Unix ms).
    pub created_at: i64,
}

impl std::fmt::Debug for StoredPull {
    /// The URL redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredPull")
            .field("id", &self.id)
            .field("stream", &format_args!("{}/{}", self.app, self.name))
            .field("url", &redact(&self.url))
            .finish_non_exhaustive()
    }
}

fn pull(row: &Row) -> StoredPull {
    StoredPull {
        id: row[0].text(),
        app: row[1].text(),
        name: row[2].text(),
        url: row[3].text(),
        ca_file: row[4].text(),
        created_at: row[5].int(),
    }
}

/// Stores `pull` for `node` (a row with its id replaced: an id is one pull).
pub fn put(db: &mut dyn Db, node: &str, pull: &StoredPull) -> Result<(), DbError> {
    super::db::transaction(db, |db| {
        db.exec(
            "DELETE FROM pulls WHERE node = $1 AND id = $2",
            &[node.into(), pull.id.as_str().into()],
        )?;
        db.exec(
            &format!("INSERT INTO pulls (node, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
            &[
                node.into(),
                pull.id.as_str().into(),
                pull.app.as_str().into(),
                pull.name.as_str().into(),
                pull.url.as_str().into(),
                pull.ca_file.as_str().into(),
                pull.created_at.into(),
            ],
        )?;
        Ok(())
    })
}

/// `node`'s pulls, oldest first.
pub fn list(db: &mut dyn Db, node: &str) -> Result<Vec<StoredPull>, DbError> {
    let rows = db.query(
        &format!("SELECT {COLUMNS} FROM pulls WHERE node = $1 ORDER BY created_at, id"),
        &[node.into()],
    )?;
    Ok(rows.iter().map(pull).collect())
}

/// Removes `node`'s pull `id`; whether there was one.
pub fn delete(db: &mut dyn Db, node: &str, id: &str) -> Result<bool, DbError> {
    let n = db.exec(
        "DELETE FROM pulls WHERE node = $1 AND id = $2",
        &[node.into(), id.into()],
    )?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic in a test is a failed test.

    use super::super::db::Sqlite;
    use super::super::schema::migrate;
    use super::*;

    fn stored(id: &str, at: i64) -> StoredPull {
        StoredPull {
            id: id.to_owned(),
            app: "live".to_owned(),
            name: format!("cam-{id}"),
            url: "rtmp://cam:1935/app/SECRET".to_owned(),
            ca_file: String::new(),
            created_at: at,
        }
    }

    #[test]
    fn a_node_lists_its_own_pulls_oldest_first_and_deletes_them() {
        let mut db = Sqlite::open(":memory:").unwrap();
        migrate(&mut db).unwrap();
        put(&mut db, "a", &stored("p2", 20)).unwrap();
        put(&mut db, "a", &stored("p1", 10)).unwrap();
        put(&mut db, "b", &stored("p3", 5)).unwrap();
        // Storing an id again replaces it.
        put(&mut db, "a", &stored("p2", 20)).unwrap();
        let ids: Vec<String> = list(&mut db, "a")
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(ids, ["p1", "p2"]);
        assert_eq!(list(&mut db, "a").unwrap()[0], stored("p1", 10));
        assert!(!delete(&mut db, "a", "p3").unwrap(), "another node's pull");
        assert!(delete(&mut db, "a", "p1").unwrap());
        assert!(!delete(&mut db, "a", "p1").unwrap());
        assert_eq!(list(&mut db, "a").unwrap().len(), 1);
        assert_eq!(list(&mut db, "b").unwrap().len(), 1);
        assert!(!format!("{:?}", stored("x", 0)).contains("SECRET"));
    }
}
