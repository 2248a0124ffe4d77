//! Ordinary SQL with the server (sqlx): checks, tables, publication, slot, heartbeats.

use std::collections::HashMap;
use std::sync::Arc;

use plexus_connector::ConnectorError;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{Connection, Row};

use crate::client::{ConnectOptions, SslMode};
use crate::replication::Lsn;
use crate::source::config::{TableName, quote_identifier};
use crate::source::table::{Column, TableInfo};
use crate::types::PgType;

/// Opens an ordinary connection with the source's settings.
pub async fn connect(options: &ConnectOptions) -> Result<PgConnection, ConnectorError> {
    let mut pg = PgConnectOptions::new()
        .host(&options.host)
        .port(options.port)
        .username(&options.user)
        .database(&options.database)
        .application_name(&options.application_name)
        .ssl_mode(match options.sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        })
        .options(options.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(password) = &options.password {
        pg = pg.password(password);
    }
    if let Some(root) = &options.sslrootcert {
        pg = pg.ssl_root_cert(root);
    }
    let connect = PgConnection::connect_with(&pg);
    match tokio::time::timeout(options.connect_timeout, connect).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(sql_error(
            &format!("connecting to {}:{}", options.host, options.port),
            e,
        )),
        Err(_) => Err(ConnectorError::retriable(format!(
            "connecting to {}:{} timed out after {:?}",
            options.host, options.port, options.connect_timeout
        ))),
    }
}

/// Turns a sqlx error into a connector error that says what to do.
pub fn sql_error(doing: &str, error: sqlx::Error) -> ConnectorError {
    let code = error.as_database_error().and_then(|e| e.code().map(|c| c.into_owned()));
    let message = match &error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    };
    if is_tls_failure(&error) {
        return ConnectorError::config(format!(
            "{doing}: {message}; check `sslmode` and `sslrootcert` (the CA that signed the server's certificate), \
             and that `host` is a name the certificate holds"
        ))
        .with_source(error);
    }
    match code.as_deref() {
        Some("28P01" | "28000") => ConnectorError::config(format!(
            "{doing}: {message}; check `user` and `password`, and that pg_hba.conf lets this user connect"
        )),
        Some("42501") => ConnectorError::config(format!(
            "{doing}: {message}; grant the privilege named above to the user"
        )),
        Some("3D000") => ConnectorError::config(format!("{doing}: {message}; check `database`")),
        Some(code) if code.starts_with("08") || code.starts_with("57") || code.starts_with("53") => {
            ConnectorError::retriable(format!("{doing}: {message}"))
        }
        Some(_) => ConnectorError::fatal(format!("{doing}: {message}")),
        None => ConnectorError::retriable(format!("{doing}: {message}")),
    }
    .with_source(error)
}

/// A TLS handshake that failed (a certificate refused, TLS refused by the server):
/// retrying cannot help. sqlx reports rustls' errors inside an I/O error.
fn is_tls_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()),
        _ => false,
    }
}

/// Checks what logical replication needs, with the exact fix when something is missing.
pub async fn check_server(conn: &mut PgConnection, user: &str, replication: bool) -> Result<u32, ConnectorError> {
    let row = sqlx::query(
        "SELECT current_setting('wal_level'), current_setting('server_version_num')::int4, \
         (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| sql_error("reading the server settings", e))?;
    let wal_level: String = row.try_get(0).map_err(|e| sql_error("reading wal_level", e))?;
    let version: i32 = row.try_get(1).map_err(|e| sql_error("reading server_version_num", e))?;
    let may_replicate: Option<bool> = row
        .try_get(2)
        .map_err(|e| sql_error("reading the user's attributes", e))?;
    if !replication {
        return Ok(u32::try_from(version).unwrap_or(0));
    }
    if wal_level != "logical" {
        return Err(ConnectorError::config(format!(
            "the server's wal_level is `{wal_level}`, and change data capture needs `logical`: run \
             `ALTER SYSTEM SET wal_level = logical;` as a superuser and restart PostgreSQL"
        )));
    }
    if may_replicate != Some(true) {
        return Err(ConnectorError::config(format!(
            "user `{user}` may not read replication slots: run `ALTER ROLE {} REPLICATION;` as a superuser",
            quote_identifier(user)
        )));
    }
    Ok(u32::try_from(version).unwrap_or(0))
}

/// Reads the captured tables: columns, key, replica identity. A table that cannot be
/// captured fully is an error naming the table and the fix.
pub async fn load_tables(
    conn: &mut PgConnection,
    database: &str,
    tables: &[TableName],
    types: &mut TypeCache,
    changes: bool,
) -> Result<Vec<Arc<TableInfo>>, ConnectorError> {
    let mut loaded = Vec::with_capacity(tables.len());
    for table in tables {
        let info = if changes {
            load_table(conn, database, table, types).await?
        } else {
            read_table(conn, database, table, types).await?
        };
        loaded.push(Arc::new(info));
    }
    Ok(loaded)
}

/// A table whose changes are captured: [`read_table`], refusing a table whose updates
/// and deletes the WAL cannot identify.
pub async fn load_table(
    conn: &mut PgConnection,
    database: &str,
    table: &TableName,
    types: &mut TypeCache,
) -> Result<TableInfo, ConnectorError> {
    let (info, identity) = describe_table(conn, database, table, types).await?;
    let fix = format!(
        "add a primary key (`ALTER TABLE {0} ADD PRIMARY KEY (...);`) or let PostgreSQL log whole old rows \
         (`ALTER TABLE {0} REPLICA IDENTITY FULL;`)",
        table.quoted()
    );
    match identity.as_str() {
        "n" => {
            return Err(ConnectorError::config(format!(
                "table {table} has REPLICA IDENTITY NOTHING: its updates and deletes cannot be captured \
                 (and PostgreSQL refuses them once it is published); {fix}"
            )));
        }
        "d" if info.key.is_empty() => {
            return Err(ConnectorError::config(format!(
                "table {table} has no primary key and no replica identity: its updates and deletes cannot be \
                 captured (and PostgreSQL refuses them once it is published); {fix}"
            )));
        }
        _ => {}
    }
    Ok(info)
}

/// A table that is only read (a bulk export): columns and key, whatever its replica
/// identity.
pub async fn read_table(
    conn: &mut PgConnection,
    database: &str,
    table: &TableName,
    types: &mut TypeCache,
) -> Result<TableInfo, ConnectorError> {
    Ok(describe_table(conn, database, table, types).await?.0)
}

/// The table's shape, and its replica identity (`relreplident`).
async fn describe_table(
    conn: &mut PgConnection,
    database: &str,
    table: &TableName,
    types: &mut TypeCache,
) -> Result<(TableInfo, String), ConnectorError> {
    let doing = format!("reading table {table}");
    let row = sqlx::query(
        "SELECT c.oid::int8, c.relreplident::text, c.relkind::text, has_table_privilege(c.oid, 'SELECT') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(&table.schema)
    .bind(&table.name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| sql_error(&doing, e))?
    .ok_or_else(|| {
        ConnectorError::config(format!(
            "table {table} does not exist in database `{database}`: check `tables`"
        ))
    })?;
    let oid: i64 = row.try_get(0).map_err(|e| sql_error(&doing, e))?;
    let identity: String = row.try_get(1).map_err(|e| sql_error(&doing, e))?;
    let kind: String = row.try_get(2).map_err(|e| sql_error(&doing, e))?;
    let readable: bool = row.try_get(3).map_err(|e| sql_error(&doing, e))?;
    if !matches!(kind.as_str(), "r" | "p") {
        return Err(ConnectorError::config(format!(
            "{table} is not a table (relkind `{kind}`): only tables and partitioned tables can be captured"
        )));
    }
    if !readable {
        return Err(ConnectorError::config(format!(
            "the user may not read {table}: run `GRANT SELECT ON {} TO <user>;`",
            table.quoted()
        )));
    }
    let rows = sqlx::query(
        "SELECT attname::text, atttypid::int8, atttypmod FROM pg_attribute \
         WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| sql_error(&doing, e))?;
    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0).map_err(|e| sql_error(&doing, e))?;
        let type_oid: i64 = row.try_get(1).map_err(|e| sql_error(&doing, e))?;
        let typmod: i32 = row.try_get(2).map_err(|e| sql_error(&doing, e))?;
        let ty = types.resolve(conn, type_oid as u32, typmod).await?;
        columns.push(Column { name, ty });
    }
    let key_names = key_columns(conn, oid, &doing).await?;
    let key: Vec<usize> = key_names
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    Ok((TableInfo::new(table.clone(), database, columns, key), identity))
}

/// The primary key's columns in key order, or else the replica identity index's.
pub async fn key_columns(conn: &mut PgConnection, oid: i64, doing: &str) -> Result<Vec<String>, ConnectorError> {
    let rows = sqlx::query(
        "SELECT a.attname::text, i.indisprimary FROM pg_index i \
         CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = $1 AND (i.indisprimary OR i.indisreplident) \
         ORDER BY i.indisprimary DESC, k.ord",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| sql_error(doing, e))?;
    let mut primary = Vec::new();
    let mut identity = Vec::new();
    for row in rows {
        let name: String = row.try_get(0).map_err(|e| sql_error(doing, e))?;
        let is_primary: bool = row.try_get(1).map_err(|e| sql_error(doing, e))?;
        if is_primary {
            primary.push(name)
        } else {
            identity.push(name)
        }
    }
    Ok(if primary.is_empty() { identity } else { primary })
}

/// Creates the publication for exactly `tables`, or brings an existing one to them.
pub async fn ensure_publication(
    conn: &mut PgConnection,
    publication: &str,
    tables: &[TableName],
) -> Result<(), ConnectorError> {
    let doing = format!("setting up publication `{publication}`");
    let list = tables.iter().map(TableName::quoted).collect::<Vec<_>>().join(", ");
    let exists = sqlx::query("SELECT 1 FROM pg_publication WHERE pubname = $1")
        .bind(publication)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| sql_error(&doing, e))?
        .is_some();
    if !exists {
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {list} WITH (publish_via_partition_root = true)",
            quote_identifier(publication)
        );
        return sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map(drop)
            .map_err(|e| publication_error(&doing, publication, e));
    }
    let rows = sqlx::query("SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1")
        .bind(publication)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| sql_error(&doing, e))?;
    let mut current: Vec<TableName> = rows
        .iter()
        .filter_map(|r| {
            Some(TableName {
                schema: r.try_get(0).ok()?,
                name: r.try_get(1).ok()?,
            })
        })
        .collect();
    current.sort();
    if current != tables {
        tracing::info!(publication, tables = %list, "Updating the publication's tables.");
        let sql = format!("ALTER PUBLICATION {} SET TABLE {list}", quote_identifier(publication));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(|e| publication_error(&doing, publication, e))?;
    }
    Ok(())
}

fn publication_error(doing: &str, publication: &str, error: sqlx::Error) -> ConnectorError {
    let denied = error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "42501");
    if denied {
        ConnectorError::config(format!(
            "{doing}: {error}; the user needs CREATE on the database and ownership of the tables, or a superuser \
             can create it: `CREATE PUBLICATION {} FOR TABLE ... WITH (publish_via_partition_root = true);`",
            quote_identifier(publication)
        ))
    } else {
        sql_error(doing, error)
    }
}

/// What the server says about a replication slot.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub active_pid: Option<i32>,
    pub confirmed_flush: Option<Lsn>,
}

pub async fn slot_state(conn: &mut PgConnection, slot: &str) -> Result<Option<SlotState>, ConnectorError> {
    let row = sqlx::query(
        "SELECT plugin::text, database::text, active_pid, confirmed_flush_lsn::text FROM pg_replication_slots \
         WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| sql_error("reading the replication slot", e))?;
    let Some(row) = row else { return Ok(None) };
    let lsn: Option<String> = row
        .try_get(3)
        .map_err(|e| sql_error("reading the replication slot", e))?;
    Ok(Some(SlotState {
        plugin: row
            .try_get(0)
            .map_err(|e| sql_error("reading the replication slot", e))?,
        database: row
            .try_get(1)
            .map_err(|e| sql_error("reading the replication slot", e))?,
        active_pid: row
            .try_get(2)
            .map_err(|e| sql_error("reading the replication slot", e))?,
        confirmed_flush: lsn.and_then(|l| l.parse().ok()),
    }))
}

pub async fn drop_slot(conn: &mut PgConnection, slot: &str) -> Result<(), ConnectorError> {
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(slot)
        .execute(&mut *conn)
        .await
        .map(drop)
        .map_err(|e| sql_error(&format!("dropping replication slot `{slot}`"), e))
}

/// Writes a heartbeat into the WAL, so the slot can advance while the captured tables
/// are idle.
pub async fn emit_heartbeat(conn: &mut PgConnection) -> Result<(), ConnectorError> {
    sqlx::query("SELECT pg_logical_emit_message(false, 'plexus.heartbeat', '')")
        .execute(&mut *conn)
        .await
        .map(drop)
        .map_err(|e| sql_error("writing a heartbeat", e))
}

/// Types by OID: built-ins directly, user types (enums, domains, their arrays) from
/// `pg_type` once each.
#[derive(Debug, Default)]
pub struct TypeCache {
    types: HashMap<(u32, i32), PgType>,
}

impl TypeCache {
    pub async fn resolve(&mut self, conn: &mut PgConnection, oid: u32, typmod: i32) -> Result<PgType, ConnectorError> {
        if let Some(ty) = PgType::from_builtin(oid, typmod) {
            return Ok(ty);
        }
        if let Some(ty) = self.types.get(&(oid, typmod)) {
            return Ok(ty.clone());
        }
        let resolved = self.lookup(conn, oid, typmod).await?;
        self.types.insert((oid, typmod), resolved.clone());
        Ok(resolved)
    }

    async fn lookup(&mut self, conn: &mut PgConnection, oid: u32, typmod: i32) -> Result<PgType, ConnectorError> {
        let (mut oid, mut typmod) = (oid, typmod);
        let mut array = false;
        // Domains over domains, and one array level: a few steps at most.
        for _ in 0..16 {
            if let Some(ty) = PgType::from_builtin(oid, typmod) {
                return Ok(if array { PgType::Array(Box::new(ty)) } else { ty });
            }
            let row = sqlx::query(
                "SELECT typname::text, typtype::text, typbasetype::int8, typtypmod, typelem::int8, typcategory::text \
                 FROM pg_type WHERE oid = $1",
            )
            .bind(i64::from(oid))
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| sql_error("reading a column type", e))?;
            let Some(row) = row else {
                return Ok(PgType::Other {
                    oid,
                    name: format!("type {oid}"),
                });
            };
            let get_text = |i: usize| row.try_get::<String, _>(i).unwrap_or_default();
            let name = get_text(0);
            let kind = get_text(1);
            let base: i64 = row.try_get(2).unwrap_or(0);
            let base_typmod: i32 = row.try_get(3).unwrap_or(-1);
            let element: i64 = row.try_get(4).unwrap_or(0);
            let category = get_text(5);
            if kind == "d" && base != 0 {
                (oid, typmod) = (base as u32, base_typmod);
                continue;
            }
            if category == "A" && element != 0 && !array {
                array = true;
                (oid, typmod) = (element as u32, -1);
                continue;
            }
            let ty = if kind == "e" {
                PgType::Enum(name)
            } else {
                PgType::Other { oid, name }
            };
            return Ok(if array { PgType::Array(Box::new(ty)) } else { ty });
        }
        Ok(PgType::Other {
            oid,
            name: format!("type {oid}"),
        })
    }
}
