//! `lmpi track`: record, beside the live copies, every change on the
//! source by identity, so the downtime pass (`--pass final --changes J`)
//! visits only what changed. A backend (`source::ChangeSource`: fanotify,
//! or Lustre changelogs through `lustre-sys`) yields `Change`s; the journal
//! dedupes them and syncs them to disk; any loss is recorded and makes the
//! final pass walk everything.

pub mod changelog;
pub mod fanotify;
pub mod handle;
pub mod journal;
pub mod resolve;
pub mod source;
pub mod synced;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use handle::Handle;
use serde::{Deserialize, Serialize};
use source::ChangeSource;

/// One change, by identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Change {
    /// Entry `name` of directory `dir` was created, removed or renamed in
    /// or out (`dirent`), or written, truncated or had its attributes
    /// changed.
    Entry {
        dir: Handle,
        name: Vec<u8>,
        dirent: bool,
        /// The entry is a directory (fanotify's FAN_ONDIR).
        ondir: bool,
    },
    /// The object itself changed (a directory's own attributes, or an
    /// event that named no entry).
    Itself(Handle),
    /// Events were lost: no journal can stand for every change.
    Loss(String),
}

#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("{path}: {op}: {msg}")]
    Os {
        path: String,
        op: &'static str,
        msg: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Output(#[from] crate::fsops::OutputFailure),
    #[error("{0}")]
    Other(String),
}

impl TrackError {
    pub fn os(path: &Path, op: &'static str, errno: i32) -> TrackError {
        TrackError::Os {
            path: path.display().to_string(),
            op,
            msg: crate::fsops::strerror(errno),
        }
    }
    pub fn io(path: &Path, source: std::io::Error) -> TrackError {
        TrackError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

pub(crate) fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The journal: created 0600, or appended to only if it is lmpi's own
/// regular file (no link followed, no FIFO blocked on: `open_own_output`).
fn own_file(path: &Path) -> Result<std::fs::File, TrackError> {
    let (fd, _, _) =
        crate::fsops::open_own_output_path(path, crate::fsops::Existing::Append, 0o600)?;
    Ok(std::fs::File::from(fd))
}

/// What `lmpi track` was asked to do.
#[derive(Debug, Clone)]
pub struct TrackSettings {
    pub source: PathBuf,
    pub journal: PathBuf,
    /// How often the journal is synced (and, on Lustre, the changelog cleared).
    pub flush: Duration,
    /// How often a progress line is printed (None: never).
    pub report: Option<Duration>,
    /// `[lustre]` with `--mdt` / `--changelog-user` applied: a changelog
    /// user on a Lustre source picks the changelog backend.
    pub lustre: crate::lustre::LustreConfig,
}

/// The backend for `s`, and the journal opened for it. fanotify marks the
/// filesystem before the journal says `start`; a changelog reader goes on
/// from the journal's `upto`s, so it starts after.
fn open_source(
    s: &TrackSettings,
    watched: journal::Watched,
) -> Result<(Box<dyn ChangeSource>, journal::Writer), TrackError> {
    let root =
        crate::fsops::open_root(&s.source).map_err(|e| TrackError::os(&s.source, e.op, e.errno))?;
    if let Some((lustre, user)) = changelog::choose(&s.lustre, root.as_fd())? {
        let mdts = &s.lustre.changelog_mdts;
        let mut cl = changelog::Changelog::open(lustre, &user, mdts, watched.fsid)?;
        let mut j = journal::Writer::open_tagged(&s.journal, watched, unix_ns(), "changelog")?;
        for c in cl.resume(&j) {
            j.add(c);
        }
        return Ok((Box::new(cl), j));
    }
    let src = fanotify::Fanotify::watch(&s.source)?;
    let j = journal::Writer::open(&s.journal, watched, unix_ns())?;
    Ok((Box::new(src), j))
}

/// Run the tracker until SIGTERM/SIGINT; flushes what it has and writes a
/// `stop` record. Err: it could not start, or the journal could not be
/// written (then the journal has no `stop`, so no final pass trusts it).
pub fn track(s: &TrackSettings) -> Result<u64, TrackError> {
    // Before the journal says `start`: a stop from then on is graceful.
    crate::signals::install();
    let watched = resolve::watched(&s.source)?;
    let (mut src, mut journal) = open_source(s, watched)?;
    println!(
        "lmpi track: watching {} ({}), journal {}",
        s.source.display(),
        src.describe(),
        s.journal.display()
    );
    let (mut events, mut last_flush, mut last_report) = (0u64, Instant::now(), Instant::now());
    let mut batch = Vec::new();
    while !crate::signals::stop_requested() {
        src.read(200, &mut batch)?;
        events += batch.len() as u64;
        for c in batch.drain(..) {
            journal.add(c);
        }
        if last_flush.elapsed() >= s.flush {
            src.checkpoint(&mut journal)?;
            last_flush = Instant::now();
        }
        if s.report.is_some_and(|r| last_report.elapsed() >= r) {
            println!(
                "lmpi track: {events} events, {} distinct changes",
                journal.distinct()
            );
            last_report = Instant::now();
        }
    }
    // What arrived before the stop is still queued: take it too.
    src.read(0, &mut batch)?;
    events += batch.len() as u64;
    for c in batch {
        journal.add(c);
    }
    let distinct = journal.distinct();
    src.checkpoint(&mut journal)?;
    journal.close()?;
    println!("lmpi track: stopped: {events} events, {distinct} distinct changes in the journal");
    Ok(events)
}
