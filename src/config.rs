//! `lmpi.toml`: the successor of the old `config.py`. Every key is documented in
//! `config/lmpi.toml`; unknown keys and bad values are errors naming the key and file.

use std::ops::RangeInclusive;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::bounded::{ranged, read_bounded, CONFIG_MAX_BYTES, EXCLUDE_FILE_MAX_BYTES};
use crate::engine::THREADS_LIMIT;
pub use crate::host::default_max_threads;

// The accepted ranges, shared by the config checks and the command-line
// parsers (and written out in `lmpi --help` and config/lmpi.toml).
/// Seconds; a day at most, so a deadline built from it can never overflow.
pub const REPORT_INTERVAL: RangeInclusive<u64> = 1..=86_400;
/// `stop_grace_seconds`: how long a stop may wait for in-flight calls.
pub const STOP_GRACE: RangeInclusive<u64> = 1..=3_600;
/// `oldest_date`/`newest_date`: up to 100 years in seconds (0 = off).
pub const AGE: RangeInclusive<u64> = 0..=3_155_760_000;
pub const BATCH_SIZE: RangeInclusive<u64> = 1..=1_000_000;
/// Bytes, and a multiple of 4096.
pub const CHUNK_SIZE: RangeInclusive<u64> = 4096..=1 << 30;
/// Bytes; its lower bound is the chunk size. 1 PiB means "never chunk".
pub const CHUNK_THRESHOLD: RangeInclusive<u64> = 4096..=1 << 50;
/// `from_manifest_max_bytes`: bytes (1 PiB: no limit in practice).
pub const FROM_MANIFEST_MAX: RangeInclusive<u64> = 1..=1 << 50;
/// `max_threads_per_rank` (and the hard bound of `threads_per_rank`).
pub const MAX_THREADS: RangeInclusive<u64> = 1..=THREADS_LIMIT as u64;

/// `Err((key, message))` unless `v` is in `r`.
fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    r: &RangeInclusive<T>,
) -> Result<(), (String, String)> {
    if r.contains(&v) {
        return Ok(());
    }
    Err((
        key.to_string(),
        format!(
            "{v} is out of range: must be between {} and {}",
            r.start(),
            r.end()
        ),
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Parse { path: String, msg: String },
    #[error("key `exclude_file`: {path}: cannot read: {source}")]
    ExcludeFile {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: key `{key}`: {msg}")]
    Value {
        path: String,
        key: String,
        msg: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub source_mount: Option<PathBuf>,
    pub target_mount: Option<PathBuf>,
    /// Seconds; skip files whose atime is older than now minus this. 0 = off.
    pub oldest_date: u64,
    /// Seconds; skip files whose mtime is newer than now minus this. 0 = off.
    pub newest_date: u64,
    /// Path prefixes (relative to the source root, or absolute under it) to skip.
    pub exclude: Vec<PathBuf>,
    /// A file of prefixes, one per line (bytes; the old `exceptions` file).
    pub exclude_file: Option<PathBuf>,
    pub threads_per_rank: usize,
    /// Cap of `threads_per_rank` and of `pool_grow` (1..=1024; default from
    /// the node's cores, see `default_max_threads`).
    pub max_threads_per_rank: usize,
    /// Seconds between progress lines (and stats pushes).
    pub report_interval: u64,
    /// Seconds a stop (signal or `lmpi ctl stop`) waits for in-flight work
    /// before the process ends anyway with status 4.
    pub stop_grace_seconds: u64,
    /// Entries per work item when a directory is split (old SPLIT_FILES_CHUNK).
    pub batch_size: usize,
    /// Files at least this large are split into chunks copied by several ranks.
    pub chunk_threshold: u64,
    pub chunk_size: u64,
    /// copy: also compare the xattrs (ACLs included) of files that are
    /// otherwise up to date, and fix them. Costs xattr reads on both sides for
    /// every file; off by default, like rsync without -X.
    pub check_xattrs: bool,
    /// copy/final: copy project IDs (and directories' project-inherit flag)
    /// and count a different one as a metadata difference, where the source
    /// filesystem has them (FS_IOC_FSGETXATTR). Costs an open and an ioctl
    /// on each side for every up-to-date file.
    pub copy_project_ids: bool,
    /// verify: also compare file data, read on both sides (--content).
    pub verify_content: bool,
    /// verify with content: the fraction of files whose data is compared,
    /// the same files every run (0 to 1; --sample).
    pub verify_sample: f64,
    /// verify: a `--from-manifest` file larger than this many bytes is
    /// refused (one error line, nothing of it compared); the records are
    /// streamed, so this bounds time, not memory.
    pub from_manifest_max_bytes: u64,
    /// Directory for the per-run error log; default: `/var/log/lmpi` for
    /// root, `$XDG_STATE_HOME/lmpi` for another user (`errlog::default_dir`).
    pub log_dir: Option<PathBuf>,
    /// Write every action of the pass (or, in a dry run, every action it
    /// would take) to this file, one record per line (docs/manifest.md).
    pub manifest: Option<PathBuf>,
    /// delete/final refuse unless both roots are mount points; unset: on
    /// with `[lustre] mode = "require"`, else off.
    pub require_mountpoints: Option<bool>,
    pub lustre: crate::lustre::LustreConfig,
    pub stats: crate::statsd::StatsConfig,
    pub control: crate::control::ControlConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source_mount: None,
            target_mount: None,
            oldest_date: 0,
            newest_date: 0,
            exclude: Vec::new(),
            exclude_file: None,
            threads_per_rank: 8,
            max_threads_per_rank: default_max_threads(),
            report_interval: 10,
            stop_grace_seconds: 30,
            batch_size: 1000,
            chunk_threshold: 64 << 20,
            chunk_size: 16 << 20,
            check_xattrs: false,
            copy_project_ids: true,
            verify_content: false,
            verify_sample: 1.0,
            from_manifest_max_bytes: 64 << 30,
            log_dir: None,
            manifest: None,
            require_mountpoints: None,
            lustre: Default::default(),
            stats: Default::default(),
            control: Default::default(),
        }
    }
}

impl Config {
    /// `require_mountpoints` as set, else on for `[lustre] mode = "require"`.
    pub fn require_mountpoints_default(&self) -> bool {
        self.require_mountpoints
            .unwrap_or(matches!(self.lustre.mode, crate::lustre::Mode::Require))
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let read_err = |source| ConfigError::Read {
            path: shown.clone(),
            source,
        };
        let bytes = read_bounded(path, CONFIG_MAX_BYTES).map_err(read_err)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            read_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
            ))
        })?;
        Self::parse(&text, &shown)
    }

    pub fn parse(text: &str, shown: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: shown.to_string(),
            msg: toml_one_line(text, &e),
        })?;
        cfg.validate(shown)?;
        Ok(cfg)
    }

    pub fn validate(&self, shown: &str) -> Result<(), ConfigError> {
        self.check().map_err(|(key, msg)| ConfigError::Value {
            path: shown.to_string(),
            key,
            msg,
        })
    }

    /// Every key against its documented range: `Err((key, message))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let max = self.max_threads_per_rank as u64;
        in_range("max_threads_per_rank", max, &MAX_THREADS)?;
        if !(0.0..=1.0).contains(&self.verify_sample) {
            let msg = "must be a fraction from 0 to 1".to_string();
            return Err(("verify_sample".into(), msg));
        }
        if !(1..=max).contains(&(self.threads_per_rank as u64)) {
            return Err((
                "threads_per_rank".into(),
                format!(
                    "{} is out of range: must be between 1 and max_threads_per_rank ({max})",
                    self.threads_per_rank
                ),
            ));
        }
        in_range("report_interval", self.report_interval, &REPORT_INTERVAL)?;
        in_range("stop_grace_seconds", self.stop_grace_seconds, &STOP_GRACE)?;
        in_range("oldest_date", self.oldest_date, &AGE)?;
        in_range("newest_date", self.newest_date, &AGE)?;
        let m = self.from_manifest_max_bytes;
        in_range("from_manifest_max_bytes", m, &FROM_MANIFEST_MAX)?;
        in_range("batch_size", self.batch_size as u64, &BATCH_SIZE)?;
        in_range("chunk_size", self.chunk_size, &CHUNK_SIZE)?;
        if !self.chunk_size.is_multiple_of(4096) {
            return Err((
                "chunk_size".into(),
                format!("{} is not a multiple of 4096", self.chunk_size),
            ));
        }
        let threshold = self.chunk_size..=*CHUNK_THRESHOLD.end();
        in_range("chunk_threshold", self.chunk_threshold, &threshold)?;
        let nested = |prefix: &str, r: Result<(), (String, String)>| {
            r.map_err(|(k, m)| (format!("{prefix}.{k}"), m))
        };
        nested("lustre", self.lustre.validate())?;
        nested("stats", self.stats.validate())?;
        nested("control", self.control.validate())?;
        Ok(())
    }

    /// Exclusion prefixes from `exclude` and `exclude_file`, as raw bytes.
    pub fn exclude_prefixes(&self) -> Result<Vec<Vec<u8>>, ConfigError> {
        let mut out: Vec<Vec<u8>> = self
            .exclude
            .iter()
            .map(|p| p.clone().into_os_string().into_vec())
            .collect();
        if let Some(f) = &self.exclude_file {
            let data = read_bounded(f, EXCLUDE_FILE_MAX_BYTES).map_err(|source| {
                ConfigError::ExcludeFile {
                    path: f.display().to_string(),
                    source,
                }
            })?;
            for line in data.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.is_empty() && !line.starts_with(b"#") {
                    out.push(line.to_vec());
                }
            }
        }
        Ok(out)
    }
}

/// toml's own message spans several lines with a caret excerpt; say it as
/// `line N: <message>: `<that line>``.
fn toml_one_line(text: &str, e: &toml::de::Error) -> String {
    let msg = one_line(e.message());
    let Some(start) = e.span().map(|s| s.start) else {
        return msg;
    };
    let before = text.get(..start).unwrap_or(text);
    let n = before.matches('\n').count();
    let line: String = text
        .lines()
        .nth(n)
        .unwrap_or("")
        .trim()
        .chars()
        .take(80)
        .collect();
    if line.is_empty() {
        return format!("line {}: {msg}", n + 1);
    }
    format!("line {}: {msg}: `{line}`", n + 1)
}

pub fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|'))
        .collect::<Vec<_>>()
        .join(" ")
}
