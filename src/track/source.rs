//! What a tracker backend is: something that yields `Change`s, and makes
//! them durable in the journal (a changelog also clears what is durable).

use super::fanotify::Fanotify;
use super::journal::Writer;
use super::{Change, TrackError};

pub trait ChangeSource {
    /// What is watched and how, for the start line.
    fn describe(&self) -> String;

    /// Wait up to `timeout_ms` for changes, then take what there is.
    fn read(&mut self, timeout_ms: i32, out: &mut Vec<Change>) -> Result<(), TrackError>;

    /// Everything `read` gave, and the journal added, goes to stable
    /// storage; a backend that can forget what is stored does so after.
    fn checkpoint(&mut self, journal: &mut Writer) -> Result<(), TrackError> {
        journal.flush()
    }
}

impl ChangeSource for Fanotify {
    fn describe(&self) -> String {
        "fanotify, the whole filesystem".into()
    }

    fn read(&mut self, timeout_ms: i32, out: &mut Vec<Change>) -> Result<(), TrackError> {
        Fanotify::read(self, timeout_ms, out)
    }
}
