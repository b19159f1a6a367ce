//! The durable state store: one redb file in the state directory, plus the
//! flow-token key file beside it.
//!
//! The sans-IO core knows nothing of disks: it hands out plain serialised records
//! ([`Batch`] of [`Op`]s: put or delete a key in a [`Table`]) and the runtime passes
//! them to a [`Writer`] thread, which commits everything queued since its last
//! commit in ONE durable transaction (group commit) and then reports the highest
//! batch sequence number it made durable. The runtime holds back what the core
//! sent while those batches were open (the 200 to a SUBSCRIBE or a REGISTER) until
//! that report, so what a phone was told is on disk before it is told.
//!
//! On start [`Store::load`] reads every table back; the core restores from that.
//!
//! Why redb: pure Rust, one file, ACID with copy-on-write pages and a checksummed
//! commit slot, so a crash (SIGKILL, power loss) leaves the last committed
//! transaction; and the file is locked, so a second bridge on the same state
//! directory fails with a clear error instead of corrupting it.
//! See docs/decisions.md.

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "state.redb";
/// File name of the flow-token key inside the state directory.
pub const KEY_FILE: &str = "flow-token.key";

/// The tables of the store. Every record is a serialised plain-data value of the
/// core; keys are chosen by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Phone subscriptions the bridge terminates.
    Phones,
    /// Watched targets with their upstream subscriptions.
    Targets,
    /// REGISTER bindings relayed through the bridge.
    Bindings,
    /// Single values (id counters and the like).
    Meta,
}

impl Table {
    pub const ALL: [Table; 4] = [Table::Phones, Table::Targets, Table::Bindings, Table::Meta];

    fn def(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.name())
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Phones => "phones",
            Table::Targets => "targets",
            Table::Bindings => "bindings",
            Table::Meta => "meta",
        }
    }
}

/// One change: put `value` at `key`, or delete `key` when `value` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// Changes that belong together (one pass of the core).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<Op>,
    /// Something a peer will be told about (a 200 to a SUBSCRIBE or REGISTER,
    /// a counter reservation) is in it: commit to disk before what follows is
    /// sent. Otherwise (e.g. the last upstream state of a target) the batch is
    /// committed without waiting for the disk and nothing is held back.
    pub durable: bool,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.ops.push(Op {
            table,
            key: key.into(),
            value: Some(value),
        });
    }
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.ops.push(Op {
            table,
            key: key.into(),
            value: None,
        });
    }
}

/// Everything in the store, table by table, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub phones: Vec<(Vec<u8>, Vec<u8>)>,
    pub targets: Vec<(Vec<u8>, Vec<u8>)>,
    pub bindings: Vec<(Vec<u8>, Vec<u8>)>,
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Snapshot {
    pub fn table(&self, t: Table) -> &[(Vec<u8>, Vec<u8>)] {
        match t {
            Table::Phones => &self.phones,
            Table::Targets => &self.targets,
            Table::Bindings => &self.bindings,
            Table::Meta => &self.meta,
        }
    }
    /// Apply a batch in memory, as a commit would (for tests and tools that
    /// simulate a restart without a disk).
    pub fn apply(&mut self, batch: &Batch) {
        for op in &batch.ops {
            let rows = self.table_mut(op.table);
            let at = rows.binary_search_by(|(k, _)| k.as_slice().cmp(&op.key));
            match (&op.value, at) {
                (Some(v), Ok(i)) => rows[i].1 = v.clone(),
                (Some(v), Err(i)) => rows.insert(i, (op.key.clone(), v.clone())),
                (None, Ok(i)) => {
                    rows.remove(i);
                }
                (None, Err(_)) => {}
            }
        }
    }

    fn table_mut(&mut self, t: Table) -> &mut Vec<(Vec<u8>, Vec<u8>)> {
        match t {
            Table::Phones => &mut self.phones,
            Table::Targets => &mut self.targets,
            Table::Bindings => &mut self.bindings,
            Table::Meta => &mut self.meta,
        }
    }
}

/// What went wrong with the state directory, named for the operator.
#[derive(Debug)]
pub struct StoreError {
    pub path: PathBuf,
    pub what: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

impl std::error::Error for StoreError {}

fn err(path: &Path, what: impl fmt::Display) -> StoreError {
    StoreError {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

/// The open database.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Create the state directory (mode 0700 on Unix) if it does not exist.
pub fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .map_err(|e| err(dir, format!("cannot create the state directory: {e}")))
}

impl Store {
    /// Open (or create) `dir/state.redb`. Fails when another process has it open.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        ensure_dir(dir)?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => err(
                &path,
                "already in use by another process (is another blf-bridge running with this state directory?)",
            ),
            e => err(&path, format!("cannot open the state store: {e}")),
        })?;
        // create the tables so that reads never meet a missing one
        let tx = db
            .begin_write()
            .map_err(|e| err(&path, format!("cannot write: {e}")))?;
        for t in Table::ALL {
            tx.open_table(t.def())
                .map_err(|e| err(&path, format!("cannot create table {}: {e}", t.name())))?;
        }
        tx.commit()
            .map_err(|e| err(&path, format!("cannot commit: {e}")))?;
        Ok(Store { db, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read every table.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| err(&self.path, format!("cannot read: {e}")))?;
        let mut snap = Snapshot::default();
        for t in Table::ALL {
            let table = tx
                .open_table(t.def())
                .map_err(|e| err(&self.path, format!("cannot open table {}: {e}", t.name())))?;
            let rows = snap.table_mut(t);
            for row in table
                .iter()
                .map_err(|e| err(&self.path, format!("cannot read table {}: {e}", t.name())))?
            {
                let (k, v) =
                    row.map_err(|e| err(&self.path, format!("damaged row in {}: {e}", t.name())))?;
                rows.push((k.value().to_vec(), v.value().to_vec()));
            }
        }
        Ok(snap)
    }

    /// Apply batches in order in one transaction; `durable` waits for the disk.
    pub fn commit<'a>(
        &self,
        batches: impl IntoIterator<Item = &'a Batch>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .db
            .begin_write()
            .map_err(|e| err(&self.path, format!("cannot write: {e}")))?;
        tx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(|e| err(&self.path, format!("cannot set durability: {e}")))?;
        {
            let mut tables = Vec::with_capacity(Table::ALL.len());
            for t in Table::ALL {
                tables.push(
                    tx.open_table(t.def())
                        .map_err(|e| err(&self.path, format!("cannot open {}: {e}", t.name())))?,
                );
            }
            for b in batches {
                for op in &b.ops {
                    let idx = Table::ALL.iter().position(|t| *t == op.table).unwrap_or(0);
                    let table = &mut tables[idx];
                    let r = match &op.value {
                        Some(v) => table.insert(op.key.as_slice(), v.as_slice()).map(|_| ()),
                        None => table.remove(op.key.as_slice()).map(|_| ()),
                    };
                    r.map_err(|e| {
                        err(&self.path, format!("cannot write {}: {e}", op.table.name()))
                    })?;
                }
            }
        }
        tx.commit()
            .map_err(|e| err(&self.path, format!("cannot commit: {e}")))
    }

    /// Size of the database file in bytes.
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

/// Read the flow-token key from `dir/flow-token.key`, or create it: 32 bytes from
/// the operating system's CSPRNG, written as 64 hex digits with mode 0600. A key
/// file that exists but cannot be read or is malformed is an error (never
/// silently replaced: that would break every dialog set up before).
pub fn load_or_create_key(dir: &Path) -> Result<[u8; 32], StoreError> {
    ensure_dir(dir)?;
    let path = dir.join(KEY_FILE);
    match std::fs::File::open(&path) {
        Ok(mut f) => {
            let mut s = String::new();
            f.read_to_string(&mut s)
                .map_err(|e| err(&path, format!("cannot read the flow-token key: {e}")))?;
            parse_key(s.trim()).ok_or_else(|| {
                err(
                    &path,
                    "not a flow-token key (64 hex digits expected); move it away to make a new one",
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            crate::util::os_random(&mut key)
                .map_err(|e| err(&path, format!("no randomness from the OS: {e}")))?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let tmp = dir.join(format!("{KEY_FILE}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            let mut f = opts
                .open(&tmp)
                .map_err(|e| err(&tmp, format!("cannot create the flow-token key: {e}")))?;
            f.write_all(crate::util::hex(&key).as_bytes())
                .and_then(|_| f.write_all(b"\n"))
                .and_then(|_| f.sync_all())
                .map_err(|e| err(&tmp, format!("cannot write the flow-token key: {e}")))?;
            std::fs::rename(&tmp, &path)
                .map_err(|e| err(&path, format!("cannot create the flow-token key: {e}")))?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(key)
        }
        Err(e) => Err(err(&path, format!("cannot read the flow-token key: {e}"))),
    }
}

fn parse_key(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, c) in s.as_bytes().chunks(2).enumerate() {
        let h = std::str::from_utf8(c).ok()?;
        k[i] = u8::from_str_radix(h, 16).ok()?;
    }
    Some(k)
}

/// What waits for the writer thread: the changes submitted since its last
/// commit, merged key by key (a later put or delete of a key replaces the
/// earlier one), so a disk that hangs costs memory in proportion to the state
/// that changed, not to the traffic of those seconds.
/// A caller of [`Writer::flush`] waiting for the next commit.
type FlushAck = mpsc::Sender<Result<(), String>>;

#[derive(Default)]
struct Queue {
    ops: std::collections::HashMap<(Table, Vec<u8>), Option<Vec<u8>>>,
    /// Highest sequence number submitted.
    high: u64,
    durable: bool,
    /// Batches merged in (for [`WriterStats`]).
    batches: u64,
    flushes: Vec<FlushAck>,
    closed: bool,
}

impl Queue {
    fn push(&mut self, seq: u64, batch: Batch) {
        self.high = self.high.max(seq);
        self.durable |= batch.durable;
        self.batches += 1;
        for op in batch.ops {
            self.ops.insert((op.table, op.key), op.value);
        }
    }
    fn is_idle(&self) -> bool {
        self.batches == 0 && self.flushes.is_empty()
    }
    /// Everything queued, as one batch, and the queue emptied.
    fn take(&mut self) -> (Batch, u64, u64, Vec<FlushAck>) {
        let flushes = std::mem::take(&mut self.flushes);
        let batch = Batch {
            ops: self
                .ops
                .drain()
                .map(|((table, key), value)| Op { table, key, value })
                .collect(),
            // a flush makes the group durable too
            durable: self.durable || !flushes.is_empty(),
        };
        let (high, batches) = (self.high, self.batches);
        self.high = 0;
        self.durable = false;
        self.batches = 0;
        (batch, high, batches, flushes)
    }
}

type Shared = std::sync::Arc<(std::sync::Mutex<Queue>, std::sync::Condvar)>;

fn lock(q: &Shared) -> std::sync::MutexGuard<'_, Queue> {
    // a panic while holding the lock leaves plain data behind: keep going
    q.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// A thread that owns the [`Store`] and commits in groups: everything queued
/// while it was busy with the previous commit goes into the next one, merged
/// key by key ([`Queue`]). After each commit it calls
/// `on_commit(highest sequence committed)`.
pub struct Writer {
    queue: Shared,
    thread: Option<std::thread::JoinHandle<Store>>,
}

/// Counters of a writer, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub commits: u64,
    pub batches: u64,
    pub ops: u64,
    pub failures: u64,
}

impl Writer {
    pub fn spawn(
        store: Store,
        on_commit: impl Fn(u64, Result<WriterStats, String>) + Send + 'static,
    ) -> Writer {
        let queue: Shared = Default::default();
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("blf-store".into())
            .spawn(move || {
                let mut stats = WriterStats::default();
                let mut last_error_log: Option<Instant> = None;
                loop {
                    let (batch, high, batches, flushes) = {
                        let mut g = lock(&q);
                        while g.is_idle() && !g.closed {
                            g = q.1.wait(g).unwrap_or_else(|p| p.into_inner());
                        }
                        if g.is_idle() && g.closed {
                            break;
                        }
                        g.take()
                    };
                    let result = if batches == 0 && flushes.is_empty() {
                        Ok(())
                    } else {
                        store
                            .commit([&batch], batch.durable)
                            .map_err(|e| e.to_string())
                    };
                    stats.commits += u64::from(batches > 0);
                    stats.batches += batches;
                    stats.ops += batch.ops.len() as u64;
                    match &result {
                        Ok(()) => {}
                        Err(e) => {
                            stats.failures += 1;
                            // one line per 10 s: a full disk must not flood the log
                            if last_error_log
                                .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                            {
                                tracing::error!(error = %e, "state store commit failed; state since the last commit is not durable");
                                last_error_log = Some(Instant::now());
                            }
                        }
                    }
                    if high > 0 {
                        on_commit(high, result.clone().map(|_| stats));
                    }
                    for f in flushes {
                        let _ = f.send(result.clone());
                    }
                }
                store
            })
            .expect("spawn the store writer thread");
        Writer {
            queue,
            thread: Some(thread),
        }
    }

    /// Queue a batch; `seq` must grow with each call.
    pub fn submit(&self, seq: u64, batch: Batch) {
        let mut g = lock(&self.queue);
        if g.closed {
            return;
        }
        g.push(seq, batch);
        self.queue.1.notify_one();
    }

    /// Changes (distinct keys) waiting for the writer thread.
    pub fn queued(&self) -> usize {
        lock(&self.queue).ops.len()
    }

    /// Commit everything queued so far and wait for it (bounded by `timeout`).
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        let (ack, done) = mpsc::channel();
        {
            let mut g = lock(&self.queue);
            if g.closed || self.thread.is_none() {
                return Err("writer stopped".into());
            }
            g.flushes.push(ack);
            self.queue.1.notify_one();
        }
        done.recv_timeout(timeout)
            .map_err(|_| "state store flush timed out".to_string())?
    }

    /// Stop the thread after it committed everything queued; returns the store.
    pub fn close(mut self) -> Option<Store> {
        self.stop();
        self.thread.take().and_then(|t| t.join().ok())
    }

    fn stop(&self) {
        lock(&self.queue).closed = true;
        self.queue.1.notify_one();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "blf-store-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A writer that cannot keep up (a hanging disk) holds one entry per key
    /// that changed, not one batch per change; the last change of a key wins.
    #[test]
    fn a_lagging_writer_queue_is_bounded_by_the_keys_not_the_traffic() {
        let mut q = Queue::default();
        for seq in 1..=100_000u64 {
            let mut b = Batch::default();
            b.put(
                Table::Phones,
                (seq % 10).to_be_bytes(),
                seq.to_be_bytes().to_vec(),
            );
            if seq % 7 == 0 {
                b.delete(Table::Targets, (seq % 3).to_be_bytes());
            } else {
                b.put(Table::Targets, (seq % 3).to_be_bytes(), vec![1]);
            }
            b.durable = seq == 500;
            q.push(seq, b);
        }
        assert_eq!(q.ops.len(), 13, "10 phone keys + 3 target keys");
        let (batch, high, batches, _) = q.take();
        assert_eq!((high, batches), (100_000, 100_000));
        assert!(batch.durable, "one durable batch makes the group durable");
        let mut snap = Snapshot::default();
        snap.apply(&batch);
        // the last write of every key
        for k in 0..10u64 {
            let last = (99_991..=100_000).find(|s| s % 10 == k).unwrap();
            let row = snap
                .phones
                .iter()
                .find(|(key, _)| key == &k.to_be_bytes())
                .unwrap();
            assert_eq!(row.1, last.to_be_bytes().to_vec());
        }
        // the last writes of the three target keys (99,998–100,000) are puts
        assert_eq!(snap.targets.len(), 3);
        assert!(q.is_idle() && q.ops.is_empty());
    }

    /// Through the thread: many batches rewriting a few keys end as their last
    /// values on disk.
    #[test]
    fn the_writer_commits_the_last_value_of_each_key() {
        let dir = tmp("coalesce");
        let s = Store::open(&dir).unwrap();
        let w = Writer::spawn(s, |_, _| {});
        for seq in 1..=20_000u64 {
            let mut b = Batch::default();
            b.put(
                Table::Meta,
                vec![(seq % 5) as u8],
                seq.to_be_bytes().to_vec(),
            );
            w.submit(seq, b);
        }
        w.flush(Duration::from_secs(10)).unwrap();
        let s = w.close().unwrap();
        let snap = s.load().unwrap();
        let got: Vec<u64> = snap
            .meta
            .iter()
            .map(|(_, v)| u64::from_be_bytes(v.as_slice().try_into().unwrap()))
            .collect();
        assert_eq!(got, vec![20_000, 19_996, 19_997, 19_998, 19_999]);
    }

    #[test]
    fn batches_round_trip_and_deletes_remove() {
        let dir = tmp("rt");
        let s = Store::open(&dir).unwrap();
        let mut b = Batch::default();
        b.put(Table::Phones, 1u64.to_be_bytes(), b"one".to_vec());
        b.put(Table::Phones, 2u64.to_be_bytes(), b"two".to_vec());
        b.put(Table::Meta, b"k".to_vec(), b"v".to_vec());
        let mut b2 = Batch::default();
        b2.delete(Table::Phones, 1u64.to_be_bytes());
        b2.put(Table::Phones, 2u64.to_be_bytes(), b"TWO".to_vec());
        s.commit([&b, &b2], true).unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        let snap = s.load().unwrap();
        assert_eq!(
            snap.phones,
            vec![(2u64.to_be_bytes().to_vec(), b"TWO".to_vec())]
        );
        assert_eq!(snap.meta, vec![(b"k".to_vec(), b"v".to_vec())]);
        assert!(snap.targets.is_empty() && snap.bindings.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn in_memory_apply_matches_a_commit() {
        let dir = tmp("apply");
        let s = Store::open(&dir).unwrap();
        let mut b = Batch::default();
        for i in [5u64, 1, 3] {
            b.put(Table::Phones, i.to_be_bytes(), vec![i as u8]);
        }
        b.delete(Table::Phones, 3u64.to_be_bytes());
        b.put(Table::Phones, 1u64.to_be_bytes(), vec![9]);
        s.commit([&b], false).unwrap();
        let mut mem = Snapshot::default();
        mem.apply(&b);
        assert_eq!(mem, s.load().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_with_a_clear_error() {
        let dir = tmp("lock");
        let _s = Store::open(&dir).unwrap();
        let e = Store::open(&dir).unwrap_err();
        assert!(e.to_string().contains("another process"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_is_created_once_with_mode_0600_and_reused() {
        let dir = tmp("key");
        let k1 = load_or_create_key(&dir).unwrap();
        let k2 = load_or_create_key(&dir).unwrap();
        assert_eq!(k1, k2);
        assert_ne!(k1, [0u8; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // another directory: another key
        let dir2 = tmp("key2");
        assert_ne!(load_or_create_key(&dir2).unwrap(), k1);
        // a damaged key file is an error, not silently replaced
        std::fs::write(dir.join(KEY_FILE), "not a key").unwrap();
        let e = load_or_create_key(&dir).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&dir2);
    }

    #[test]
    fn writer_groups_batches_and_reports_the_highest_sequence() {
        let dir = tmp("writer");
        let s = Store::open(&dir).unwrap();
        let (tx, rx) = mpsc::channel();
        let w = Writer::spawn(s, move |seq, r| {
            let _ = tx.send((seq, r.is_ok()));
        });
        for i in 1..=100u64 {
            let mut b = Batch::default();
            b.put(Table::Targets, i.to_be_bytes(), vec![i as u8]);
            w.submit(i, b);
        }
        w.flush(Duration::from_secs(10)).unwrap();
        let mut last = 0;
        while let Ok((seq, ok)) = rx.try_recv() {
            assert!(ok);
            assert!(seq > last, "sequence numbers grow");
            last = seq;
        }
        assert_eq!(last, 100);
        let s = w.close().unwrap();
        assert_eq!(s.load().unwrap().targets.len(), 100);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
