//! What the REST API changed, kept in the data directory so that it survives restarts.
//!
//! ```text
//! <data_dir>/connectors/NAME.toml      a connector created or changed through the API
//! <data_dir>/connectors/NAME.deleted   a file-defined connector deleted through the API
//! <data_dir>/connectors/states.json    target states other than running: {"NAME": "PAUSED"}
//! ```
//!
//! Each `.toml` is an ordinary `[[connector]]` file (readable, copyable into a config),
//! headed by a comment `# plexus-base: FINGERPRINT` naming the version of the file
//! definition it replaced (`none` when no file defined the connector). A `.deleted`
//! holds the same fingerprint. At start the worker compares it with the files' current
//! definition: unchanged, the API's version wins; changed, the file wins (see
//! docs/rest-api.md, "which wins").
//!
//! Every write goes to a temporary file that is fsynced and renamed over the old one,
//! then the directory is fsynced: a crash leaves the old or the new version, never half.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use plexus_config::{ConnectorConfig, ErrorTolerance};
use serde_json::{Map, Value as Json};

/// The target state of a connector, as the operator asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TargetState {
    Running,
    Paused,
    Stopped,
}

/// One stored API change.
#[derive(Debug)]
pub(crate) enum Stored {
    /// A configuration to run (its TOML text and the file it came from).
    Config {
        path: PathBuf,
        text: String,
        base: Option<String>,
    },
    /// A file-defined connector that was deleted.
    Deleted { base: String },
}

#[derive(Debug, Clone)]
pub(crate) struct ConnectorStore {
    dir: PathBuf,
}

impl ConnectorStore {
    pub fn open(data_dir: &Path) -> std::io::Result<ConnectorStore> {
        let dir = data_dir.join("connectors");
        std::fs::create_dir_all(&dir)?;
        Ok(ConnectorStore { dir })
    }

    /// The file a connector's API configuration lives in.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    /// Every stored change, by connector name.
    pub fn load(&self) -> std::io::Result<BTreeMap<String, Stored>> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let (Some(stem), Some(ext)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            match ext {
                "toml" => {
                    let text = std::fs::read_to_string(&path)?;
                    let base = text
                        .lines()
                        .find_map(|line| line.strip_prefix("# plexus-base: "))
                        .map(str::trim)
                        .filter(|b| *b != "none")
                        .map(str::to_owned);
                    out.insert(stem.to_owned(), Stored::Config { path, text, base });
                }
                "deleted" => {
                    let base = std::fs::read_to_string(&path)?.trim().to_owned();
                    out.insert(stem.to_owned(), Stored::Deleted { base });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Stores a connector's configuration (TOML without the header).
    pub fn save_config(&self, name: &str, body: &str, base: Option<&str>) -> std::io::Result<()> {
        let text = header(base) + body;
        write_atomically(&self.path(name), text.as_bytes())?;
        remove_if_present(&self.dir.join(format!("{name}.deleted")))?;
        sync_dir(&self.dir)
    }

    /// Records that a file-defined connector was deleted.
    pub fn save_deleted(&self, name: &str, base: &str) -> std::io::Result<()> {
        write_atomically(&self.dir.join(format!("{name}.deleted")), base.as_bytes())?;
        remove_if_present(&self.path(name))?;
        sync_dir(&self.dir)
    }

    /// Drops a stored configuration or deletion (the target state stays).
    pub fn forget_change(&self, name: &str) -> std::io::Result<()> {
        remove_if_present(&self.path(name))?;
        remove_if_present(&self.dir.join(format!("{name}.deleted")))?;
        sync_dir(&self.dir)
    }

    /// Forgets everything stored about a connector.
    pub fn forget(&self, name: &str) -> std::io::Result<()> {
        remove_if_present(&self.path(name))?;
        remove_if_present(&self.dir.join(format!("{name}.deleted")))?;
        self.set_state(name, TargetState::Running)?;
        sync_dir(&self.dir)
    }

    pub fn states(&self) -> std::io::Result<BTreeMap<String, TargetState>> {
        match std::fs::read(self.dir.join("states.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.dir.join("states.json").display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    /// Stores a connector's target state (running ones are simply left out).
    pub fn set_state(&self, name: &str, state: TargetState) -> std::io::Result<()> {
        let mut states = self.states()?;
        let changed = if state == TargetState::Running {
            states.remove(name).is_some()
        } else {
            states.insert(name.to_owned(), state) != Some(state)
        };
        if changed {
            let json = serde_json::to_vec_pretty(&states).map_err(std::io::Error::other)?;
            write_atomically(&self.dir.join("states.json"), &json)?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn header(base: Option<&str>) -> String {
    format!(
        "# Written by the plexus REST API; change it through the API (or edit it while the worker is stopped).\n# plexus-base: {}\n",
        base.unwrap_or("none")
    )
}

/// A stable fingerprint of a connector's definition, to tell whether a file changed.
pub(crate) fn fingerprint(config: &ConnectorConfig) -> String {
    let canonical = serde_json::json!({
        "type": config.type_name,
        "topics": config.topics,
        "settings": config.settings.to_json_exposed(),
        "errors": [tolerance_name(config.errors.tolerance), config.errors.dead_letter_topic],
    })
    .to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

pub(crate) fn tolerance_name(tolerance: ErrorTolerance) -> &'static str {
    match tolerance {
        ErrorTolerance::Fail => "fail",
        ErrorTolerance::DeadLetter => "dead-letter",
    }
}

/// A connector's configuration as the REST API shows it: its `[[connector]]` table
/// without the name. Secrets read `"***"` unless `exposed`.
pub(crate) fn config_to_json(config: &ConnectorConfig, exposed: bool) -> Json {
    let mut out = Map::new();
    out.insert("type".into(), Json::String(config.type_name.clone()));
    match config.kind {
        plexus_config::ConnectorKind::Source => {
            out.insert(
                "topic".into(),
                config.topics.first().cloned().map_or(Json::Null, Json::String),
            );
        }
        plexus_config::ConnectorKind::Sink => {
            out.insert("topics".into(), Json::from(config.topics.clone()));
        }
    }
    let settings = if exposed {
        config.settings.to_json_exposed()
    } else {
        config.settings.to_json()
    };
    out.insert("settings".into(), settings);
    out.insert(
        "errors".into(),
        serde_json::json!({
            "tolerance": tolerance_name(config.errors.tolerance),
            "dead_letter_topic": config.errors.dead_letter_topic,
        }),
    );
    Json::Object(out)
}

/// Renders a connector's JSON configuration as a `[[connector]]` TOML table.
pub(crate) fn json_to_toml(name: &str, config: &Map<String, Json>) -> Result<String, String> {
    let mut table = toml_edit::Table::new();
    table.insert("name", toml_edit::value(name));
    // `type` and the topic first, as people write them.
    let mut keys: Vec<&String> = config.keys().collect();
    keys.sort_by_key(|k| match k.as_str() {
        "name" => 0,
        "type" => 1,
        "topic" | "topics" => 2,
        _ => 3,
    });
    for key in keys {
        if key == "name" {
            continue;
        }
        let item = match &config[key] {
            Json::Object(map) => {
                let mut sub = toml_edit::Table::new();
                for (k, v) in map {
                    sub.insert(k, toml_edit::Item::Value(json_to_value(v, &format!("{key}.{k}"))?));
                }
                toml_edit::Item::Table(sub)
            }
            other => toml_edit::Item::Value(json_to_value(other, key)?),
        };
        table.insert(key, item);
    }
    let mut connectors = toml_edit::ArrayOfTables::new();
    connectors.push(table);
    let mut doc = toml_edit::DocumentMut::new();
    doc.insert("connector", toml_edit::Item::ArrayOfTables(connectors));
    Ok(doc.to_string())
}

fn json_to_value(json: &Json, at: &str) -> Result<toml_edit::Value, String> {
    Ok(match json {
        Json::Null => return Err(format!("`{at}` is null; leave the key out instead")),
        Json::Bool(b) => toml_edit::Value::from(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => toml_edit::Value::from(i),
            None => toml_edit::Value::from(n.as_f64().ok_or_else(|| format!("`{at}` is out of range"))?),
        },
        Json::String(s) => toml_edit::Value::from(s.as_str()),
        Json::Array(items) => {
            let mut array = toml_edit::Array::new();
            for (i, item) in items.iter().enumerate() {
                array.push(json_to_value(item, &format!("{at}[{i}]"))?);
            }
            toml_edit::Value::Array(array)
        }
        Json::Object(map) => {
            let mut inline = toml_edit::InlineTable::new();
            for (k, v) in map {
                inline.insert(k, json_to_value(v, &format!("{at}.{k}"))?);
            }
            toml_edit::Value::InlineTable(inline)
        }
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        // Stored configurations may hold secrets.
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_becomes_a_connector_table() {
        let json = serde_json::json!({
            "type": "datagen", "topic": "shop.{table}",
            "settings": {"count": 10, "rate": 1.5, "tables": ["orders"]},
            "errors": {"tolerance": "dead-letter"}
        });
        let text = json_to_toml("gen", json.as_object().unwrap()).unwrap();
        assert_eq!(
            text,
            "[[connector]]\nname = \"gen\"\ntype = \"datagen\"\ntopic = \"shop.{table}\"\n\n[connector.errors]\ntolerance = \"dead-letter\"\n\n[connector.settings]\ncount = 10\nrate = 1.5\ntables = [\"orders\"]\n"
        );
        let err = json_to_toml("gen", serde_json::json!({"settings": {"x": null}}).as_object().unwrap()).unwrap_err();
        assert_eq!(err, "`settings.x` is null; leave the key out instead");
    }

    #[test]
    fn states_and_configs_persist() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConnectorStore::open(dir.path()).unwrap();
        store.set_state("a", TargetState::Paused).unwrap();
        store.set_state("b", TargetState::Stopped).unwrap();
        store.set_state("b", TargetState::Running).unwrap();
        let states = store.states().unwrap();
        assert_eq!(
            states.into_iter().collect::<Vec<_>>(),
            vec![("a".to_owned(), TargetState::Paused)]
        );
        store.save_config("a", "[[connector]]\n", Some("abc")).unwrap();
        store.save_deleted("c", "def").unwrap();
        let stored = store.load().unwrap();
        assert!(matches!(&stored["a"], Stored::Config { base: Some(b), .. } if b == "abc"));
        assert!(matches!(&stored["c"], Stored::Deleted { base } if base == "def"));
        store.forget("a").unwrap();
        assert!(!store.load().unwrap().contains_key("a"));
        assert!(store.states().unwrap().is_empty());
    }
}
