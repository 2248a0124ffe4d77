//! A local directory that behaves like a bucket: objects are files under the root,
//! uploads wait in `<root>/.uploads` and appear under their key only when complete,
//! and a completion never replaces an existing file.
//!
//! An upload is two files in `.uploads`: `<id>` holds the bytes, `<id>.key` the target
//! key (keys have `/`, file names cannot), written before the data file exists.
//! Completing fsyncs the data, then hard-links it to its final name: `link(2)` fails if
//! the name exists, so two writers of the same key cannot both win and none can replace
//! a file. The parent directory is fsynced so the new name survives a power loss.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use plexus_connector::ConnectorError;
use tracing::debug;

use crate::key::{UPLOADS_DIR, check_key, check_prefix};
use crate::parts::PartSequence;
use crate::{ObjectMeta, ObjectStore, Put, Upload};

/// Objects as files under a directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    location: String,
}

impl LocalStore {
    /// Opens (and creates if missing) the directory `root`.
    pub async fn open(root: impl AsRef<Path>) -> Result<LocalStore, ConnectorError> {
        let root =
            std::path::absolute(root.as_ref()).map_err(|e| io_error("resolve the directory", Path::new("."), e))?;
        let location = format!("file://{}", root.display());
        let dir = root.clone();
        blocking(move || {
            std::fs::create_dir_all(dir.join(UPLOADS_DIR)).map_err(|e| io_error("create the directory", &dir, e))?;
            // Probe that the directory is writable now, not at the first file (a probe a
            // crash left behind is removed by the next open).
            let uploads = dir.join(UPLOADS_DIR);
            if let Ok(entries) = std::fs::read_dir(&uploads) {
                for entry in entries.flatten() {
                    if entry.file_name().to_str().is_some_and(|n| n.starts_with("probe-")) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
            let probe = uploads.join(format!("probe-{}", unique_id()));
            File::create(&probe).map_err(|e| io_error("write into", &dir, e))?;
            match std::fs::remove_file(&probe) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("write into", &dir, e)),
                _ => Ok(()),
            }
        })
        .await?;
        Ok(LocalStore { root, location })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<Put, ConnectorError> {
        check_key(key)?;
        let root = self.root.clone();
        let key = key.to_owned();
        blocking(move || {
            let id = unique_id();
            let temp = root.join(UPLOADS_DIR).join(&id);
            // The key first, as for an upload: a temporary file a crash leaves behind is
            // then one that abort_uploads finds and removes.
            let key_file = root.join(UPLOADS_DIR).join(format!("{id}.key"));
            std::fs::write(&key_file, key.as_bytes()).map_err(|e| io_error("create", &key_file, e))?;
            let written = File::create(&temp)
                .and_then(|mut file| file.write_all(&body).and_then(|()| file.sync_all()))
                .map_err(|e| io_error("write", &temp, e));
            let put = written.and_then(|()| publish(&root, &temp, &key));
            remove_upload(&temp)?;
            put
        })
        .await
    }

    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>, ConnectorError> {
        check_key(key)?;
        let id = unique_id();
        let uploads = self.root.join(UPLOADS_DIR);
        let data = uploads.join(&id);
        let key_file = uploads.join(format!("{id}.key"));
        let target = key.to_owned();
        let file = blocking(move || {
            // The key first: a data file never exists without it, so abort_uploads
            // always knows where a leftover upload was going.
            std::fs::write(&key_file, target.as_bytes()).map_err(|e| io_error("create", &key_file, e))?;
            OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&data)
                .map_err(|e| io_error("create", &data, e))
        })
        .await?;
        Ok(Box::new(LocalUpload {
            root: self.root.clone(),
            key: key.to_owned(),
            data: uploads.join(&id),
            file: Some(Arc::new(file)),
            parts: PartSequence::default(),
            failed: false,
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, ConnectorError> {
        check_key(key)?;
        let path = self.path(key);
        blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(io_error("read", &path, e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ConnectorError> {
        check_prefix(prefix)?;
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            // Only the directory the prefix's complete segments name can hold matches.
            let start = match prefix.rfind('/') {
                Some(end) => prefix[..end].to_owned(),
                None => String::new(),
            };
            let mut objects = Vec::new();
            walk(&root, &start, &prefix, &mut objects)?;
            objects.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(objects)
        })
        .await
    }

    async fn abort_uploads(&self, prefix: &str) -> Result<usize, ConnectorError> {
        check_prefix(prefix)?;
        let uploads = self.root.join(UPLOADS_DIR);
        let prefix = prefix.to_owned();
        blocking(move || {
            let entries = std::fs::read_dir(&uploads).map_err(|e| io_error("list", &uploads, e))?;
            let mut aborted = 0;
            for entry in entries {
                let entry = entry.map_err(|e| io_error("list", &uploads, e))?;
                let name = entry.file_name();
                let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".key")) else {
                    continue;
                };
                let key_file = entry.path();
                let target = match std::fs::read_to_string(&key_file) {
                    Ok(target) => target,
                    // Completed or aborted meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error("read", &key_file, e)),
                };
                // An empty key file is one whose writer was killed between creating
                // and writing it: no data file follows it, and nobody can tell which
                // prefix it was for. It goes, whatever the prefix, unless this process
                // made it (then its writer may be between the two steps right now).
                let dead = target.is_empty() && !id.starts_with(instance());
                if dead || target.starts_with(&prefix) && !target.is_empty() {
                    remove_upload(&uploads.join(id))?;
                    debug!(key = %target, "Aborted a leftover upload.");
                    aborted += 1;
                }
            }
            Ok(aborted)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), ConnectorError> {
        check_key(key)?;
        let path = self.path(key);
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("delete", &path, e)),
        })
        .await
    }
}

/// An upload into `<root>/.uploads/<id>`. Parts are appended as they come.
#[derive(Debug)]
struct LocalUpload {
    root: PathBuf,
    key: String,
    data: PathBuf,
    /// `None` once completed or aborted.
    file: Option<Arc<File>>,
    parts: PartSequence,
    /// A part failed to be written: completing would make a file with a hole.
    failed: bool,
}

#[async_trait]
impl Upload for LocalUpload {
    async fn put_part(&mut self, part: Bytes) -> Result<(), ConnectorError> {
        if part.is_empty() {
            return Ok(());
        }
        let file = self.open_file()?;
        self.parts.next(&self.key, part.len())?;
        let data = self.data.clone();
        let written = blocking(move || (&*file).write_all(&part).map_err(|e| io_error("write", &data, e))).await;
        self.failed |= written.is_err();
        written
    }

    async fn complete(mut self: Box<Self>) -> Result<Put, ConnectorError> {
        let file = self.open_file();
        self.file = None;
        let file = match file {
            Ok(file) => file,
            Err(error) => {
                let data = self.data.clone();
                blocking(move || remove_upload(&data)).await?;
                return Err(error);
            }
        };
        let (root, key, data) = (self.root.clone(), self.key.clone(), self.data.clone());
        blocking(move || {
            let put = file
                .sync_all()
                .map_err(|e| io_error("fsync", &data, e))
                .and_then(|()| publish(&root, &data, &key));
            // Whatever happened, the upload is over: the next writer starts anew.
            remove_upload(&data)?;
            put
        })
        .await
    }

    async fn abort(mut self: Box<Self>) -> Result<(), ConnectorError> {
        self.file = None;
        let data = self.data.clone();
        blocking(move || remove_upload(&data)).await
    }

    fn bytes(&self) -> u64 {
        self.parts.bytes()
    }
}

impl LocalUpload {
    fn open_file(&self) -> Result<Arc<File>, ConnectorError> {
        if self.failed {
            return Err(ConnectorError::fatal(format!(
                "upload of `{}`: a part failed earlier; abort the upload and start again",
                self.key
            )));
        }
        self.file
            .clone()
            .ok_or_else(|| ConnectorError::fatal(format!("upload of `{}` is already finished", self.key)))
    }
}

/// Gives the fsynced file `temp` the name of `key` unless that name exists, and makes
/// the new name durable.
fn publish(root: &Path, temp: &Path, key: &str) -> Result<Put, ConnectorError> {
    let target = root.join(key);
    let parent = target.parent().unwrap_or(root);
    create_dirs(root, parent)?;
    match std::fs::hard_link(temp, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {
            return Err(ConnectorError::fatal(format!(
                "cannot complete `{key}`: {} is a directory (objects exist under `{key}/`), and a directory cannot \
                 hold both",
                target.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Put::Exists),
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            return Err(ConnectorError::fatal(format!(
                "cannot complete `{}`: the file system under {} has no hard links, which completing without \
                 replacing needs; use another directory",
                target.display(),
                root.display()
            ))
            .with_source(e));
        }
        Err(e) => return Err(io_error("create", &target, e)),
    }
    sync_dir(parent)?;
    Ok(Put::Created)
}

/// Creates the missing directories from `root` down to `dir`, fsyncing each new
/// directory's parent so the new entries are durable.
fn create_dirs(root: &Path, dir: &Path) -> Result<(), ConnectorError> {
    if dir.is_dir() {
        return Ok(());
    }
    let relative = dir.strip_prefix(root).unwrap_or(dir);
    let mut current = root.to_path_buf();
    for component in relative.components() {
        let parent = current.clone();
        current.push(component);
        match std::fs::create_dir(&current) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create the directory", &current, e)),
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), ConnectorError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync the directory", dir, e))
}

/// Removes an upload's data, then its key file (the reverse of their creation).
fn remove_upload(data: &Path) -> Result<(), ConnectorError> {
    let mut key_file = data.as_os_str().to_owned();
    key_file.push(".key");
    for path in [data, Path::new(&key_file)] {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", path, e)),
        }
    }
    Ok(())
}

/// Adds the files under `root/dir` whose keys start with `prefix`, skipping
/// `.uploads` at the root.
fn walk(root: &Path, dir: &str, prefix: &str, out: &mut Vec<ObjectMeta>) -> Result<(), ConnectorError> {
    let path = if dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(dir)
    };
    let entries = match std::fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Ok(()),
        Err(e) => return Err(io_error("list", &path, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", &path, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            // Not a key this store could have written.
            continue;
        };
        if dir.is_empty() && name == UPLOADS_DIR {
            continue;
        }
        let key = if dir.is_empty() { name } else { format!("{dir}/{name}") };
        let kind = entry.file_type().map_err(|e| io_error("list", &entry.path(), e))?;
        if kind.is_dir() {
            // Descend only where keys can still match the prefix.
            let below = format!("{key}/");
            if below.starts_with(prefix) || prefix.starts_with(&below) {
                walk(root, &key, prefix, out)?;
            }
        } else if kind.is_file() && key.starts_with(prefix) {
            let size = entry.metadata().map_err(|e| io_error("stat", &entry.path(), e))?.len();
            out.push(ObjectMeta { key, size });
        }
    }
    Ok(())
}

/// A name no other upload of this or another process uses: this process's
/// [`instance`], then a count.
fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("{}{:x}", instance(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// What begins the ids of this process's uploads and no other's: the time of its first
/// upload and its process id (a restarted process may get the same id, not the same
/// time).
fn instance() -> &'static str {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("{nanos:x}-{:x}-", std::process::id())
    })
}

/// Runs file system work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ConnectorError> + Send + 'static,
) -> Result<T, ConnectorError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ConnectorError::retriable(format!("a file system task failed: {e}")))?
}

/// An I/O error as a connector error: permissions and read-only or unsuitable file
/// systems are fatal (someone must fix them), the rest (a full disk, say) retriable.
fn io_error(what: &str, path: &Path, error: io::Error) -> ConnectorError {
    use io::ErrorKind as Kind;
    let message = format!("cannot {what} {}: {error}", path.display());
    match error.kind() {
        Kind::PermissionDenied => ConnectorError::fatal(format!(
            "{message}; give the user running plexus write access to the directory"
        )),
        Kind::ReadOnlyFilesystem | Kind::NotADirectory | Kind::IsADirectory | Kind::InvalidFilename => {
            ConnectorError::fatal(message)
        }
        _ => ConnectorError::retriable(message),
    }
    .with_source(error)
}
