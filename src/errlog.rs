//! One line per error, on stderr and in the run's error log file. Every line
//! names the path (escaped to one line), the operation and errno.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::fsops::{self, OsError};
use crate::stats::Counters;

#[derive(Debug, Clone, Copy)]
pub enum Side {
    Source,
    Target,
}

pub struct ErrorLog {
    prefix: String,
    src_root: Vec<u8>,
    dst_root: Vec<u8>,
    file: Option<File>,
    /// This rank created the file (see `remove_if_unused`).
    created: bool,
    /// Lines this rank wrote to the file.
    lines: Arc<AtomicU64>,
    counters: Arc<Counters>,
}

impl ErrorLog {
    pub fn new(
        prefix: String,
        src_root: &[u8],
        dst_root: &[u8],
        path: Option<&Path>,
        counters: Arc<Counters>,
    ) -> ErrorLog {
        // Opened now, not at the first error, so a log that cannot be
        // written is said at the start; a pass without errors removes it at
        // the end (`remove_if_unused`).
        let (file, created) = match path.map(open_log) {
            Some(Ok((f, created))) => (Some(f), created),
            Some(Err(e)) => {
                if let Some(p) = path {
                    eprintln!("{prefix}: cannot open error log {}: {e}", p.display());
                }
                (None, false)
            }
            None => (None, false),
        };
        ErrorLog {
            prefix,
            src_root: src_root.to_vec(),
            dst_root: dst_root.to_vec(),
            file,
            created,
            lines: Arc::new(AtomicU64::new(0)),
            counters,
        }
    }

    /// Whether the log file opened (else errors go to stderr only).
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// Whether this rank created the file (it did not exist before).
    pub fn created_it(&self) -> bool {
        self.created
    }

    /// The count of lines this rank writes to the file, readable after the
    /// log has moved into the pass.
    pub fn lines(&self) -> Arc<AtomicU64> {
        self.lines.clone()
    }

    fn full(&self, side: Side, rel: &[u8]) -> Vec<u8> {
        let root = match side {
            Side::Source => &self.src_root,
            Side::Target => &self.dst_root,
        };
        if rel.is_empty() {
            root.clone()
        } else {
            let mut p = root.clone();
            if !p.ends_with(b"/") {
                p.push(b'/');
            }
            p.extend_from_slice(rel);
            p
        }
    }

    /// An error that leaves this entry not done: counted, and makes the exit status non-zero.
    pub fn error(&self, side: Side, rel: &[u8], e: OsError) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let line = format!("{}: error: {}", self.prefix, e.at(&self.full(side, rel)));
        self.write(&line);
    }

    /// An error described in words (no errno).
    pub fn error_msg(&self, side: Side, rel: &[u8], msg: &str) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let line = format!(
            "{}: error: {}: {msg}",
            self.prefix,
            fsops::show(&self.full(side, rel))
        );
        self.write(&line);
    }

    /// Worth telling, not a failure (a file vanished while we looked at it).
    pub fn note(&self, side: Side, rel: &[u8], msg: &str) {
        let line = format!(
            "{}: note: {}: {msg}",
            self.prefix,
            fsops::show(&self.full(side, rel))
        );
        self.write(&line);
    }

    fn write(&self, line: &str) {
        eprintln!("{line}");
        if let Some(mut f) = self.file.as_ref() {
            let mut buf = line.as_bytes().to_vec();
            buf.push(b'\n');
            if f.write_all(&buf).is_ok() {
                self.lines.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// O_APPEND: ranks on many nodes append whole lines to one file. Tried with
/// O_EXCL first so the rank that made the file knows it did.
fn open_log(p: &Path) -> std::io::Result<(File, bool)> {
    let mut o = std::fs::OpenOptions::new();
    // Root writes it: a symlink planted at the name is refused.
    o.append(true).mode(0o644).custom_flags(libc::O_NOFOLLOW);
    match o.clone().create_new(true).open(p) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((o.open(p)?, false)),
        Err(e) => Err(e),
    }
}

/// Remove an error log nobody wrote a line to (`written`: the lines of all
/// ranks of the job), so error-free runs leave no empty files behind. Only
/// an empty regular file is removed: one that existed before the pass, or
/// that someone else wrote meanwhile, stays.
pub fn remove_if_unused(path: &Path, written: u64) -> bool {
    if written > 0 {
        return false;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() && m.len() == 0 => std::fs::remove_file(path).is_ok(),
        _ => false,
    }
}
