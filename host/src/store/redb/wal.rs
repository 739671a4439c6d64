//! The write-ahead log in front of redb.
//!
//! A durable redb commit rewrites several B-tree pages scattered over the
//! file and then fsyncs them all: on the disks we measured that costs about
//! twice one sequential write (425 µs against 197 µs; see DESIGN.md). So a
//! group of batches is made durable by appending it to `cairn.wal`, a file
//! whose space is already written (zeros), with one `fdatasync`; the same
//! group is then committed to redb without an fsync (`Durability::None`),
//! which is where readers see it. The record is written, and its writeback
//! started, before the group is applied to redb, and synced after: the disk
//! takes the bytes while the B-trees change. redb keeps only its last durable commit
//! across a crash, so every so often the writer makes a durable redb commit
//! (a checkpoint) and starts the log again from the top.
//!
//! Which log records still count is decided by a generation number. A
//! checkpoint stores the next generation in redb's `meta` table in the same
//! durable commit; every record carries the generation it was written in.
//! Recovery reads records from the start of the file while they carry the
//! stored generation and their checksum holds. Older records left further
//! on (from before the last checkpoint) and a torn last record (never
//! acknowledged) end the log.
//!
//! A record is `len: u32, generation: u64, crc32: u32` (little-endian, the
//! checksum over the generation and the payload) then `len` payload bytes:
//! the group's batches in the encoding below.
//!
//! The file starts with a 64-byte header: `CAIRNWAL`, format 1, the id of
//! the store it belongs to (also in redb's `meta` table) and how long the
//! file has been made (every growth is synced, then the header). So a log
//! of another store put in its place, or one cut short, is told from a log
//! that merely ends (see `Store::open`). Records follow the header. A log
//! of an older Cairn has no header; its records start at byte 0 and are
//! replayed once, after which the log gets its header.

use crate::journal::{self, Record};
use crate::store::{Batch, Write};
use crate::store::{Deployment, RunMeta, StoredCompletion, StoredSignal};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The log's file name inside the data directory.
pub(super) const FILE_NAME: &str = "cairn.wal";

/// Bytes of the record header.
const HEADER: usize = 16;

/// Bytes of the file header in front of the records.
pub(super) const FILE_HEADER: u64 = 64;

/// The file header's first bytes.
const MAGIC: &[u8; 8] = b"CAIRNWAL";

/// What a log's file header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    /// The store the log belongs to.
    pub(super) store: u64,
    /// How long the file has been made: it is never shorter, unless cut.
    pub(super) allocated: u64,
}

impl Identity {
    fn encode(self) -> [u8; FILE_HEADER as usize] {
        let mut bytes = [0u8; FILE_HEADER as usize];
        bytes[0..8].copy_from_slice(MAGIC);
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        bytes[12..20].copy_from_slice(&self.store.to_le_bytes());
        bytes[20..28].copy_from_slice(&self.allocated.to_le_bytes());
        let crc = crc32fast::hash(&bytes[0..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Identity> {
        let bytes = bytes.get(..FILE_HEADER as usize)?;
        let crc = u32::from_le_bytes(bytes[28..32].try_into().ok()?);
        let format = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
        if &bytes[0..8] != MAGIC || format != 1 || crc32fast::hash(&bytes[0..28]) != crc {
            return None;
        }
        Some(Identity {
            store: u64::from_le_bytes(bytes[12..20].try_into().ok()?),
            allocated: u64::from_le_bytes(bytes[20..28].try_into().ok()?),
        })
    }
}

/// The log grows by this much at a time, written as zeros so that a later
/// write into it changes no file metadata (an append that grows the file
/// costs a journal commit of the file system on every fsync).
const GROWTH: u64 = 1 << 20;

/// Past this size the writer checkpoints and the log starts again.
pub(super) const CHECKPOINT_BYTES: u64 = 16 << 20;

/// The open log.
pub(super) struct Wal {
    file: File,
    path: PathBuf,
    /// The generation records are written in now.
    generation: u64,
    /// Where the next record goes.
    end: u64,
    /// Bytes of the file already written (zeros past `end`).
    allocated: u64,
    /// Where records start: after the file header, or at 0 in a log of an
    /// older Cairn.
    base: u64,
    /// The file header, if the file has one.
    identity: Option<Identity>,
    /// Its writes and syncs are recorded, in a power-loss test.
    traced: Option<super::power::Traced>,
}

/// Damage in the log: a record of the current generation that does not
/// check out, followed further on by whole records of that generation. A
/// crash can only cut short the last record written (each is synced before
/// the next is written), so whole records after a bad one mean the file was
/// damaged, not torn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDamage {
    /// Where the bad record starts.
    pub offset: u64,
    /// Where the first whole record after it starts.
    pub resumes_at: u64,
    /// Whole records before the damage.
    pub intact: usize,
}

/// A record [`Wal::write`] wrote, for [`Wal::sync`] to make count.
#[must_use = "a written record counts only once it is synced"]
pub(super) struct Written {
    generation: u64,
    start: u64,
    end: u64,
}

impl Written {
    /// Where the record starts in the file.
    pub(super) fn start(&self) -> u64 {
        self.start
    }
}

impl Wal {
    /// Opens `dir/cairn.wal`, creating it (and making its name durable) if
    /// `create`; `None` if it does not exist and `create` is false.
    pub(super) fn open(dir: &Path, create: bool) -> io::Result<Option<Wal>> {
        let path = dir.join(FILE_NAME);
        let existed = path.exists();
        if !existed && !create {
            return Ok(None);
        }
        if !existed {
            create_log(dir, &path)?;
        }
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
        let traced = super::power::Traced::opened(&path, false);
        let allocated = file.metadata()?.len();
        let mut top = vec![0u8; allocated.min(FILE_HEADER) as usize];
        file.read_exact_at(&mut top, 0)?;
        let identity = Identity::decode(&top);
        let base = if identity.is_some() { FILE_HEADER } else { 0 };
        Ok(Some(Wal { file, path, generation: 0, end: base, allocated, base, identity, traced }))
    }

    /// The file header, if the file has one.
    pub(super) fn identity(&self) -> Option<Identity> {
        self.identity
    }

    /// How long the file is.
    pub(super) fn file_len(&self) -> u64 {
        self.allocated
    }

    /// Gives the file the header of store `store` (after its records were
    /// replayed, or to give up those of a log that is not this store's):
    /// the records in it are zeroed first, so none counts again.
    pub(super) fn initialize(&mut self, store: u64) -> io::Result<()> {
        let allocated = self.allocated;
        self.allocated = FILE_HEADER.min(allocated);
        // Its old header is not rewritten on the way.
        self.identity = None;
        self.grow(allocated.max(GROWTH))?;
        self.base = FILE_HEADER;
        self.end = FILE_HEADER;
        self.write_identity(Identity { store, allocated: self.allocated })
    }

    fn write_identity(&mut self, identity: Identity) -> io::Result<()> {
        self.write_at(&identity.encode(), 0)?;
        self.sync_data()?;
        self.identity = Some(identity);
        Ok(())
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of records written since the last checkpoint.
    pub(super) fn len(&self) -> u64 {
        self.end - self.base
    }

    /// The payloads of generation `generation`'s records, in order.
    pub(super) fn records(&self, generation: u64) -> io::Result<Vec<Vec<u8>>> {
        self.records_until(generation, self.allocated)
    }

    /// The payloads of generation `generation`'s records that end by byte
    /// `until`.
    fn records_until(&self, generation: u64, until: u64) -> io::Result<Vec<Vec<u8>>> {
        let bytes = self.read_to(until)?;
        let mut records = Vec::new();
        let mut at = self.base as usize;
        while let Some(end) = whole_record_at(&bytes, at, generation) {
            records.push(bytes[at + HEADER..end].to_vec());
            at = end;
        }
        Ok(records)
    }

    /// The file's first `until` bytes (at most what is allocated).
    fn read_to(&self, until: u64) -> io::Result<Vec<u8>> {
        let len = until.min(self.allocated);
        let mut bytes = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
        self.file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }

    /// Whether generation `generation`'s records are damaged (see
    /// [`LogDamage`]) rather than ending where they end (at zeros, an older
    /// generation's records, or a torn last record).
    pub(super) fn damage(&self, generation: u64) -> io::Result<Option<LogDamage>> {
        let bytes = self.read_to(self.allocated)?;
        let (mut at, mut intact) = (self.base as usize, 0usize);
        while let Some(end) = whole_record_at(&bytes, at, generation) {
            at = end;
            intact += 1;
        }
        let stop = at;
        let wanted = generation.to_le_bytes();
        let last = bytes.len().saturating_sub(HEADER);
        for candidate in stop + 1..=last {
            if bytes[candidate + 4..candidate + 12] == wanted
                && whole_record_at(&bytes, candidate, generation).is_some()
            {
                return Ok(Some(LogDamage { offset: stop as u64, resumes_at: candidate as u64, intact }));
            }
        }
        Ok(None)
    }

    /// The generation of the first whole record, if one is there (of any
    /// generation).
    pub(super) fn first_generation(&self) -> io::Result<Option<u64>> {
        let (base, mut header) = (self.base, [0u8; HEADER]);
        if self.allocated < base + HEADER as u64 {
            return Ok(None);
        }
        self.file.read_exact_at(&mut header, base)?;
        let len = u64::from(u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")));
        let generation = u64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
        if len == 0 || base + HEADER as u64 + len > self.allocated {
            return Ok(None);
        }
        let mut bytes = vec![0u8; HEADER + len as usize];
        self.file.read_exact_at(&mut bytes, base)?;
        Ok(whole_record_at(&bytes, 0, generation).map(|_| generation))
    }

    /// Stops counting the records from byte `start` on (one synced whose
    /// group then failed to commit to redb): the writer retries that group,
    /// which writes its record there again, so a reopen meanwhile must not
    /// replay it as well.
    pub(super) fn forget_from(&mut self, start: u64) {
        self.end = self.end.min(start);
    }

    /// The payloads of the records this log synced since it last
    /// restarted: what a reopen of the store in this process must replay.
    /// A record written after them was never acknowledged (its commit
    /// failed) and, though it may sit whole in the file, does not count.
    pub(super) fn synced_records(&self) -> io::Result<Vec<Vec<u8>>> {
        self.records_until(self.generation, self.end)
    }

    /// Starts writing generation `generation` from the top of the file.
    pub(super) fn restart(&mut self, generation: u64) {
        self.generation = generation;
        self.end = self.base;
    }

    /// Appends one record and waits until it is on disk. On an error the
    /// record does not count: the next append writes over it.
    #[cfg(test)]
    pub(super) fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        let written = self.write(payload)?;
        self.sync(written)
    }

    /// Writes one record after the last and starts its writeback without
    /// waiting for it: the caller does other work (applying the group to
    /// redb) while the disk takes the bytes, then passes the returned
    /// [`Written`] to [`Wal::sync`]. The record does not count until `sync`
    /// returns; after an error, or without a `sync`, the next write goes
    /// over it.
    pub(super) fn write(&mut self, payload: &[u8]) -> io::Result<Written> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a commit larger than 4 GiB"))?;
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&self.generation.to_le_bytes());
        record.extend_from_slice(&checksum(self.generation, payload).to_le_bytes());
        record.extend_from_slice(payload);
        let end = self.end + record.len() as u64;
        if end > self.allocated {
            self.grow(end)?;
        }
        self.write_at(&record, self.end)?;
        start_writeback(&self.file, self.end, record.len());
        Ok(Written { generation: self.generation, start: self.end, end })
    }

    /// Waits until the record [`Wal::write`] wrote is on disk (one
    /// `fdatasync`: the space was written ahead, so no metadata changes),
    /// and from then on counts it.
    pub(super) fn sync(&mut self, written: Written) -> io::Result<()> {
        if written.generation != self.generation || written.start != self.end {
            return Err(io::Error::other("a log record was synced after the log moved on; it was not counted"));
        }
        self.sync_data()?;
        self.end = written.end;
        Ok(())
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)?;
        if let Some(traced) = self.traced {
            traced.wrote(offset, bytes);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        match self.traced {
            Some(traced) => traced.sync(|| self.file.sync_data()),
            None => self.file.sync_data(),
        }
    }

    /// Writes zeros up to at least `needed` bytes, a whole [`GROWTH`] at a
    /// time, and makes the new size durable.
    fn grow(&mut self, needed: u64) -> io::Result<()> {
        let target = needed.div_ceil(GROWTH) * GROWTH;
        let zeros = vec![0u8; 1 << 16];
        let mut at = self.allocated;
        while at < target {
            let n = (target - at).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.sync_data()?;
        self.allocated = target;
        // The header says how long the file is now, once the zeros are
        // durable: a shorter file later was cut.
        match self.identity {
            Some(identity) => self.write_identity(Identity { allocated: target, ..identity }),
            None => Ok(()),
        }
    }
}

/// The store id of a log that no store has claimed yet: a new log has it
/// until the store's open gives it its own.
pub(super) const UNCLAIMED: u64 = 0;

/// Makes a new log in one step: its header (of no store yet) and first
/// megabyte of zeros written and synced as `cairn.wal.new`, then renamed
/// into place and the directory synced. So a log without a header, or an
/// empty one, is never one Cairn made: it was damaged, cut or replaced.
fn create_log(dir: &Path, path: &Path) -> io::Result<()> {
    let fresh = dir.join(format!("{FILE_NAME}.new"));
    if fresh.exists() {
        std::fs::remove_file(&fresh)?;
        super::power::removed(&fresh);
    }
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&fresh)?;
    let mut wal = Wal {
        file,
        path: fresh.clone(),
        generation: 0,
        end: FILE_HEADER,
        allocated: 0,
        base: FILE_HEADER,
        identity: None,
        traced: super::power::Traced::opened(&fresh, true),
    };
    wal.grow(GROWTH)?;
    wal.write_identity(Identity { store: UNCLAIMED, allocated: wal.allocated })?;
    drop(wal);
    std::fs::rename(&fresh, path)?;
    super::power::renamed(&fresh, path);
    File::open(dir)?.sync_all()?;
    super::power::dir_synced();
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `offset` to the disk now,
/// without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so the data
/// transfer overlaps what the writer does before its `fdatasync`. It is only
/// a head start: durability comes from the `fdatasync`, so a failure here is
/// ignored (that call reports any real I/O error).
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: usize) {}

/// The end of the whole record of `generation` at `at` in `bytes`, if one
/// is there.
fn whole_record_at(bytes: &[u8], at: usize, generation: u64) -> Option<usize> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let record_generation = u64::from_le_bytes(header[4..12].try_into().ok()?);
    let crc = u32::from_le_bytes(header[12..16].try_into().ok()?);
    if len == 0 || record_generation != generation {
        return None;
    }
    let end = at.checked_add(HEADER)?.checked_add(len)?;
    let payload = bytes.get(at + HEADER..end)?;
    (checksum(generation, payload) == crc).then_some(end)
}

fn checksum(generation: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&generation.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Encodes a group's batches as one log payload.
pub(super) fn encode_group<'a>(batches: impl ExactSizeIterator<Item = &'a Batch>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * batches.len());
    put_u32(&mut out, batches.len() as u32);
    for batch in batches {
        put_u32(&mut out, batch.len() as u32);
        for write in batch {
            encode_write(write, &mut out);
        }
    }
    out
}

/// Decodes [`encode_group`]'s payload.
pub(super) fn decode_group(payload: &[u8]) -> Result<Vec<Batch>, String> {
    let mut input = payload;
    let batches = take_u32(&mut input)?;
    let mut out = Vec::with_capacity(batches.min(4096) as usize);
    for _ in 0..batches {
        let writes = take_u32(&mut input)?;
        let mut batch = Vec::with_capacity(writes.min(4096) as usize);
        for _ in 0..writes {
            batch.push(decode_write(&mut input)?);
        }
        out.push(batch);
    }
    if !input.is_empty() {
        return Err(format!("{} bytes after the last batch", input.len()));
    }
    Ok(out)
}

/// Each write's tag in the log; `decode_write` reads them back.
fn tag(write: &Write) -> u8 {
    match write {
        Write::PutRun(_) => 0,
        Write::Append { .. } => 1,
        Write::PutCompletion { .. } => 2,
        Write::DeleteCompletion { .. } => 3,
        Write::PutTimer { .. } => 4,
        Write::DeleteTimer { .. } => 5,
        Write::PutSignal { .. } => 6,
        Write::DeleteSignal { .. } => 7,
        Write::ContinueAsNew { .. } => 8,
        Write::PutAttempts { .. } => 9,
        Write::DeleteAttempts { .. } => 10,
        Write::PutDeployment(_) => 11,
        Write::PutComponent { .. } => 12,
        Write::PutCompiled { .. } => 13,
        Write::PutSchedule(_) => 14,
        Write::DeleteSchedule { .. } => 15,
        Write::DeleteRun { .. } => 16,
        Write::DeleteComponent { .. } => 17,
        Write::Promote { .. } => 18,
    }
}

fn encode_write(write: &Write, out: &mut Vec<u8>) {
    out.push(tag(write));
    match write {
        Write::PutRun(meta) => put_json(out, meta),
        Write::Append { run_id, record } => {
            put_str(out, run_id);
            put_bytes(out, &journal::encode(record));
        }
        Write::PutCompletion { run_id, handle, completion } => {
            put_str(out, run_id);
            put_u32(out, *handle);
            put_json(out, completion);
        }
        Write::DeleteCompletion { run_id, handle } | Write::DeleteAttempts { run_id, handle } => {
            put_str(out, run_id);
            put_u32(out, *handle);
        }
        Write::PutTimer { due_ms, run_id, handle } | Write::DeleteTimer { due_ms, run_id, handle } => {
            put_u64(out, *due_ms);
            put_str(out, run_id);
            put_u32(out, *handle);
        }
        Write::PutSignal { run_id, seq, signal } => {
            put_str(out, run_id);
            put_u64(out, *seq);
            put_json(out, signal);
        }
        Write::DeleteSignal { run_id, seq } => {
            put_str(out, run_id);
            put_u64(out, *seq);
        }
        Write::ContinueAsNew { meta, start } => {
            put_json(out, meta.as_ref());
            put_bytes(out, &journal::encode(start));
        }
        Write::PutAttempts { run_id, handle, failed } => {
            put_str(out, run_id);
            put_u32(out, *handle);
            put_u32(out, *failed);
        }
        Write::PutDeployment(deployment) => put_json(out, deployment),
        Write::PutComponent { sha256, bytes } => {
            put_str(out, sha256);
            put_bytes(out, bytes);
        }
        Write::PutCompiled { sha256, engine, bytes } => {
            put_str(out, sha256);
            put_str(out, engine);
            put_bytes(out, bytes);
        }
        Write::PutSchedule(schedule) => put_json(out, schedule),
        Write::DeleteSchedule { name } => put_str(out, name),
        Write::DeleteRun { run_id } => put_str(out, run_id),
        Write::DeleteComponent { sha256 } => put_str(out, sha256),
        Write::Promote { workflow, key, admission } => {
            put_str(out, workflow);
            put_str(out, key);
            put_u32(out, admission.limit);
            let rate = admission.rate.unwrap_or(crate::store::Rate { every_ms: 0, burst: 0 });
            put_u64(out, rate.every_ms);
            put_u32(out, rate.burst);
        }
    }
}

fn decode_write(input: &mut &[u8]) -> Result<Write, String> {
    let tag = take(input, 1)?[0];
    Ok(match tag {
        0 => Write::PutRun(take_json::<RunMeta>(input)?),
        1 => Write::Append { run_id: take_str(input)?, record: take_record(input)? },
        2 => Write::PutCompletion {
            run_id: take_str(input)?,
            handle: take_u32(input)?,
            completion: take_json::<StoredCompletion>(input)?,
        },
        3 => Write::DeleteCompletion { run_id: take_str(input)?, handle: take_u32(input)? },
        4 => Write::PutTimer { due_ms: take_u64(input)?, run_id: take_str(input)?, handle: take_u32(input)? },
        5 => Write::DeleteTimer { due_ms: take_u64(input)?, run_id: take_str(input)?, handle: take_u32(input)? },
        6 => Write::PutSignal {
            run_id: take_str(input)?,
            seq: take_u64(input)?,
            signal: take_json::<StoredSignal>(input)?,
        },
        7 => Write::DeleteSignal { run_id: take_str(input)?, seq: take_u64(input)? },
        8 => {
            Write::ContinueAsNew { meta: Box::new(take_json::<RunMeta>(input)?), start: Box::new(take_record(input)?) }
        }
        9 => Write::PutAttempts { run_id: take_str(input)?, handle: take_u32(input)?, failed: take_u32(input)? },
        10 => Write::DeleteAttempts { run_id: take_str(input)?, handle: take_u32(input)? },
        11 => Write::PutDeployment(take_json::<Deployment>(input)?),
        12 => Write::PutComponent { sha256: take_str(input)?, bytes: take_bytes(input)?.into() },
        13 => Write::PutCompiled { sha256: take_str(input)?, engine: take_str(input)?, bytes: take_bytes(input)? },
        14 => Write::PutSchedule(take_json::<crate::store::Schedule>(input)?),
        15 => Write::DeleteSchedule { name: take_str(input)? },
        16 => Write::DeleteRun { run_id: take_str(input)? },
        17 => Write::DeleteComponent { sha256: take_str(input)? },
        18 => {
            let (workflow, key, limit) = (take_str(input)?, take_str(input)?, take_u32(input)?);
            let rate = crate::store::Rate { every_ms: take_u64(input)?, burst: take_u32(input)? };
            let rate = (rate.every_ms > 0).then_some(rate);
            Write::Promote { workflow, key, admission: crate::store::Admission { limit, rate } }
        }
        other => return Err(format!("unknown write tag {other}")),
    })
}

/// Serialising the store's plain row types cannot fail.
fn put_json(out: &mut Vec<u8>, value: &impl serde::Serialize) {
    put_bytes(out, &serde_json::to_vec(value).expect("store rows serialise"));
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if input.len() < n {
        return Err(format!("record cut short ({} bytes left, {n} needed)", input.len()));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn take_u32(input: &mut &[u8]) -> Result<u32, String> {
    Ok(u32::from_le_bytes(take(input, 4)?.try_into().expect("4 bytes")))
}

fn take_u64(input: &mut &[u8]) -> Result<u64, String> {
    Ok(u64::from_le_bytes(take(input, 8)?.try_into().expect("8 bytes")))
}

fn take_slice<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let len = take_u32(input)? as usize;
    take(input, len)
}

fn take_bytes(input: &mut &[u8]) -> Result<Vec<u8>, String> {
    take_slice(input).map(<[u8]>::to_vec)
}

fn take_str(input: &mut &[u8]) -> Result<String, String> {
    String::from_utf8(take_bytes(input)?).map_err(|e| e.to_string())
}

fn take_json<T: serde::de::DeserializeOwned>(input: &mut &[u8]) -> Result<T, String> {
    serde_json::from_slice(take_slice(input)?).map_err(|e| e.to_string())
}

fn take_record(input: &mut &[u8]) -> Result<Record, String> {
    journal::decode(take_slice(input)?).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(seq: u64) -> Write {
        Write::Append { run_id: "r".into(), record: crate::store::tests::record(seq) }
    }

    fn debug(batches: &[Batch]) -> String {
        format!("{batches:?}")
    }

    /// Records read back in order; a torn tail and the records of an
    /// older generation past the end do not count.
    #[test]
    fn only_whole_records_of_the_current_generation_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), true).unwrap().unwrap();
        wal.restart(1);
        for seq in 0..3 {
            wal.append(&encode_group([vec![append(seq)]].iter())).unwrap();
        }
        let first = wal.records(1).unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(debug(&decode_group(&first[2]).unwrap()), debug(&[vec![append(2)]]));

        // A checkpoint: generation 2 writes over the first record only.
        wal.restart(2);
        wal.append(&encode_group([vec![append(9), append(10)]].iter())).unwrap();
        let second = wal.records(2).unwrap();
        assert_eq!(second.len(), 1, "generation 1's records further on are not read");
        assert_eq!(debug(&decode_group(&second[0]).unwrap()), debug(&[vec![append(9), append(10)]]));
        assert!(wal.records(1).unwrap().is_empty(), "the first record now has generation 2");

        // A torn second record: its last byte never reached the disk.
        let end = wal.end;
        wal.append(&encode_group([vec![append(11)]].iter())).unwrap();
        let last = wal.end - 1;
        wal.file.write_all_at(&[0xff], last).unwrap();
        assert_eq!(wal.records(2).unwrap().len(), 1, "a record whose checksum fails ends the log");
        assert!(end < last);

        // Reopened, the file still holds the same records.
        drop(wal);
        let wal = Wal::open(dir.path(), false).unwrap().unwrap();
        assert_eq!(wal.records(2).unwrap(), second);
        // Neither the older generation's records nor the torn tail is damage.
        assert_eq!(wal.damage(2).unwrap(), None);
    }

    /// One bad byte in a record with whole records after it is damage, said
    /// with where it is; the same byte in the last record is a torn tail.
    #[test]
    fn a_bad_record_followed_by_whole_ones_is_damage_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), true).unwrap().unwrap();
        wal.restart(4);
        let mut starts = Vec::new();
        for seq in 0..5 {
            starts.push(wal.end);
            wal.append(&encode_group([vec![append(seq)]].iter())).unwrap();
        }
        assert_eq!(wal.damage(4).unwrap(), None, "a clean log");
        // The last record torn: not damage.
        let end = wal.end;
        let mut byte = [0u8; 1];
        wal.file.read_exact_at(&mut byte, end - 1).unwrap();
        wal.file.write_all_at(&[byte[0] ^ 0xff], end - 1).unwrap();
        assert_eq!(wal.damage(4).unwrap(), None, "a torn last record is what a crash leaves");
        // A flipped bit in the payload of record 2, records 3 and 4 whole
        // after it: damage at record 2, resuming at record 3.
        wal.file.write_all_at(&byte, end - 1).unwrap();
        let at = starts[2] + HEADER as u64 + 1;
        wal.file.read_exact_at(&mut byte, at).unwrap();
        wal.file.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
        let damage = wal.damage(4).unwrap().expect("the flipped bit is found");
        assert_eq!(damage, LogDamage { offset: starts[2], resumes_at: starts[3], intact: 2 });
        assert_eq!(wal.records(4).unwrap().len(), 2, "the intact prefix is what salvage keeps");
    }

    /// A store an older Cairn made has no id and a log without a header,
    /// its records from byte 0: they are replayed, and the log gets its
    /// header (the next open finds a log of this store).
    #[tokio::test]
    async fn a_log_of_an_older_cairn_is_replayed_and_given_its_header() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = redb::Database::create(dir.path().join("cairn.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            super::super::schema::create_tables(&txn).unwrap();
            txn.commit().unwrap();
        }
        let payload = encode_group([vec![append(0), append(1)]].iter());
        let mut old = Vec::new();
        old.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        old.extend_from_slice(&1u64.to_le_bytes());
        old.extend_from_slice(&checksum(1, &payload).to_le_bytes());
        old.extend_from_slice(&payload);
        old.resize(1 << 20, 0);
        std::fs::write(dir.path().join(FILE_NAME), &old).unwrap();

        let store = crate::store::Store::open(dir.path()).unwrap();
        assert_eq!(store.journal("r").await.unwrap().len(), 2, "the old log's records are replayed");
        drop(store);
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(Identity::decode(&bytes).is_some(), "the log has its header now");
        let store = crate::store::Store::open(dir.path()).unwrap();
        assert_eq!(store.journal("r").await.unwrap().len(), 2);
    }

    /// Every kind of write comes back from the log as it went in.
    #[test]
    fn every_write_round_trips() {
        use crate::journal::{Completion, Failure};
        use crate::store::{ComponentKind, RunStatus, Version};
        let meta = RunMeta {
            id: "r".into(),
            workflow: "order".into(),
            component_sha256: "ab".into(),
            version: Some(2),
            status: RunStatus::Running,
            input: "{}".into(),
            result: None,
            failure: Some(Failure::new("kind", "message")),
            custom_status: Some("\"s\"".into()),
            parent: None,
            generation: 3,
            shard: 7,
            created_ms: 1,
            updated_ms: 2,
            slot: Some(crate::store::Slot { key: "acme".into(), priority: 1 }),
            search: [("amount".to_owned(), crate::search::SearchValue::Int(5))].into(),
        };
        let run_id = String::from("r");
        let writes = vec![
            Write::PutRun(meta.clone()),
            append(4),
            Write::PutCompletion {
                run_id: run_id.clone(),
                handle: 5,
                completion: StoredCompletion {
                    completion: Completion::Ok("1".into()),
                    arrival: 6,
                    generation: Some(2),
                },
            },
            Write::DeleteCompletion { run_id: run_id.clone(), handle: 7 },
            Write::PutTimer { due_ms: 8, run_id: run_id.clone(), handle: 9 },
            Write::DeleteTimer { due_ms: 10, run_id: run_id.clone(), handle: 11 },
            Write::PutSignal {
                run_id: run_id.clone(),
                seq: 12,
                signal: StoredSignal { name: "go".into(), payload: "[]".into() },
            },
            Write::DeleteSignal { run_id: run_id.clone(), seq: 13 },
            Write::ContinueAsNew { meta: Box::new(meta), start: Box::new(crate::store::tests::record(0)) },
            Write::PutAttempts { run_id: run_id.clone(), handle: 14, failed: 15 },
            Write::DeleteAttempts { run_id, handle: 16 },
            Write::PutDeployment(Deployment {
                name: "order".into(),
                kind: ComponentKind::Workflow,
                versions: vec![Version { version: 1, sha256: "ab".into(), deployed_ms: 17 }],
                current: 1,
                last_version: 1,
                revision: 4,
                retired: vec![Version { version: 0, sha256: "aa".into(), deployed_ms: 1 }],
                retention_ms: Some(86_400_000),
                concurrency: Some(crate::store::Concurrency {
                    limit: Some(2),
                    keys: Default::default(),
                    rate: Some(crate::store::Rate { every_ms: 100, burst: 4 }),
                    key_rates: [("acme".to_owned(), crate::store::Rate { every_ms: 1000, burst: 1 })].into(),
                }),
                activity_limits: [(
                    "charge".to_owned(),
                    crate::store::ActivityLimit {
                        key: Some("/customer".into()),
                        limits: crate::store::Concurrency { limit: Some(1), ..Default::default() },
                    },
                )]
                .into(),
            }),
            Write::PutComponent { sha256: "ab".into(), bytes: vec![1, 2].into() },
            Write::PutCompiled { sha256: "ab".into(), engine: "e".into(), bytes: vec![3] },
            Write::PutSchedule(crate::store::Schedule {
                name: "nightly".into(),
                revision: 3,
                spec: crate::store::ScheduleSpec {
                    workflow: "w".into(),
                    input: "{}".into(),
                    when: crate::store::When::Every { every_ms: 60_000, offset_ms: 5 },
                    overlap: crate::store::Overlap::CancelPrevious,
                    catchup_window_ms: 19,
                },
                state: crate::store::ScheduleState { buffered_ms: Some(20), ..Default::default() },
            }),
            Write::DeleteSchedule { name: "nightly".into() },
            Write::DeleteRun { run_id: "old".into() },
            Write::DeleteComponent { sha256: "cd".into() },
            Write::Promote {
                workflow: "w".into(),
                key: "acme".into(),
                admission: crate::store::Admission {
                    limit: 2,
                    rate: Some(crate::store::Rate { every_ms: 500, burst: 3 }),
                },
            },
        ];
        let tags: Vec<u8> = writes.iter().map(tag).collect();
        assert_eq!(tags, (0..19).collect::<Vec<u8>>(), "one tag per kind");
        let batches = vec![writes, vec![], vec![append(18)]];
        assert_eq!(debug(&decode_group(&encode_group(batches.iter())).unwrap()), debug(&batches));
    }

    #[test]
    fn a_damaged_payload_is_an_error_not_a_panic() {
        let payload = encode_group([vec![append(1)]].iter());
        for cut in 0..payload.len() {
            assert!(decode_group(&payload[..cut]).is_err(), "cut at {cut}");
        }
        let mut unknown = payload.clone();
        unknown[8] = 99;
        assert!(decode_group(&unknown).unwrap_err().contains("unknown write tag 99"));
    }
}
