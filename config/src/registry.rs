//! The connector types a configuration is validated against.

use std::collections::BTreeMap;
use std::fmt;

use crate::ConfigSchema;

/// Whether a connector writes into the log (a source) or reads from it (a sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectorKind {
    Source,
    Sink,
}

impl fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectorKind::Source => "source",
            ConnectorKind::Sink => "sink",
        })
    }
}

/// The connector types the loader knows (built-ins and plugins), provided by the caller.
pub trait ConnectorTypes {
    /// The kind and settings schema of a type, or `None` if there is no such type.
    fn lookup(&self, type_name: &str) -> Option<(ConnectorKind, &ConfigSchema)>;

    /// Every known type name, for "did you mean" hints.
    fn type_names(&self) -> Vec<String>;
}

/// A map-based [`ConnectorTypes`]:
/// `ConnectorTypeRegistry::new().with("datagen", ConnectorKind::Source, schema)`.
#[derive(Debug, Clone, Default)]
pub struct ConnectorTypeRegistry {
    types: BTreeMap<String, (ConnectorKind, ConfigSchema)>,
}

impl ConnectorTypeRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a type (builder style); a type of the same name is replaced.
    pub fn with(mut self, name: impl Into<String>, kind: ConnectorKind, schema: ConfigSchema) -> Self {
        self.register(name, kind, schema);
        self
    }

    /// Adds a type, returning the one it replaces.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        kind: ConnectorKind,
        schema: ConfigSchema,
    ) -> Option<(ConnectorKind, ConfigSchema)> {
        self.types.insert(name.into(), (kind, schema))
    }
}

impl ConnectorTypes for ConnectorTypeRegistry {
    fn lookup(&self, type_name: &str) -> Option<(ConnectorKind, &ConfigSchema)> {
        self.types.get(type_name).map(|(kind, schema)| (*kind, schema))
    }

    fn type_names(&self) -> Vec<String> {
        self.types.keys().cloned().collect()
    }
}
