//! One line per error, on stderr and in the run's error log file. Every line
//! names the path (escaped to one line), the operation and errno.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
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
    counters: Arc<Counters>,
    quiet: bool,
}

impl ErrorLog {
    pub fn new(
        prefix: String,
        src_root: &[u8],
        dst_root: &[u8],
        path: Option<&Path>,
        counters: Arc<Counters>,
    ) -> ErrorLog {
        // O_APPEND: ranks on many nodes append whole lines to one file.
        let file = path.and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o644)
                .open(p)
                .map_err(|e| {
                    eprintln!("{prefix}: cannot open error log {}: {e}", p.display());
                })
                .ok()
        });
        ErrorLog {
            prefix,
            src_root: src_root.to_vec(),
            dst_root: dst_root.to_vec(),
            file,
            counters,
            quiet: false,
        }
    }

    /// Whether the log file opened (else errors go to stderr only).
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }

    pub fn quiet(mut self, q: bool) -> Self {
        self.quiet = q;
        self
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
        if !self.quiet {
            eprintln!("{line}");
        }
        if let Some(mut f) = self.file.as_ref() {
            let mut buf = line.as_bytes().to_vec();
            buf.push(b'\n');
            let _ = f.write_all(&buf);
        }
    }
}
