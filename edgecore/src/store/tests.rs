#![allow(clippy::unwrap_used)]

use super::*;

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreConfig::default()).unwrap()
}

#[test]
fn put_get_delete_scan_batch_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    {
        let store = open(&dir);
        let t = store.tree("objects").unwrap();
        t.put("a/1", "one").unwrap();
        t.put("a/2", "two").unwrap();
        t.put("b/1", "other").unwrap();
        t.delete("a/2").unwrap();
        let mut batch = Batch::default();
        batch.put("a/3", "three");
        batch.delete("b/1");
        assert_eq!(batch.len(), 2);
        t.apply(batch).unwrap();
        store.flush().unwrap();
    }
    let store = open(&dir);
    let t = store.tree("objects").unwrap();
    assert_eq!(t.get("a/1").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(t.get("a/2").unwrap(), None);
    assert_eq!(t.get("b/1").unwrap(), None);
    let keys: Vec<_> = t.scan_prefix(b"a/").map(|r| r.unwrap().0).collect();
    assert_eq!(keys, vec![b"a/1".to_vec(), b"a/3".to_vec()]);
    assert_eq!(t.len(), 2);
}

#[test]
fn a_second_opener_is_refused_not_recovered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let _first = open(&dir);
    let err = Store::open_or_recover(&dir, &StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(dir.exists());
}

#[test]
fn an_opener_that_may_wait_gets_the_store_once_the_holder_lets_go() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let first = open(&dir);
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(first);
    });
    let waiting = StoreConfig {
        lock_wait: std::time::Duration::from_secs(10),
        ..StoreConfig::default()
    };
    let started = std::time::Instant::now();
    let opened = Store::open_or_recover(&dir, &waiting).unwrap();
    assert!(
        opened.recovered.is_none(),
        "a held lock is not a broken store"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    holder.join().unwrap();
    // A bounded wait still ends in a clear refusal while the holder stays.
    let short = StoreConfig {
        lock_wait: std::time::Duration::from_millis(200),
        ..StoreConfig::default()
    };
    let err = Store::open_or_recover(&dir, &short).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
}

#[test]
fn wrong_schema_version_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    {
        let db = sled::open(&dir).unwrap();
        db.insert(SCHEMA_KEY, b"99".as_slice()).unwrap();
        db.insert(b"old", b"data".as_slice()).unwrap();
        db.flush().unwrap();
    }
    let opened = Store::open_or_recover(&dir, &StoreConfig::default()).unwrap();
    let rec = opened.recovered.expect("recovered");
    assert!(rec.reason.contains("schema version"), "{}", rec.reason);
    assert!(rec.moved_to.exists());
    assert!(rec.moved_to.to_string_lossy().contains("store.corrupt-"));
    let t = opened.store.tree("objects").unwrap();
    assert!(t.is_empty());
}

#[test]
fn garbage_files_are_moved_aside_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("conf"), b"\x00\xffgarbage\nsegment_size: x\n").unwrap();
    std::fs::write(dir.join("db"), vec![0xAB; 4096]).unwrap();
    let opened = Store::open_or_recover(&dir, &StoreConfig::default()).unwrap();
    assert!(opened.recovered.is_some());
    opened.store.tree("x").unwrap().put("k", "v").unwrap();
    opened.store.flush().unwrap();
    drop(opened);
    // the fresh store reopens cleanly
    let again = Store::open_or_recover(&dir, &StoreConfig::default()).unwrap();
    assert!(again.recovered.is_none());
}

#[test]
fn foreign_database_without_version_is_not_adopted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    {
        let db = sled::open(&dir).unwrap();
        db.insert(b"someone", b"else".as_slice()).unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(&dir, &StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::Schema { .. }), "{err}");
}
