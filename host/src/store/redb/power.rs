//! Power-loss testing: a record of every write and sync the store makes, and
//! the disk images a power cut could leave behind.
//!
//! Compiled only with the `fault-injection` feature (the test suite's
//! build). With `CAIRN_RECORD_WRITES=FILE` set, the store appends to FILE
//! every file it opens, every write, length change and sync of `cairn.redb`
//! and `cairn.wal`, every sync of the data directory, and every batch it
//! acknowledges, with what that batch made durable. [`replay`] then walks
//! the record and, just before each sync completes, builds the directory a
//! power cut at that moment leaves: every write a completed sync covers,
//! nothing else (a file whose name no directory sync covered is gone). A
//! caller opens each image and checks it against the acknowledgements made
//! until then.
//!
//! Writes are recorded after they are made, a sync's start before it is
//! made and its end after, all under one lock: the record is an order the
//! writes really happened in, and a sync covers exactly the writes recorded
//! before its start.

use crate::store::RunStatus;
use crate::store::{Batch, Write};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// The variable naming the record file.
pub const RECORD_VAR: &str = "CAIRN_RECORD_WRITES";

const OPEN: u8 = 1;
const WRITE: u8 = 2;
const SET_LEN: u8 = 3;
const SYNC_BEGIN: u8 = 4;
const SYNC_END: u8 = 5;
const DIR_SYNC: u8 = 6;
const ACK: u8 = 7;
const RENAME: u8 = 8;
const REMOVE: u8 = 9;

/// The record file, if this process records.
fn recorder() -> Option<&'static Mutex<File>> {
    static RECORDER: OnceLock<Option<Mutex<File>>> = OnceLock::new();
    RECORDER
        .get_or_init(|| {
            let path = std::env::var_os(RECORD_VAR)?;
            let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
            Some(Mutex::new(file.unwrap_or_else(|e| panic!("{RECORD_VAR}={}: {e}", Path::new(&path).display()))))
        })
        .as_ref()
}

fn emit(op: &[u8]) {
    if let Some(out) = recorder() {
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        let len = u32::try_from(op.len()).expect("a recorded op under 4 GiB");
        out.write_all(&len.to_le_bytes()).and_then(|()| out.write_all(op)).expect("writing the write record");
    }
}

fn put_str(op: &mut Vec<u8>, s: &str) {
    op.extend_from_slice(&(s.len() as u32).to_le_bytes());
    op.extend_from_slice(s.as_bytes());
}

/// A store file whose writes and syncs are recorded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Traced(u64);

impl Traced {
    /// Starts recording the file at `path` (just opened; `created` if the
    /// open made it). `None` when this process does not record.
    pub(super) fn opened(path: &Path, created: bool) -> Option<Traced> {
        recorder()?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = u64::from(std::process::id()) << 32 | u64::from(NEXT.fetch_add(1, Ordering::Relaxed));
        let name = file_name(path);
        let mut op = vec![OPEN];
        op.extend_from_slice(&id.to_le_bytes());
        op.push(u8::from(created));
        put_str(&mut op, &name);
        emit(&op);
        Some(Traced(id))
    }

    fn op(self, tag: u8) -> Vec<u8> {
        let mut op = vec![tag];
        op.extend_from_slice(&self.0.to_le_bytes());
        op
    }

    pub(super) fn wrote(self, offset: u64, data: &[u8]) {
        let mut op = self.op(WRITE);
        op.extend_from_slice(&offset.to_le_bytes());
        op.extend_from_slice(data);
        emit(&op);
    }

    pub(super) fn set_len(self, len: u64) {
        let mut op = self.op(SET_LEN);
        op.extend_from_slice(&len.to_le_bytes());
        emit(&op);
    }

    /// Records a sync around `sync`.
    pub(super) fn sync<T>(self, sync: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        emit(&self.op(SYNC_BEGIN));
        let result = sync()?;
        emit(&self.op(SYNC_END));
        Ok(result)
    }
}

/// Records that the directory's entries are durable (an fsync of it).
pub(super) fn dir_synced() {
    emit(&[DIR_SYNC]);
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Records a rename inside the data directory.
pub(super) fn renamed(from: &Path, to: &Path) {
    let mut op = vec![RENAME];
    put_str(&mut op, &file_name(from));
    put_str(&mut op, &file_name(to));
    emit(&op);
}

/// Records a file's removal from the data directory.
pub(super) fn removed(path: &Path) {
    let mut op = vec![REMOVE];
    put_str(&mut op, &file_name(path));
    emit(&op);
}

/// Records that `batches` are acknowledged as durable.
pub(super) fn acknowledged<'a>(batches: impl Iterator<Item = &'a Batch>) {
    if recorder().is_none() {
        return;
    }
    let mut op = vec![ACK];
    for write in batches.flatten() {
        match write {
            Write::Append { run_id, record } => {
                op.push(0);
                put_str(&mut op, run_id);
                op.extend_from_slice(&record.seq.to_le_bytes());
                op.extend_from_slice(&crc32fast::hash(&crate::journal::encode(record)).to_le_bytes());
            }
            Write::PutRun(meta) => {
                op.push(1);
                put_str(&mut op, &meta.id);
                put_str(&mut op, meta.status.as_str());
                op.extend_from_slice(&meta.generation.to_le_bytes());
                op.extend_from_slice(&meta.updated_ms.to_le_bytes());
            }
            Write::PutDeployment(deployment) => {
                op.push(2);
                put_str(&mut op, &deployment.name);
                op.extend_from_slice(&deployment.last_version.to_le_bytes());
            }
            _ => {}
        }
    }
    emit(&op);
}

/// A redb file backend that records what redb writes and syncs.
#[derive(Debug)]
pub(super) struct TracedBackend {
    inner: redb::backends::FileBackend,
    traced: Traced,
}

impl TracedBackend {
    /// Opens (creating) `path` recorded; `None` when this process does not
    /// record.
    pub(super) fn open(path: &Path) -> Result<Option<TracedBackend>, redb::DatabaseError> {
        if recorder().is_none() {
            return Ok(None);
        }
        let created = !path.exists();
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let traced = Traced::opened(path, created).expect("recording");
        Ok(Some(TracedBackend { inner: redb::backends::FileBackend::new(file)?, traced }))
    }
}

impl redb::StorageBackend for TracedBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)?;
        self.traced.set_len(len);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.traced.sync(|| self.inner.sync_data())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)?;
        self.traced.wrote(offset, data);
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: std::ops::Bound<u64>, end: std::ops::Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: std::ops::Bound<u64>, end: std::ops::Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// What an acknowledged batch made durable, as far as a check can see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acked {
    /// A journal record: its run, seq and the CRC-32 of its encoding.
    Append {
        /// The run.
        run_id: String,
        /// The record's seq.
        seq: u64,
        /// `crc32fast::hash(&journal::encode(record))`.
        crc: u32,
    },
    /// A run's metadata.
    Run {
        /// The run.
        run_id: String,
        /// Its status then.
        status: RunStatus,
        /// Its generation then.
        generation: u32,
        /// Its `updated_ms` then.
        updated_ms: u64,
    },
    /// A deployment, with the highest version it had given.
    Deployment {
        /// The deployed name.
        name: String,
        /// Its `last_version` then.
        last_version: u32,
    },
}

/// A power cut the record allows for.
#[derive(Debug)]
pub struct Cut<'a> {
    /// The directory as the cut leaves it: written fresh for this cut.
    pub dir: &'a Path,
    /// Which cut this is (0 first), and how many syncs had completed.
    pub index: usize,
    /// Everything acknowledged before the cut, in order.
    pub acked: &'a [Acked],
}

/// A file the record knows: what a cut keeps of it and what it holds now.
#[derive(Default, Clone)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Changes not yet covered by a completed sync.
    pending: Vec<Change>,
    /// How many of `pending` the sync under way covers.
    covered: Option<usize>,
}

#[derive(Clone)]
enum Change {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

impl Change {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Change::Write(offset, data) => {
                let (start, end) = (*offset as usize, *offset as usize + data.len());
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[start..end].copy_from_slice(data);
            }
            Change::SetLen(len) => bytes.resize(*len as usize, 0),
        }
    }
}

#[derive(Default)]
struct Disk {
    inodes: Vec<Inode>,
    /// Names as the process sees them, and as a cut keeps them.
    names: BTreeMap<String, usize>,
    durable_names: BTreeMap<String, usize>,
    /// Recorded file ids → inodes.
    open: HashMap<u64, usize>,
    /// Changes to the names since the last directory sync, in order (a
    /// journaling file system commits them in that order).
    name_changes: Vec<(String, Option<usize>)>,
}

impl Disk {
    fn name(&mut self, name: String, inode: Option<usize>) {
        match inode {
            Some(inode) => self.names.insert(name.clone(), inode),
            None => self.names.remove(&name),
        };
        self.name_changes.push((name, inode));
    }
}

impl Disk {
    fn write_image(&self, dir: &Path, durable: bool) -> io::Result<()> {
        let names = if durable { &self.durable_names } else { &self.names };
        for (name, &inode) in names {
            let inode = &self.inodes[inode];
            std::fs::write(dir.join(name), if durable { &inode.durable } else { &inode.current })?;
        }
        Ok(())
    }
}

impl Disk {
    /// The durable image with a random part of the pending changes on top:
    /// each 4 KiB piece of an unsynced write by the toss of a coin, and the
    /// name changes since the last directory sync up to a random point.
    fn write_torn_image(&self, dir: &Path, seed: u64) -> io::Result<()> {
        let mut state = seed | 1;
        let mut next = move || {
            // xorshift64: enough for tossing coins.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut names = self.durable_names.clone();
        let landed = (next() % (self.name_changes.len() as u64 + 1)) as usize;
        for (name, inode) in &self.name_changes[..landed] {
            match inode {
                Some(inode) => names.insert(name.clone(), *inode),
                None => names.remove(name),
            };
        }
        for (name, &inode) in &names {
            let inode = &self.inodes[inode];
            let mut bytes = inode.durable.clone();
            for change in &inode.pending {
                match change {
                    Change::Write(offset, data) => {
                        let mut at = 0usize;
                        while at < data.len() {
                            let piece = (4096 - ((*offset as usize + at) % 4096)).min(data.len() - at);
                            if next() & 1 == 1 {
                                Change::Write(*offset + at as u64, data[at..at + piece].to_vec()).apply(&mut bytes);
                            }
                            at += piece;
                        }
                    }
                    Change::SetLen(_) => {
                        if next() & 1 == 1 {
                            change.apply(&mut bytes);
                        }
                    }
                }
            }
            std::fs::write(dir.join(name), bytes)?;
        }
        Ok(())
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("the write record ends inside an op"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn str(&mut self) -> io::Result<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| bad("a name that is not UTF-8"))
    }
}

/// What a power cut loses of the writes no completed sync covers.
#[derive(Debug, Clone, Copy)]
pub enum Lost {
    /// All of them: the disk kept exactly what was synced.
    EveryUnsyncedWrite,
    /// Each of them by the toss of a coin (seeded): the disk had written
    /// some back on its own, in any order; so may a new file's name.
    SomeUnsyncedWrites {
        /// The seed of the coin.
        seed: u64,
    },
}

/// Walks the record at `record` and calls `check` once per power cut: just
/// before each completed sync and each directory sync (the most
/// acknowledged with the least made durable) and once after the last op. `take` chooses which cuts are
/// checked (by index; the others are only counted); each chosen cut's
/// image, with what `lost` says of the unsynced writes, is written to a
/// fresh directory under `scratch`. Returns how many cuts the record allows
/// for.
pub fn replay(
    record: &Path,
    scratch: &Path,
    lost: Lost,
    mut take: impl FnMut(usize) -> bool,
    mut check: impl FnMut(Cut<'_>) -> io::Result<()>,
) -> io::Result<usize> {
    let mut cuts = 0;
    let disk = walk(record, |disk, acked| {
        let index = cuts;
        cuts += 1;
        if !take(index) {
            return Ok(());
        }
        let dir = scratch.join(format!("cut-{index}"));
        std::fs::create_dir_all(&dir)?;
        match lost {
            Lost::EveryUnsyncedWrite => disk.write_image(&dir, true)?,
            Lost::SomeUnsyncedWrites { seed } => disk.write_torn_image(&dir, seed ^ index as u64)?,
        }
        let result = check(Cut { dir: &dir, index, acked });
        std::fs::remove_dir_all(&dir)?;
        result
    })?;
    drop(disk);
    Ok(cuts)
}

/// Writes into `dir` the directory as the recorded processes left it
/// (every write, synced or not): what a cut's image is compared with.
pub fn finished(record: &Path, dir: &Path) -> io::Result<()> {
    let disk = walk(record, |_, _| Ok(()))?;
    std::fs::create_dir_all(dir)?;
    disk.write_image(dir, false)
}

/// Applies the record's ops in order, calling `at_cut` just before each
/// sync completes and once at the end.
fn walk(record: &Path, mut at_cut: impl FnMut(&Disk, &[Acked]) -> io::Result<()>) -> io::Result<Disk> {
    let mut bytes = Vec::new();
    File::open(record)?.read_to_end(&mut bytes)?;
    let mut disk = Disk::default();
    let mut acked = Vec::new();
    let mut at = Reader(&bytes);
    while !at.0.is_empty() {
        let len = at.u32()? as usize;
        let mut op = Reader(at.take(len)?);
        match op.u8()? {
            OPEN => {
                let (id, created, name) = (op.u64()?, op.u8()? == 1, op.str()?);
                let inode = match (created, disk.names.get(&name)) {
                    (false, Some(&inode)) => inode,
                    (false, None) => return Err(bad(format!("{name} was opened before the record began"))),
                    (true, _) => {
                        disk.inodes.push(Inode::default());
                        disk.inodes.len() - 1
                    }
                };
                if created {
                    disk.name(name, Some(inode));
                } else {
                    disk.names.insert(name, inode);
                }
                disk.open.insert(id, inode);
            }
            tag @ (WRITE | SET_LEN | SYNC_BEGIN | SYNC_END) => {
                let id = op.u64()?;
                let inode = *disk.open.get(&id).ok_or_else(|| bad("an op on a file never opened"))?;
                if tag == SYNC_END {
                    at_cut(&disk, &acked)?;
                }
                let inode = &mut disk.inodes[inode];
                match tag {
                    WRITE => {
                        let offset = op.u64()?;
                        let change = Change::Write(offset, op.0.to_vec());
                        change.apply(&mut inode.current);
                        inode.pending.push(change);
                    }
                    SET_LEN => {
                        let change = Change::SetLen(op.u64()?);
                        change.apply(&mut inode.current);
                        inode.pending.push(change);
                    }
                    SYNC_BEGIN => inode.covered = Some(inode.pending.len()),
                    _ => {
                        let covered = inode.covered.take().ok_or_else(|| bad("a sync ended that never began"))?;
                        for change in inode.pending.drain(..covered) {
                            change.apply(&mut inode.durable);
                        }
                    }
                }
            }
            DIR_SYNC => {
                at_cut(&disk, &acked)?;
                disk.durable_names = disk.names.clone();
                disk.name_changes.clear();
            }
            RENAME => {
                let (from, to) = (op.str()?, op.str()?);
                let inode = *disk.names.get(&from).ok_or_else(|| bad(format!("{from} renamed, never opened")))?;
                disk.name(from, None);
                disk.name(to, Some(inode));
            }
            REMOVE => {
                let name = op.str()?;
                disk.name(name, None);
            }
            ACK => {
                while !op.0.is_empty() {
                    acked.push(match op.u8()? {
                        0 => Acked::Append { run_id: op.str()?, seq: op.u64()?, crc: op.u32()? },
                        1 => Acked::Run {
                            run_id: op.str()?,
                            status: RunStatus::parse(&op.str()?).ok_or_else(|| bad("an unknown run status"))?,
                            generation: op.u32()?,
                            updated_ms: op.u64()?,
                        },
                        2 => Acked::Deployment { name: op.str()?, last_version: op.u32()? },
                        other => return Err(bad(format!("an unknown acknowledgement kind {other}"))),
                    });
                }
            }
            other => return Err(bad(format!("an unknown op {other}"))),
        }
    }
    at_cut(&disk, &acked)?;
    Ok(disk)
}
