//! One line per error, on stderr and in the run's error log file. Every line
//! names the path (escaped to one line), the operation and errno.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::fsops::{self, Existing, OsError, OutputError};
use crate::stats::Counters;

/// The error log's mode: its lines name entries in users' 0700 directories.
pub const MODE: u32 = 0o600;
/// Root's default `log_dir`, made 0700 if missing.
pub const ROOT_LOG_DIR: &str = "/var/log/lmpi";

#[derive(Debug, Clone, Copy)]
pub enum Side {
    Source,
    Target,
}

/// Where the file goes: its directory, opened at the start (so a missing
/// directory is said then, and the name is always looked up in the same
/// directory), and the file's name in it.
struct Place {
    dir: OwnedFd,
    name: Vec<u8>,
    path: PathBuf,
}

pub struct ErrorLog {
    prefix: String,
    src_root: Vec<u8>,
    dst_root: Vec<u8>,
    place: Option<Place>,
    /// Opened at the first line (None inside: it could not be).
    file: OnceLock<Option<File>>,
    /// Lines this rank wrote to the file.
    lines: Arc<AtomicU64>,
    /// The file could not be opened (or refused): lines went to stderr only.
    failed: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl ErrorLog {
    /// The log of one rank: `path` None means stderr only. The file is
    /// created at the first line, so a pass without errors leaves none.
    pub fn new(
        prefix: String,
        src_root: &[u8],
        dst_root: &[u8],
        path: Option<&Path>,
        counters: Arc<Counters>,
    ) -> ErrorLog {
        let failed = Arc::new(AtomicBool::new(false));
        let place = path.and_then(|p| match fsops::open_output_dir(p) {
            Ok((dir, name)) => Some(Place {
                dir,
                name,
                path: p.to_path_buf(),
            }),
            Err(e) => {
                let e = OutputError::from(e).at(p.as_os_str().as_bytes());
                eprintln!("{prefix}: cannot open error log {e}");
                failed.store(true, Ordering::Relaxed);
                None
            }
        });
        ErrorLog {
            prefix,
            src_root: src_root.to_vec(),
            dst_root: dst_root.to_vec(),
            place,
            file: OnceLock::new(),
            lines: Arc::new(AtomicU64::new(0)),
            failed,
            counters,
        }
    }

    /// Whether the log file could not be opened (its lines went to stderr
    /// only), readable after the log has moved into the pass.
    pub fn failed(&self) -> Arc<AtomicBool> {
        self.failed.clone()
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
        if let Some(mut f) = self.file.get_or_init(|| self.open()).as_ref() {
            let mut buf = line.as_bytes().to_vec();
            buf.push(b'\n');
            if f.write_all(&buf).is_ok() {
                self.lines.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The file, at the first line: O_APPEND (ranks on many nodes append
    /// whole lines to one file), never through a link, FIFO or a file of
    /// another user at its name (`fsops::open_own_output`); one line if not.
    fn open(&self) -> Option<File> {
        let p = self.place.as_ref()?;
        match fsops::open_own_output(p.dir.as_fd(), &p.name, Existing::Append, MODE) {
            Ok((fd, _, _)) => Some(File::from(fd)),
            Err(e) => {
                let e = e.at(p.path.as_os_str().as_bytes());
                eprintln!(
                    "{}: cannot open error log {e}; errors go to stderr only",
                    self.prefix
                );
                self.failed.store(true, Ordering::Relaxed);
                None
            }
        }
    }
}

/// Why the default log directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LogDirError {
    #[error("neither XDG_STATE_HOME nor HOME is set")]
    NoHome,
    #[error("{}: {source}", .path.display())]
    Make {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Refused(#[from] fsops::OutputFailure),
}

/// Where the error log goes when neither `--error-log` nor `log_dir` says:
/// for root, `/var/log/lmpi` (made 0700 if missing; refused unless root's
/// and writable by root only), never the working directory, where any user
/// could put a FIFO or their own file at the predictable name. For another
/// user, `$XDG_STATE_HOME/lmpi` or `~/.local/state/lmpi`. An error: errors
/// go to stderr only.
pub fn default_dir() -> Result<PathBuf, LogDirError> {
    let dir = if fsops::is_root() {
        PathBuf::from(ROOT_LOG_DIR)
    } else {
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| Path::new(v).is_absolute())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
            .ok_or(LogDirError::NoHome)?;
        fsops::make_private_dirs(&state).map_err(|source| LogDirError::Make {
            path: state.clone(),
            source,
        })?;
        state.join("lmpi")
    };
    fsops::own_dir(&dir, 0o700).map_err(|e| e.at(dir.as_os_str().as_bytes()))?;
    Ok(dir)
}
