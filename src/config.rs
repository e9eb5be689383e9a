//! `lmpi.toml`: the successor of the old `config.py`. Every key is documented in
//! `config/lmpi.toml`; unknown keys and bad values are errors naming the key and file.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    /// Seconds between progress lines (and stats pushes).
    pub report_interval: u64,
    /// Entries per work item when a directory is split (old SPLIT_FILES_CHUNK).
    pub batch_size: usize,
    /// Files at least this large are split into chunks copied by several ranks.
    pub chunk_threshold: u64,
    pub chunk_size: u64,
    /// copy: also compare the xattrs (ACLs included) of files that are
    /// otherwise up to date, and fix them. Costs xattr reads on both sides for
    /// every file; off by default, like rsync without -X.
    pub check_xattrs: bool,
    /// Directory for the per-run error log; default: the current directory.
    pub log_dir: Option<PathBuf>,
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
            report_interval: 10,
            batch_size: 1000,
            chunk_threshold: 64 << 20,
            chunk_size: 16 << 20,
            check_xattrs: false,
            log_dir: None,
            lustre: Default::default(),
            stats: Default::default(),
            control: Default::default(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
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
        let bad = |key: &str, msg: &str| ConfigError::Value {
            path: shown.to_string(),
            key: key.to_string(),
            msg: msg.to_string(),
        };
        if self.threads_per_rank == 0 || self.threads_per_rank > 1024 {
            return Err(bad("threads_per_rank", "must be between 1 and 1024"));
        }
        if self.report_interval == 0 {
            return Err(bad("report_interval", "must be at least 1 second"));
        }
        if self.batch_size == 0 {
            return Err(bad("batch_size", "must be at least 1"));
        }
        if self.chunk_size < 4096 || !self.chunk_size.is_multiple_of(4096) {
            return Err(bad("chunk_size", "must be a positive multiple of 4096"));
        }
        if self.chunk_threshold < self.chunk_size {
            return Err(bad("chunk_threshold", "must be at least chunk_size"));
        }
        self.lustre
            .validate()
            .map_err(|(k, m)| bad(&format!("lustre.{k}"), &m))?;
        self.stats
            .validate()
            .map_err(|(k, m)| bad(&format!("stats.{k}"), &m))?;
        self.control
            .validate()
            .map_err(|(k, m)| bad(&format!("control.{k}"), &m))?;
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
            let data = std::fs::read(f).map_err(|source| ConfigError::ExcludeFile {
                path: f.display().to_string(),
                source,
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

/// Turn an `OsString` into its bytes; paths never go through `String`.
pub fn os_bytes(s: OsString) -> Vec<u8> {
    s.into_vec()
}
