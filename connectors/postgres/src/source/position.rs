//! Where a `postgres-cdc` source stands, as the log stores it.
//!
//! Positions order as bytes (see [`plexus_connector::Position`]). Three big-endian
//! integers come first and decide the order:
//!
//! - snapshot: `[0, table ordinal, rows read from the table]`, followed by a JSON suffix
//!   with the table's name and the key of the last row read (for resuming), and the
//!   slot's consistent point;
//! - streaming: `[1, commit LSN, change ordinal within the transaction]`, followed,
//!   while a table is being re-snapshotted, by a JSON suffix saying how far that got.
//!
//! The ordinal counts every record a transaction produced (tombstones and transaction
//! events included) from 1, so a transaction cut across batches resumes exactly.

use plexus_connector::Position;
use serde::{Deserialize, Serialize};

use crate::replication::Lsn;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdcPosition {
    Snapshot(SnapshotPosition),
    Stream {
        commit_lsn: Lsn,
        ordinal: u64,
        resnapshot: Option<ResnapshotState>,
    },
}

/// A re-snapshot in progress (see `resnapshot`): what is left to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResnapshotState {
    /// `schema.table`s still to read, in order; the first is being read.
    pub tables: Vec<String>,
    /// The key of the last row of the first table read so far (empty: none yet).
    pub last_key: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPosition {
    #[serde(skip)]
    pub table_ordinal: u64,
    #[serde(skip)]
    pub rows: u64,
    /// `schema.table`.
    pub table: String,
    /// The key columns' values of the last row read, in PostgreSQL's text form.
    pub last_key: Vec<String>,
    /// The slot's consistent point, where streaming starts after the snapshot.
    pub consistent_lsn: String,
}

impl CdcPosition {
    pub fn encode(&self) -> Position {
        match self {
            CdcPosition::Stream {
                commit_lsn,
                ordinal,
                resnapshot: None,
            } => Position::from_parts(&[1, commit_lsn.0, *ordinal]),
            CdcPosition::Stream {
                commit_lsn,
                ordinal,
                resnapshot: Some(state),
            } => {
                let mut bytes = Position::from_parts(&[1, commit_lsn.0, *ordinal]).as_bytes().to_vec();
                bytes.extend(serde_json::to_vec(state).unwrap_or_default());
                Position::from_bytes(bytes)
            }
            CdcPosition::Snapshot(snapshot) => {
                let mut bytes = Position::from_parts(&[0, snapshot.table_ordinal, snapshot.rows])
                    .as_bytes()
                    .to_vec();
                // Serialising plain strings cannot fail.
                bytes.extend(serde_json::to_vec(snapshot).unwrap_or_default());
                Position::from_bytes(bytes)
            }
        }
    }

    pub fn decode(position: &Position) -> Result<CdcPosition, String> {
        let bytes = position.as_bytes();
        let word = |i: usize| {
            bytes
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| format!("position {position} is not a postgres-cdc position: too short"))
        };
        match word(0)? {
            0 => {
                let mut snapshot: SnapshotPosition = serde_json::from_slice(&bytes[24..])
                    .map_err(|e| format!("position {position} has an unreadable snapshot part: {e}"))?;
                snapshot.table_ordinal = word(1)?;
                snapshot.rows = word(2)?;
                Ok(CdcPosition::Snapshot(snapshot))
            }
            1 => Ok(CdcPosition::Stream {
                commit_lsn: Lsn(word(1)?),
                ordinal: word(2)?,
                resnapshot: match bytes.get(24..) {
                    Some(rest) if !rest.is_empty() => Some(
                        serde_json::from_slice(rest)
                            .map_err(|e| format!("position {position} has an unreadable re-snapshot part: {e}"))?,
                    ),
                    _ => None,
                },
            }),
            _ => Err(format!("position {position} is not a postgres-cdc position")),
        }
    }

    /// As the REST API shows it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            CdcPosition::Stream {
                commit_lsn,
                ordinal,
                resnapshot,
            } => {
                let mut json = serde_json::json!({ "lsn": commit_lsn.to_string(), "ordinal": ordinal });
                if let Some(state) = resnapshot {
                    json["resnapshot"] = serde_json::json!({ "tables": state.tables, "last_key": state.last_key });
                }
                json
            }
            CdcPosition::Snapshot(s) => serde_json::json!({
                "snapshot": { "table": s.table, "table_ordinal": s.table_ordinal, "rows": s.rows, "last_key": s.last_key, "consistent_lsn": s.consistent_lsn }
            }),
        }
    }

    pub fn from_json(value: &serde_json::Value) -> Result<CdcPosition, String> {
        if let Some(snapshot) = value.get("snapshot") {
            let mut position: SnapshotPosition =
                serde_json::from_value(snapshot.clone()).map_err(|e| format!("bad snapshot position: {e}"))?;
            let number = |name: &str| {
                snapshot
                    .get(name)
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| format!("snapshot position needs `{name}`"))
            };
            position.table_ordinal = number("table_ordinal")?;
            position.rows = number("rows")?;
            return Ok(CdcPosition::Snapshot(position));
        }
        let lsn = value
            .get("lsn")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("expected {{\"lsn\": \"0/16B3748\", \"ordinal\": N}}, found {value}"))?;
        let commit_lsn: Lsn = lsn
            .parse()
            .map_err(|e: crate::replication::ParseLsnError| e.to_string())?;
        let ordinal = value
            .get("ordinal")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(u64::MAX);
        let resnapshot = value
            .get("resnapshot")
            .map(|r| serde_json::from_value(r.clone()).map_err(|e| format!("bad re-snapshot state: {e}")))
            .transpose()?;
        Ok(CdcPosition::Stream {
            commit_lsn,
            ordinal,
            resnapshot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(table_ordinal: u64, rows: u64, key: &str) -> CdcPosition {
        CdcPosition::Snapshot(SnapshotPosition {
            table_ordinal,
            rows,
            table: "public.t".into(),
            last_key: vec![key.into()],
            consistent_lsn: "0/1".into(),
        })
    }

    #[test]
    fn positions_round_trip_and_order() {
        let all = [
            snapshot(0, 5, "zzz"),
            snapshot(0, 10, "a"),
            snapshot(1, 1, "a"),
            CdcPosition::Stream {
                commit_lsn: Lsn(5),
                ordinal: 3,
                resnapshot: None,
            },
            CdcPosition::Stream {
                commit_lsn: Lsn(5),
                ordinal: 4,
                resnapshot: Some(ResnapshotState {
                    tables: vec!["public.t".into(), "s.u".into()],
                    last_key: vec!["9".into()],
                }),
            },
            CdcPosition::Stream {
                commit_lsn: Lsn(6),
                ordinal: 1,
                resnapshot: None,
            },
        ];
        for pair in all.windows(2) {
            assert!(pair[0].encode() < pair[1].encode(), "{pair:?}");
        }
        for p in &all {
            assert_eq!(&CdcPosition::decode(&p.encode()).unwrap(), p);
            assert_eq!(&CdcPosition::from_json(&p.to_json()).unwrap(), p);
        }
        assert!(CdcPosition::decode(&Position::from_u64(3)).is_err());
    }
}
