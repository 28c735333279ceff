//! The two databases behind one small interface: statements with `$1`-style parameters,
//! rows of plain values, transactions. [`super::store`] writes its SQL once against it.
//!
//! Values are integers, text and bytes only (booleans are 0/1 integers, times are Unix
//! milliseconds): the subset both SQLite and PostgreSQL type the same way, so one statement
//! means the same on either. SQLite takes `$1` as a *named* parameter numbered by first
//! appearance, which would bind wrongly when `$2` comes first; statements are therefore
//! rewritten to SQLite's own numbered form `?1` before they are prepared.

use postgres::types::{ToSql, Type};

/// One value in a parameter list or a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer (also booleans and times).
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes (key hashes).
    Bytes(Vec<u8>),
    /// SQL NULL (only ever read, never bound).
    Null,
}

impl Value {
    /// The integer, or 0.
    pub fn int(&self) -> i64 {
        match self {
            Value::Int(n) => *n,
            _ => 0,
        }
    }

    /// The text, or "".
    pub fn text(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            _ => String::new(),
        }
    }

    /// The bytes, or none.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Bytes(b) => b.clone(),
            _ => Vec::new(),
        }
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<&str> for Value {
    fn from(t: &str) -> Value {
        Value::Text(t.to_owned())
    }
}

impl From<String> for Value {
    fn from(t: String) -> Value {
        Value::Text(t)
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Value {
        Value::Bytes(b.to_vec())
    }
}

/// A row: its values in the order the statement selected them.
pub type Row = Vec<Value>;

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite's error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL's error.
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// A column of a type the registry never uses.
    #[error("unexpected column type {0}")]
    Type(String),
}

impl DbError {
    /// True when the connection is gone (the server restarted, the network dropped): the
    /// caller opens a new one for its next statement ([`super::reopen_if_lost`]).
    pub fn connection_lost(&self) -> bool {
        matches!(self, DbError::Postgres(e) if e.is_closed())
    }
}

/// Which database a connection is to (the few statements that differ ask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A connection.
pub trait Db: Send {
    /// Which database this is.
    fn dialect(&self) -> Dialect;
    /// Runs a statement; the rows it changed.
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    /// Runs a query; its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError>;
    /// Runs statements without parameters (schema, `BEGIN`, `COMMIT`).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;

    /// Starts a transaction that writes: SQLite takes its write lock now (`IMMEDIATE`), so two
    /// writers never deadlock upgrading; PostgreSQL locks rows with `FOR UPDATE` instead.
    fn begin(&mut self) -> Result<(), DbError> {
        match self.dialect() {
            Dialect::Sqlite => self.batch("BEGIN IMMEDIATE"),
            Dialect::Postgres => self.batch("BEGIN"),
        }
    }

    /// What a `SELECT` adds to lock the rows it read until the transaction ends.
    fn for_update(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}

/// Runs `f` in a transaction: committed when it returns `Ok`, rolled back otherwise.
pub fn transaction<T, E: From<DbError>>(
    db: &mut dyn Db,
    f: impl FnOnce(&mut dyn Db) -> Result<T, E>,
) -> Result<T, E> {
    db.begin()?;
    match f(db) {
        Ok(value) => {
            db.batch("COMMIT")?;
            Ok(value)
        }
        Err(e) => {
            // The error that matters is `e`; a failed rollback ends with the connection.
            let _ = db.batch("ROLLBACK");
            Err(e)
        }
    }
}

/// An embedded SQLite file.
pub struct Sqlite(rusqlite::Connection);

impl Sqlite {
    /// Opens (creates) the file: WAL, so readers never wait for the writer, and a busy
    /// timeout, so the webhook sender's connection and the registry's take turns.
    pub fn open(path: &str) -> Result<Sqlite, DbError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Sqlite(conn))
    }
}

/// `$1` → `?1` (see the module doc); `$` never appears in the registry's SQL otherwise.
fn numbered(sql: &str) -> String {
    sql.replace('$', "?")
}

fn sqlite_params(params: &[Value]) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value as V;
    params
        .iter()
        .map(|p| match p {
            Value::Int(n) => V::Integer(*n),
            Value::Text(t) => V::Text(t.clone()),
            Value::Bytes(b) => V::Blob(b.clone()),
            Value::Null => V::Null,
        })
        .collect()
}

impl Db for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut statement = self.0.prepare_cached(&numbered(sql))?;
        let changed = statement.execute(rusqlite::params_from_iter(sqlite_params(params)))?;
        Ok(changed as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        use rusqlite::types::ValueRef;
        let mut statement = self.0.prepare_cached(&numbered(sql))?;
        let columns = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(sqlite_params(params)))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
                    ValueRef::Real(r) => return Err(DbError::Type(format!("real {r}"))),
                });
            }
            out.push(values);
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        Ok(self.0.execute_batch(sql)?)
    }
}

/// A PostgreSQL connection (the sync client: its small tokio runtime lives on this thread).
pub struct Postgres(postgres::Client);

impl Postgres {
    /// Connects.
    pub fn connect(url: &str) -> Result<Postgres, DbError> {
        Ok(Postgres(postgres::Client::connect(url, postgres::NoTls)?))
    }
}

fn pg_params(params: &[Value]) -> Vec<Box<dyn ToSql + Sync>> {
    params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync> {
            match p {
                Value::Int(n) => Box::new(*n),
                Value::Text(t) => Box::new(t.clone()),
                Value::Bytes(b) => Box::new(b.clone()),
                Value::Null => Box::new(Option::<i64>::None),
            }
        })
        .collect()
}

impl Db for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let owned = pg_params(params);
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|p| p.as_ref()).collect();
        Ok(self.0.execute(sql, &refs)?)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let owned = pg_params(params);
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|p| p.as_ref()).collect();
        let rows = self.0.query(sql, &refs)?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| pg_value(row, i))
                    .collect::<Result<Row, DbError>>()
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        Ok(self.0.batch_execute(sql)?)
    }
}

fn pg_value(row: &postgres::Row, i: usize) -> Result<Value, DbError> {
    let ty = row.columns()[i].type_().clone();
    let value = if ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)?.map(Value::Int)
    } else if ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)?
            .map(|n| Value::Int(i64::from(n)))
    } else if ty == Type::TEXT || ty == Type::VARCHAR {
        row.try_get::<_, Option<String>>(i)?.map(Value::Text)
    } else if ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes)
    } else {
        return Err(DbError::Type(ty.name().to_owned()));
    };
    Ok(value.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_binds_numbered_parameters_in_any_order() {
        let mut db = Sqlite::open(":memory:").expect("open");
        db.batch("CREATE TABLE t (a INTEGER, b TEXT, c BLOB)")
            .expect("create");
        let changed = db
            .exec(
                "INSERT INTO t (b, a, c) VALUES ($2, $1, $3)",
                &[7.into(), "x".into(), (&b"k"[..]).into()],
            )
            .expect("insert");
        assert_eq!(changed, 1);
        let rows = db
            .query("SELECT a, b, c, NULL FROM t WHERE a = $1", &[7.into()])
            .expect("select");
        assert_eq!(
            rows,
            vec![vec![
                Value::Int(7),
                Value::Text("x".into()),
                Value::Bytes(b"k".to_vec()),
                Value::Null
            ]]
        );
    }

    #[test]
    fn a_failed_transaction_leaves_nothing() {
        let mut db = Sqlite::open(":memory:").expect("open");
        db.batch("CREATE TABLE t (a INTEGER)").expect("create");
        let result: Result<(), DbError> = transaction(&mut db, |db| {
            db.exec("INSERT INTO t (a) VALUES (1)", &[])?;
            db.exec("INSERT INTO nope (a) VALUES (1)", &[])?;
            Ok(())
        });
        assert!(result.is_err());
        assert!(db.query("SELECT a FROM t", &[]).expect("q").is_empty());
    }
}
