//! `plexus-tests`: real servers for end-to-end tests, started on loopback in temporary
//! directories on free ports, and stopped when the test ends (also when it panics).
//!
//! Servers come from Debian's packages, installed by `scripts/setup-postgres` (which
//! `scripts/test` runs): a missing server is an error that says what to run, never a
//! skipped test.

pub mod mariadb;
pub mod postgres;
mod process;
pub mod python;
pub mod seaweed;
pub mod writer;

pub use mariadb::{MariaDbError, TempMariaDb};
pub use postgres::{PostgresError, TempPostgres};
pub use writer::Writer;
