//! Banks that must be refused untouched: a file that is not SQLite, a SQLite database of
//! something else, a PostgreSQL database of something else.

mod memory_support;

use athena::memory::{BankConfig, MemoryBank, MemoryError};
use memory_support::{fresh, Backend};

#[test]
fn a_corrupt_file_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).expect("write");
    let err = MemoryBank::open(path.to_str().expect("utf-8"), BankConfig::default())
        .expect_err("a corrupt file");
    assert!(matches!(err, MemoryError::CorruptDb { .. }), "{err}");
    assert!(err.to_string().contains("memory.db"), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), garbage);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn a_foreign_sqlite_database_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("sqlite");
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
            .expect("schema");
    }
    let before = std::fs::read(&path).expect("read");
    let err = MemoryBank::open(path.to_str().expect("utf-8"), BankConfig::default())
        .expect_err("a foreign database");
    assert!(matches!(err, MemoryError::ForeignDb { .. }), "{err}");
    assert!(err.to_string().contains("notes"), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn a_bank_of_another_schema_version_is_refused() {
    let loc = fresh(Backend::Sqlite).expect("sqlite");
    drop(loc.open());
    {
        let conn = rusqlite::Connection::open(&loc.url).expect("sqlite");
        conn.execute(
            "UPDATE athena_meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .expect("edit");
    }
    let err = MemoryBank::open(&loc.url, BankConfig::default()).expect_err("version 99");
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn a_foreign_postgres_database_is_refused_untouched() {
    let Some(loc) = fresh(Backend::Postgres) else {
        return;
    };
    let mut client = postgres::Client::connect(&loc.url, postgres::NoTls).expect("connect");
    client
        .batch_execute("CREATE TABLE memories (body TEXT)")
        .expect("schema");
    let err = MemoryBank::open(&loc.url, BankConfig::default()).expect_err("a foreign database");
    assert!(matches!(err, MemoryError::ForeignDb { .. }), "{err}");
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(tables, 1);
}
