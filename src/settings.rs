//! A pass's settings: resolved once, from the config file and the command
//! line (as fd builds its `Config`), into the one type the library's entry
//! point takes. The clap structs stay in the binary.

use std::path::PathBuf;

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PassKind {
    Copy,
    Delete,
    Dirtime,
    /// The downtime pass: copy, delete and dirtime in one walk.
    Final,
    /// Read-only: compare the target with the source, report differences.
    Verify,
}

impl PassKind {
    pub fn name(self) -> &'static str {
        match self {
            PassKind::Copy => "copy",
            PassKind::Delete => "delete",
            PassKind::Dirtime => "dirtime",
            PassKind::Final => "final",
            PassKind::Verify => "verify",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub pass: PassKind,
    /// The config file's keys with the command line's applied, validated.
    pub cfg: Config,
    /// Show what would change; change nothing.
    pub dry_run: bool,
    /// delete/final: remove at most this many entries (all or nothing).
    pub max_delete: Option<u64>,
    /// delete/final: run even if the source root is empty.
    pub allow_empty_source: bool,
    /// delete/final: refuse unless both roots are mount points.
    pub require_mountpoints: bool,
    /// Run even while another job holds the target's lock.
    pub force_concurrent: bool,
    /// Hold at the start gate until `lmpi ctl start`.
    pub wait_for_start: bool,
    /// Write the summary as JSON here.
    pub report: Option<PathBuf>,
    /// The error log (default: <log_dir>/lmpi-<pass>-<job>.errors).
    pub error_log: Option<PathBuf>,
    /// Record every action here (each rank writes `FILE.rank<N>`, rank 0
    /// merges them into FILE at the end; docs/manifest.md).
    pub manifest: Option<PathBuf>,
    /// No progress lines.
    pub quiet: bool,
    /// verify: only the entries these manifests name.
    pub from_manifest: Vec<PathBuf>,
    /// final: only what this `lmpi track` journal recorded.
    pub changes: Option<PathBuf>,
}

impl Settings {
    /// The pass with `cfg` and every switch at its default.
    pub fn new(pass: PassKind, cfg: Config) -> Settings {
        let require_mountpoints = cfg.require_mountpoints_default();
        let manifest = cfg.manifest.clone();
        Settings {
            pass,
            cfg,
            dry_run: false,
            max_delete: None,
            allow_empty_source: false,
            require_mountpoints,
            force_concurrent: false,
            wait_for_start: false,
            report: None,
            error_log: None,
            manifest,
            quiet: false,
            from_manifest: Vec::new(),
            changes: None,
        }
    }
}
