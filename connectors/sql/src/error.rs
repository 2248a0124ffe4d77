//! What can go wrong in the `sql` sink.

use plexus_connector::ConnectorError;

/// An error of the `sql` sink.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// A setting that cannot work; the message names it.
    #[error("{0}")]
    Config(String),
    /// The target cannot be reached or dropped the connection (down, restarting, a
    /// network fault): worth retrying.
    #[error("{context}: {source}")]
    Unavailable {
        context: String,
        #[source]
        source: sqlx::Error,
    },
    /// The target refused the sink's user: wrong credentials or missing privileges.
    #[error("{message}")]
    Access {
        message: String,
        #[source]
        source: sqlx::Error,
    },
    /// A statement failed for a reason retrying cannot fix (a table the sink cannot
    /// create, an unexpected SQL error).
    #[error("{context}: {source}")]
    Statement {
        context: String,
        #[source]
        source: sqlx::Error,
    },
    /// The target table and the records disagree in a way the configured policy says
    /// must stop the sink (a column's type changed, a column was dropped).
    #[error("{0}")]
    Schema(String),
    /// What the target holds contradicts what the sink expects (an offsets table of
    /// another shape).
    #[error("{0}")]
    Inconsistent(String),
}

impl SqlError {
    /// Classifies a driver error: connection trouble is retriable, refused access and
    /// everything else fatal.
    pub(crate) fn from_sqlx(context: impl Into<String>, source: sqlx::Error) -> SqlError {
        let context = context.into();
        match classify(&source) {
            Class::Unavailable => SqlError::Unavailable { context, source },
            Class::Auth => SqlError::Access {
                message: format!(
                    "{context}: the target refused the user's credentials ({source}); check the user and password in \
                     `url` (or the `password` setting)"
                ),
                source,
            },
            Class::Privilege => SqlError::Access {
                message: format!(
                    "{context}: the sink's user lacks a privilege ({source}); it needs CREATE on the target schema \
                     (or database) and SELECT, INSERT, UPDATE, DELETE on the tables it writes, including the offsets \
                     table"
                ),
                source,
            },
            Class::Data | Class::Other => SqlError::Statement { context, source },
        }
    }
}

impl From<SqlError> for ConnectorError {
    fn from(error: SqlError) -> ConnectorError {
        let message = error.to_string();
        match error {
            SqlError::Unavailable { source, .. } => ConnectorError::retriable(message).with_source(source),
            SqlError::Access { source, .. } | SqlError::Statement { source, .. } => {
                ConnectorError::fatal(message).with_source(source)
            }
            SqlError::Config(_) | SqlError::Schema(_) | SqlError::Inconsistent(_) => ConnectorError::fatal(message),
        }
    }
}

/// What kind of failure a driver error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The connection or the server: retry later.
    Unavailable,
    /// Wrong user or password.
    Auth,
    /// A missing privilege.
    Privilege,
    /// The row itself: a constraint it violates, a value the column cannot hold.
    /// Dead-letter the row, apply the others.
    Data,
    Other,
}

pub(crate) fn classify(error: &sqlx::Error) -> Class {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Class::Unavailable,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                return classify_sqlstate(pg.code());
            }
            if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                return classify_mysql(my.number());
            }
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                let code: i32 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
                return match code & 0xff {
                    // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN
                    5 | 6 | 10 | 13 | 14 => Class::Unavailable,
                    // SQLITE_PERM, SQLITE_READONLY, SQLITE_AUTH
                    3 | 8 | 23 => Class::Privilege,
                    // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE
                    18 | 19 | 20 | 25 => Class::Data,
                    _ => Class::Other,
                };
            }
            Class::Other
        }
        _ => Class::Other,
    }
}

fn classify_sqlstate(code: &str) -> Class {
    match code.get(..2) {
        // connection exception, insufficient resources, operator intervention, system error
        Some("08" | "53" | "57" | "58") => Class::Unavailable,
        // serialization failure, deadlock: the transaction may be retried
        Some("40") => Class::Unavailable,
        Some("28") => Class::Auth,
        Some("22" | "23") => Class::Data,
        _ if code == "42501" => Class::Privilege,
        // cannot coerce / invalid text representation of the target type
        _ if code == "42804" => Class::Data,
        _ => Class::Other,
    }
}

fn classify_mysql(number: u16) -> Class {
    match number {
        // access denied for user (password)
        1045 | 1698 => Class::Auth,
        // access denied to a database, a table, a column, a command
        1044 | 1142 | 1143 | 1227 | 1370 => Class::Privilege,
        // lock wait timeout, deadlock, server shutdown, too many connections, read only
        1205 | 1213 | 1053 | 1040 | 1836 | 1290 => Class::Unavailable,
        // duplicate key, NOT NULL, foreign keys, check constraints, out of range, too
        // long, truncated, wrong value for the type, invalid JSON, bad datetime
        1048 | 1062 | 1216 | 1217 | 1264 | 1265 | 1292 | 1366 | 1367 | 1406 | 1451 | 1452 | 1690 | 3140 | 3819
        | 4025 | 4038 | 1411 | 1918 | 1416 => Class::Data,
        _ => Class::Other,
    }
}
