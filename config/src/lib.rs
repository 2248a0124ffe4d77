//! `plexus-config`: the TOML model of a plexus worker and its connectors.
//!
//! A configuration is one or more TOML files. Each may hold a `[worker]` table (at most
//! one in all; every worker setting has a default) and any number of `[[connector]]`
//! tables:
//!
//! ```toml
//! [worker]
//! data_dir = "./data"
//!
//! [[connector]]
//! name = "orders-gen"
//! type = "datagen"
//! topic = "orders"                  # sources write one `topic`
//! [connector.settings]              # the connector type's own typed settings
//! rate = 1000
//!
//! [[connector]]
//! name = "orders-out"
//! type = "file-sink"
//! topics = ["orders"]               # sinks read a list of `topics`
//! [connector.settings]
//! path = "${OUT_DIR:-./out}/orders.jsonl"
//! roll_size = "64MiB"
//! ```
//!
//! [`Config::load`] reads the files, interpolates `${VAR}` and `${VAR:-default}` from the
//! environment, and validates everything against the connector types the caller knows
//! ([`ConnectorTypes`]: each type's [`ConfigSchema`]) before anything starts. It reports
//! **all** problems at once, each as `file:line:column: error: message` with a hint.
//! Durations (`"30s"`) and sizes (`"64MiB"`) are typed values ([`Duration`],
//! [`ByteSize`]); settings marked secret are kept as [`Secret`] and never shown in any
//! message, `Debug` output, summary or [`Settings::to_json`].
//!
//! ```
//! use plexus_config::{Config, ConfigSchema, ConnectorKind, ConnectorTypeRegistry, FieldKind, FieldSpec};
//!
//! let types = ConnectorTypeRegistry::new().with(
//!     "datagen",
//!     ConnectorKind::Source,
//!     ConfigSchema::new().field(FieldSpec::new("rate", FieldKind::integer_between(Some(0), None))),
//! );
//! let text = "[[connector]]\nname = \"gen\"\ntype = \"datagen\"\ntopic = \"t\"\n[connector.settings]\nrat = 5\n";
//! let problems = Config::load_str(&[("a.toml".into(), text.into())], &types, &|_| None).unwrap_err();
//! assert_eq!(
//!     problems.to_string(),
//!     "a.toml:6:1: error: unknown setting `rat` for connector type `datagen`\n  hint: did you mean `rate`?"
//! );
//! ```

mod check;
mod connector;
mod diagnostic;
mod duration;
mod error;
mod interpolate;
mod load;
mod registry;
mod schema;
mod secret;
mod size;
mod suggest;
mod tree;
mod worker;

pub use connector::{ConnectorConfig, ErrorPolicy, ErrorTolerance, TABLE_PLACEHOLDER};
pub use diagnostic::{Location, Problem, Problems};
pub use duration::Duration;
pub use error::ParseValueError;
pub use load::Config;
pub use registry::{ConnectorKind, ConnectorTypeRegistry, ConnectorTypes};
pub use schema::{ConfigSchema, FieldKind, FieldSpec, Settings, Value};
pub use secret::{REDACTED, Secret};
pub use size::ByteSize;
pub use worker::{RestConfig, RestartPolicy, WorkerConfig};
