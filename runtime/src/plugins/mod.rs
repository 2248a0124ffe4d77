//! The plugin host: connector types from shared libraries in `[worker] plugin_dirs`.
//!
//! At start (and on every reload) [`PluginHost::registry`] scans the folders, in the
//! order given, for shared libraries (`*.so`; `*.dylib` on macOS), each folder's files
//! in name order. For each it reads the ABI version (data, before any code of the
//! library runs), resolves every entry point, reads the descriptor, checks that no
//! type clashes with a built-in or an earlier plugin, and only then initialises it and
//! registers its types. A library that fails any step is refused as a whole, with a
//! [`PluginError`] naming the file and the reason; the other plugins and the worker
//! carry on.
//!
//! Plugin types then run like built-in ones (see [`connector`]): the same task loop,
//! positions, offsets, restarts, dead letters, metrics and REST status. A library
//! stays loaded for the life of the process; a rescan reuses what it loaded before
//! (a library replaced on disk is used in its new version only after a restart of
//! the worker) and registers what is new.

mod buffer;
mod callbacks;
mod connector;
mod library;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::registry::Registry;
use connector::PluginFactory;
use library::PluginLibrary;

/// Why a plugin library was refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin folder `{dir}` cannot be read: {source}; fix `plugin_dirs` in [worker]")]
    Folder {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin `{file}` refused: it is not a loadable shared library ({reason})")]
    NotLoadable { file: PathBuf, reason: String },
    #[error(
        "plugin `{file}` refused: it is not a plexus plugin (no `PLEXUS_PLUGIN_ABI_VERSION` symbol); build plugins with plexus-plugin-sdk's `export_plugin!` or remove the file from the plugin folder"
    )]
    NotAPlugin { file: PathBuf },
    #[error(
        "plugin `{file}` refused: it was built for plugin ABI version {found}, but this plexus speaks version {expected}; rebuild it against plexus-plugin-sdk {sdk}",
        sdk = env!("CARGO_PKG_VERSION")
    )]
    WrongAbi { file: PathBuf, found: u32, expected: u32 },
    #[error(
        "plugin `{file}` refused: it lacks the symbol `{symbol}` of plugin ABI version {version}; rebuild it with plexus-plugin-sdk's `export_plugin!`",
        version = plexus_plugin_sdk::abi::ABI_VERSION
    )]
    MissingSymbol { file: PathBuf, symbol: &'static str },
    #[error("plugin `{file}` refused: its descriptor is unusable: {reason}")]
    Descriptor { file: PathBuf, reason: String },
    #[error(
        "plugin `{file}` refused: its connector type `{type_name}` clashes with the built-in type of that name; rename the plugin's type"
    )]
    ClashesWithBuiltin { file: PathBuf, type_name: String },
    #[error(
        "plugin `{file}` refused: its connector type `{type_name}` is already offered by plugin `{other}` ({other_file}); remove one of the two libraries"
    )]
    ClashesWithPlugin {
        file: PathBuf,
        type_name: String,
        other: String,
        other_file: PathBuf,
    },
    #[error("plugin `{file}` refused: its initialisation failed: {reason}")]
    Init { file: PathBuf, reason: String },
}

/// The libraries loaded so far, reused by later scans.
#[derive(Debug, Default)]
pub struct PluginHost {
    loaded: Mutex<BTreeMap<PathBuf, Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    library: Arc<PluginLibrary>,
    /// Size and modification time when loaded, to notice a replaced file.
    stamp: Option<(u64, std::time::SystemTime)>,
    initialised: bool,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct PluginScan {
    /// `(plugin name, version, file, types)` of each plugin registered.
    pub loaded: Vec<(String, String, PathBuf, Vec<String>)>,
    pub refused: Vec<PluginError>,
}

impl PluginHost {
    pub fn new() -> PluginHost {
        PluginHost::default()
    }

    /// The built-in types plus those of every acceptable plugin in `dirs`.
    pub fn registry(&self, dirs: &[PathBuf]) -> (Registry, PluginScan) {
        let mut registry = Registry::builtin();
        let mut scan = PluginScan::default();
        let mut seen = Vec::new();
        for dir in dirs {
            let files = match libraries_in(dir) {
                Ok(files) => files,
                Err(source) => {
                    scan.refused.push(PluginError::Folder {
                        dir: dir.clone(),
                        source,
                    });
                    continue;
                }
            };
            for file in files {
                let key = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
                if seen.contains(&key) {
                    continue;
                }
                seen.push(key.clone());
                match self.add(&key, &file, &mut registry) {
                    Ok(entry) => scan.loaded.push(entry),
                    Err(e) => scan.refused.push(e),
                }
            }
        }
        (registry, scan)
    }

    /// Loads one library into `registry` (the benchmark loads its plugin this way).
    pub fn load_file(&self, file: &Path, registry: &mut Registry) -> Result<Vec<String>, PluginError> {
        let key = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        self.add(&key, file, registry).map(|(_, _, _, types)| types)
    }

    fn add(
        &self,
        key: &Path,
        file: &Path,
        registry: &mut Registry,
    ) -> Result<(String, String, PathBuf, Vec<String>), PluginError> {
        let stamp = std::fs::metadata(file)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        let mut loaded = self.loaded.lock();
        let library = match loaded.get(key) {
            Some(known) => {
                if known.stamp != stamp {
                    tracing::warn!(file = %file.display(), plugin = known.library.name(), "The plugin library changed on disk; this worker keeps the version it loaded. Restart the worker to load the new one.");
                }
                Arc::clone(&known.library)
            }
            None => {
                let library = Arc::new(PluginLibrary::open(file)?);
                loaded.insert(
                    key.to_path_buf(),
                    Loaded {
                        library: Arc::clone(&library),
                        stamp,
                        initialised: false,
                    },
                );
                library
            }
        };
        for (type_name, _, _) in &library.types {
            if registry.get(type_name).is_none() {
                continue;
            }
            return Err(if registry.origin(type_name) == "builtin" {
                PluginError::ClashesWithBuiltin {
                    file: file.to_path_buf(),
                    type_name: type_name.clone(),
                }
            } else {
                let other = registry.origin(type_name);
                let (other, other_file) = other.split_once(" @ ").unwrap_or((other, ""));
                PluginError::ClashesWithPlugin {
                    file: file.to_path_buf(),
                    type_name: type_name.clone(),
                    other: other.to_owned(),
                    other_file: PathBuf::from(other_file),
                }
            });
        }
        if let Some(entry) = loaded.get_mut(key)
            && !entry.initialised
        {
            library.init()?;
            entry.initialised = true;
        }
        drop(loaded);
        let origin = format!("{} @ {}", library.name(), file.display());
        for (type_name, kind, schema) in &library.types {
            registry.register_plugin(
                Arc::new(PluginFactory {
                    library: Arc::clone(&library),
                    type_name: type_name.clone(),
                    kind: *kind,
                    schema: schema.clone(),
                }),
                origin.clone(),
            );
        }
        let types: Vec<String> = library.types.iter().map(|(name, _, _)| name.clone()).collect();
        Ok((
            library.name().to_owned(),
            library.descriptor.version.clone(),
            file.to_path_buf(),
            types,
        ))
    }
}

impl PluginScan {
    /// Logs what was loaded and refused.
    pub fn log(&self) {
        for (name, version, file, types) in &self.loaded {
            tracing::info!(plugin = %name, version = %version, file = %file.display(), types = %types.join(", "), "Plugin loaded.");
        }
        for refusal in &self.refused {
            tracing::error!("{refusal}");
        }
    }
}

/// The shared libraries of a folder, by name.
fn libraries_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let extension = if cfg!(target_os = "macos") { "dylib" } else { "so" };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == extension) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
