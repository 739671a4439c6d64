//! Stand-ins for the power-loss recorder (`power.rs`) in a build without
//! the `fault-injection` feature: nothing is recorded, and the calls
//! compile away.

use crate::store::Batch;
use std::io;
use std::path::Path;

/// Never made: a build without the feature records nothing.
#[derive(Debug, Clone, Copy)]
pub(super) enum Traced {}

impl Traced {
    pub(super) fn opened(_path: &Path, _created: bool) -> Option<Traced> {
        None
    }

    pub(super) fn wrote(self, _offset: u64, _data: &[u8]) {
        match self {}
    }

    pub(super) fn sync<T>(self, _sync: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        match self {}
    }
}

pub(super) fn dir_synced() {}

pub(super) fn renamed(_from: &Path, _to: &Path) {}

pub(super) fn removed(_path: &Path) {}

pub(super) fn acknowledged<'a>(_batches: impl Iterator<Item = &'a Batch>) {}

/// Never made.
#[derive(Debug)]
pub(super) enum TracedBackend {}

impl TracedBackend {
    pub(super) fn open(_path: &Path) -> Result<Option<TracedBackend>, redb::DatabaseError> {
        Ok(None)
    }
}

impl redb::StorageBackend for TracedBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        match *self {}
    }
    fn read(&self, _offset: u64, _out: &mut [u8]) -> Result<(), std::io::Error> {
        match *self {}
    }
    fn set_len(&self, _len: u64) -> Result<(), std::io::Error> {
        match *self {}
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        match *self {}
    }
    fn write(&self, _offset: u64, _data: &[u8]) -> Result<(), std::io::Error> {
        match *self {}
    }
}
