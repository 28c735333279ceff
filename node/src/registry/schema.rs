//! The registry's schema and its versioned migrations, applied at start.
//!
//! `schema_version` holds one row: the number of migrations applied. At start each node
//! applies the ones after it, in one transaction, so a node never runs against a half-built
//! schema; on PostgreSQL an advisory lock makes origins that start together take turns.
//! A migration is never edited once shipped: a change is a new one at the end.
//!
//! Tables: `livestreams` (one row each; the key's SHA-256, never the key), `sessions` (the
//! live publish of a livestream: which node holds it and until when its lease runs),
//! `outbox` (webhook deliveries, written in the transaction that changed the status),
//! `targets` (a livestream's push targets, [`super::targets`]), `pulls` (pull-ins added
//! through the API, per node: [`super::pulls`]).

use super::db::{transaction, Db, DbError, Dialect};

/// One migration: its SQLite and its PostgreSQL text.
struct Migration {
    sqlite: &'static str,
    postgres: &'static str,
}

/// Every migration, in order.
const MIGRATIONS: &[Migration] = &[
    Migration {
        sqlite: "
        CREATE TABLE livestreams (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            key_hash BLOB NOT NULL UNIQUE,
            disabled INTEGER NOT NULL DEFAULT 0,
            settings TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE sessions (
            livestream_id TEXT PRIMARY KEY,
            token TEXT NOT NULL,
            node TEXT NOT NULL,
            core INTEGER NOT NULL,
            key_hash BLOB NOT NULL,
            since INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            info TEXT NOT NULL
        );
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            livestream_id TEXT NOT NULL,
            target TEXT NOT NULL,
            body TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at INTEGER NOT NULL,
            claimed_until INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX outbox_queue ON outbox (livestream_id, target, seq);
    ",
        postgres: "
        CREATE TABLE livestreams (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            key_hash BYTEA NOT NULL UNIQUE,
            disabled BIGINT NOT NULL DEFAULT 0,
            settings TEXT NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE sessions (
            livestream_id TEXT PRIMARY KEY,
            token TEXT NOT NULL,
            node TEXT NOT NULL,
            core BIGINT NOT NULL,
            key_hash BYTEA NOT NULL,
            since BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            info TEXT NOT NULL
        );
        CREATE TABLE outbox (
            seq BIGSERIAL PRIMARY KEY,
            livestream_id TEXT NOT NULL,
            target TEXT NOT NULL,
            body TEXT NOT NULL,
            attempts BIGINT NOT NULL DEFAULT 0,
            next_at BIGINT NOT NULL,
            claimed_until BIGINT NOT NULL DEFAULT 0
        );
        CREATE INDEX outbox_queue ON outbox (livestream_id, target, seq);
    ",
    },
    // 2: push targets of a livestream (the URL whole: the push needs its key).
    Migration {
        sqlite: "
        CREATE TABLE targets (
            id TEXT PRIMARY KEY,
            livestream_id TEXT NOT NULL,
            name TEXT NOT NULL,
            url TEXT NOT NULL,
            enabled INTEGER NOT NULL,
            enhanced_codecs INTEGER NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE INDEX targets_of ON targets (livestream_id, created_at);
    ",
        postgres: "
        CREATE TABLE targets (
            id TEXT PRIMARY KEY,
            livestream_id TEXT NOT NULL,
            name TEXT NOT NULL,
            url TEXT NOT NULL,
            enabled BIGINT NOT NULL,
            enhanced_codecs BIGINT NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE INDEX targets_of ON targets (livestream_id, created_at);
    ",
    },
    // 3: pull-ins added through the API, per node (resumed at start: `super::pulls`).
    Migration {
        sqlite: "
        CREATE TABLE pulls (
            node TEXT NOT NULL,
            id TEXT NOT NULL,
            app TEXT NOT NULL,
            name TEXT NOT NULL,
            url TEXT NOT NULL,
            ca_file TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (node, id)
        );
    ",
        postgres: "
        CREATE TABLE pulls (
            node TEXT NOT NULL,
            id TEXT NOT NULL,
            app TEXT NOT NULL,
            name TEXT NOT NULL,
            url TEXT NOT NULL,
            ca_file TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (node, id)
        );
    ",
    },
];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the schema up to [`VERSION`]; the version found before.
pub fn migrate(db: &mut dyn Db) -> Result<i64, DbError> {
    db.batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    transaction(db, |db| {
        if db.dialect() == Dialect::Postgres {
            // Any constant: only registry migrations take this lock.
            db.batch("SELECT pg_advisory_xact_lock(7361726)")?;
        }
        let found = match db.query("SELECT version FROM schema_version", &[])?.first() {
            Some(row) => row[0].int(),
            None => {
                db.exec("INSERT INTO schema_version (version) VALUES (0)", &[])?;
                0
            }
        };
        for migration in MIGRATIONS.iter().skip(found.max(0) as usize) {
            db.batch(match db.dialect() {
                Dialect::Sqlite => migration.sqlite,
                Dialect::Postgres => migration.postgres,
            })?;
        }
        db.exec("UPDATE schema_version SET version = $1", &[VERSION.into()])?;
        Ok(found)
    })
}

#[cfg(test)]
mod tests {
    use super::super::db::Sqlite;
    use super::*;

    #[test]
    fn migrating_twice_changes_nothing_the_second_time() {
        let mut db = Sqlite::open(":memory:").expect("open");
        assert_eq!(migrate(&mut db).expect("first"), 0);
        assert_eq!(migrate(&mut db).expect("second"), VERSION);
        assert!(db
            .query("SELECT id FROM livestreams", &[])
            .expect("table")
            .is_empty());
    }
}
