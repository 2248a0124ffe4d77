//! Changes of a streamed (still uncommitted) transaction, kept until it commits: in
//! memory up to a threshold, then in a file, so a transaction of millions of rows takes
//! disk, not memory. A subtransaction that rolls back is dropped on replay.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use plexus_connector::ConnectorError;

use crate::source::envelope::{Change, Op};
use crate::source::table::TableInfo;

#[derive(Debug)]
pub struct StreamedTx {
    memory: Vec<Change>,
    memory_bytes: u64,
    threshold: u64,
    file: Option<(PathBuf, BufWriter<File>)>,
    dir: PathBuf,
    name: String,
    aborted: HashSet<u32>,
}

impl StreamedTx {
    /// `name` makes the spill file's name unique (connector and top-level xid).
    pub fn new(dir: &Path, name: String, threshold: u64) -> StreamedTx {
        StreamedTx {
            memory: Vec::new(),
            memory_bytes: 0,
            threshold,
            file: None,
            dir: dir.to_owned(),
            name,
            aborted: HashSet::new(),
        }
    }

    pub fn push(&mut self, change: Change) -> Result<(), ConnectorError> {
        if let Some((path, file)) = &mut self.file {
            return write_change(file, &change).map_err(|e| spill_error(path, e));
        }
        self.memory_bytes += (change.body.len() + change.key.as_ref().map_or(0, Bytes::len) + 64) as u64;
        self.memory.push(change);
        if self.memory_bytes > self.threshold {
            let path = self.dir.join(format!("plexus-spill-{}.bin", self.name));
            let mut file = BufWriter::with_capacity(
                1 << 20,
                File::options()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| spill_error(&path, e))?,
            );
            for change in self.memory.drain(..) {
                write_change(&mut file, &change).map_err(|e| spill_error(&path, e))?;
            }
            self.memory_bytes = 0;
            tracing::debug!(path = %path.display(), "A large transaction spills to disk.");
            self.file = Some((path, file));
        }
        Ok(())
    }

    /// A subtransaction rolled back: its changes are left out when the transaction
    /// commits.
    pub fn abort_subtransaction(&mut self, xid: u32) {
        self.memory.retain(|c| c.xid != xid);
        self.aborted.insert(xid);
    }

    /// The committed changes, in order.
    pub fn into_changes(self, schemas: &HashMap<Arc<str>, Arc<TableInfo>>) -> Result<Changes, ConnectorError> {
        let source = match self.file {
            None => Source::Memory(self.memory.into_iter()),
            Some((path, writer)) => {
                let file = writer.into_inner().map_err(|e| spill_error(&path, e.into_error()))?;
                let mut reader = BufReader::with_capacity(1 << 20, file);
                std::io::Seek::rewind(&mut reader).map_err(|e| spill_error(&path, e))?;
                // The file is unlinked now; the open handle keeps it readable.
                let _ = std::fs::remove_file(&path);
                Source::File { reader, path }
            }
        };
        Ok(Changes {
            source,
            aborted: self.aborted,
            schemas: schemas.clone(),
        })
    }

    /// Discards everything (the transaction rolled back).
    pub fn discard(self) {
        if let Some((path, _)) = self.file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The changes of a committed streamed transaction.
#[derive(Debug)]
pub struct Changes {
    source: Source,
    aborted: HashSet<u32>,
    schemas: HashMap<Arc<str>, Arc<TableInfo>>,
}

#[derive(Debug)]
enum Source {
    Memory(std::vec::IntoIter<Change>),
    File { reader: BufReader<File>, path: PathBuf },
}

impl Changes {
    pub fn next_change(&mut self) -> Result<Option<Change>, ConnectorError> {
        loop {
            let change = match &mut self.source {
                Source::Memory(changes) => changes.next(),
                Source::File { reader, path } => {
                    read_change(reader, &self.schemas).map_err(|e| spill_error(path, e))?
                }
            };
            match change {
                Some(change) if self.aborted.contains(&change.xid) => continue,
                other => return Ok(other),
            }
        }
    }
}

fn spill_error(path: &Path, error: std::io::Error) -> ConnectorError {
    ConnectorError::retriable(format!(
        "spilling a large transaction to {} failed: {error}; check `spill_dir` and free disk space",
        path.display()
    ))
    .with_source(error)
}

// A frame: xid u32, op u8, lsn u64, schema id (u16 length), key (u32 length, u32::MAX
// for none), body (u32 length); integers little-endian. The file never outlives the
// process that wrote it, so the format has no version.
fn write_change(out: &mut impl Write, change: &Change) -> std::io::Result<()> {
    out.write_all(&change.xid.to_le_bytes())?;
    out.write_all(&[change.op.code()])?;
    out.write_all(&change.lsn.to_le_bytes())?;
    let id = change.table.schema_id.as_bytes();
    out.write_all(&(id.len() as u16).to_le_bytes())?;
    out.write_all(id)?;
    match &change.key {
        Some(key) => {
            out.write_all(&(key.len() as u32).to_le_bytes())?;
            out.write_all(key)?;
        }
        None => out.write_all(&u32::MAX.to_le_bytes())?,
    }
    out.write_all(&(change.body.len() as u32).to_le_bytes())?;
    out.write_all(&change.body)
}

fn read_change(input: &mut impl Read, schemas: &HashMap<Arc<str>, Arc<TableInfo>>) -> std::io::Result<Option<Change>> {
    let mut xid = [0u8; 4];
    match input.read_exact(&mut xid) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut fixed = [0u8; 11];
    input.read_exact(&mut fixed)?;
    let corrupt = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("spill file: {what}"));
    let op = Op::from_code(fixed[0]).ok_or_else(|| corrupt("bad op"))?;
    let lsn = u64::from_le_bytes(fixed[1..9].try_into().map_err(|_| corrupt("lsn"))?);
    let id_len = u16::from_le_bytes([fixed[9], fixed[10]]) as usize;
    let mut id = vec![0u8; id_len];
    input.read_exact(&mut id)?;
    let id = String::from_utf8(id).map_err(|_| corrupt("schema id"))?;
    let table = schemas
        .get(id.as_str())
        .cloned()
        .ok_or_else(|| corrupt("unknown schema id"))?;
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let key = match u32::from_le_bytes(len) {
        u32::MAX => None,
        n => {
            let mut key = vec![0u8; n as usize];
            input.read_exact(&mut key)?;
            Some(Bytes::from(key))
        }
    };
    input.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut body)?;
    Ok(Some(Change {
        table,
        op,
        key,
        body,
        lsn,
        xid: u32::from_le_bytes(xid),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::config::TableName;
    use crate::source::table::Column;
    use crate::types::PgType;

    #[test]
    fn spilled_changes_come_back_in_order_without_aborted_subtransactions() {
        let table = Arc::new(TableInfo::new(
            TableName {
                schema: "public".into(),
                name: "t".into(),
            },
            "db",
            vec![Column {
                name: "id".into(),
                ty: PgType::Int4,
            }],
            vec![0],
        ));
        let schemas = HashMap::from([(Arc::clone(&table.schema_id), Arc::clone(&table))]);
        let dir = tempfile::tempdir().unwrap();
        for threshold in [0, 1 << 30] {
            let mut tx = StreamedTx::new(dir.path(), format!("t{threshold}"), threshold);
            for i in 0..100u32 {
                let xid = if i % 10 == 3 { 7 } else { 5 };
                let key = (i % 4 != 0).then(|| Bytes::from(format!("{{\"id\":{i}}}")));
                tx.push(Change {
                    table: Arc::clone(&table),
                    op: Op::Create,
                    key,
                    body: format!("b{i}").into_bytes(),
                    lsn: u64::from(i),
                    xid,
                })
                .unwrap();
            }
            tx.abort_subtransaction(7);
            let mut changes = tx.into_changes(&schemas).unwrap();
            let mut seen = Vec::new();
            while let Some(change) = changes.next_change().unwrap() {
                assert_eq!(change.body, format!("b{}", change.lsn).into_bytes());
                assert_eq!(change.key.is_some(), change.lsn % 4 != 0);
                seen.push(change.lsn);
            }
            let expected: Vec<u64> = (0..100).filter(|i| i % 10 != 3).collect();
            assert_eq!(seen, expected, "threshold {threshold}");
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "spill files are removed"
        );
    }
}
