//! The connector types a worker knows: built-ins, and those of plugins (`crate::plugins`).

use std::collections::BTreeMap;
use std::sync::Arc;

use plexus_config::{ConfigSchema, ConnectorKind, ConnectorTypes};
use plexus_connector::ConnectorFactory;

/// Connector types by name.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Arc<dyn ConnectorFactory>>,
    /// `NAME @ FILE` of the plugin and library that offer each plugin type; built-ins are absent.
    origins: BTreeMap<String, String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// The connectors built into plexus.
    pub fn builtin() -> Registry {
        let mut registry = Registry::default();
        registry.register(Arc::new(plexus_connector_datagen::DatagenFactory::new()));
        registry.register(Arc::new(plexus_connector_file::FileSourceFactory::new()));
        registry.register(Arc::new(plexus_connector_file::FileSinkFactory::new()));
        registry.register(Arc::new(plexus_connector_parquet::ParquetSinkFactory));
        registry.register(Arc::new(plexus_connector_postgres::PostgresCdcFactory::new()));
        registry.register(Arc::new(plexus_connector_sql::SqlSinkFactory::new()));
        registry.register(Arc::new(crate::discard::DiscardFactory));
        registry
    }

    /// Adds a type; a later one with the same name replaces the earlier.
    pub fn register(&mut self, factory: Arc<dyn ConnectorFactory>) {
        self.origins.remove(factory.type_name());
        self.factories.insert(factory.type_name().to_owned(), factory);
    }

    /// Adds a type offered by a plugin; `origin` names the plugin and its library.
    pub fn register_plugin(&mut self, factory: Arc<dyn ConnectorFactory>, origin: String) {
        let name = factory.type_name().to_owned();
        self.register(factory);
        self.origins.insert(name, origin);
    }

    /// Where a type comes from: `"builtin"`, or its plugin and library.
    pub fn origin(&self, type_name: &str) -> &str {
        self.origins.get(type_name).map_or("builtin", String::as_str)
    }

    pub fn get(&self, type_name: &str) -> Option<&Arc<dyn ConnectorFactory>> {
        self.factories.get(type_name)
    }

    /// Every type, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn ConnectorFactory>> {
        self.factories.values()
    }
}

impl ConnectorTypes for Registry {
    fn lookup(&self, type_name: &str) -> Option<(ConnectorKind, &ConfigSchema)> {
        self.factories.get(type_name).map(|f| (f.kind(), f.schema()))
    }

    fn type_names(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }
}
