//! The PostgreSQL harness itself: a cluster with logical replication starts, answers
//! SQL with a password over loopback, and is gone after drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use plexus_tests::TempPostgres;

#[test]
fn a_cluster_with_logical_replication_starts_answers_and_stops() {
    let pg = TempPostgres::start().unwrap();
    assert_eq!(pg.psql("postgres", "show wal_level").unwrap(), "logical");
    assert_eq!(pg.psql("postgres", "show server_version_num").unwrap()[..2], *"15");
    pg.psql("postgres", "create table t (id int primary key, v text)")
        .unwrap();
    pg.psql("postgres", "insert into t values (1, 'a'), (2, 'b')").unwrap();
    assert_eq!(
        pg.psql("postgres", "select string_agg(v, ',' order by id) from t")
            .unwrap(),
        "a,b"
    );
    // A logical slot with pgoutput can be made: the server is set up for CDC.
    let lsn = pg
        .psql(
            "postgres",
            "select lsn from pg_create_logical_replication_slot('s', 'pgoutput')",
        )
        .unwrap();
    assert!(lsn.contains('/'), "{lsn}");
    // SQL errors are reported with the server's message.
    let err = pg.psql("postgres", "select * from missing").unwrap_err().to_string();
    assert!(err.contains("relation \"missing\" does not exist"), "{err}");

    let port = pg.port();
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still listens after drop"
    );
}
