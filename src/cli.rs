//! Command line (the binary's own: the library takes `Settings`). Every
//! option overrides the config file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use lmpi::config::{
    ranged, AGE, BATCH_SIZE, CHUNK_SIZE, CHUNK_THRESHOLD, MAX_THREADS, REPORT_INTERVAL,
};
use lmpi::settings::PassKind;

/// `--version`: the crate's version and, when built from a git checkout,
/// the commit (build.rs: `git describe --always --dirty`).
pub const VERSION: &str = match option_env!("LMPI_GIT_DESCRIBE") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

const LONG_ABOUT: &str = "Clone a very large (Lustre) filesystem with one MPI job.

Run one pass per job (--pass); a migration is copy (live, as often as \
needed), then final (in the downtime), then verify:
  copy     walk the source; create what is missing on the target, rewrite \
what differs. Users may keep working.
  final    the downtime pass: copy, delete and dirtime in one walk of both \
trees (--changes JOURNAL: only what `lmpi track` recorded).
  verify   read-only sign-off: compare every entry, report each difference \
(--content: file data too; --from-manifest: only the entries named).
  delete   remove from the target what users deleted on the source.
  dirtime  set directory times, last (nothing else may change after it).

Subcommands: `lmpi track` records every change on the live source for \
`final --changes`; `lmpi ctl` stops, queries or resizes a running job; \
`lmpi stats graphite` sends the stats counters to Graphite.

Start a pass with mpirun or srun --mpi=pmix for N ranks, or alone for one \
rank. Every option overrides the config file's key of the same name.";

/// One text for `-h` and `--help` (concat! takes literals, not consts).
macro_rules! exit_status {
    () => {
        "Exit status: 0 done; 1 finished with errors (see the error log); 2 bad usage, config or \
roots (nothing touched); 3 delete (or final) refused for safety; 4 stopped (signal or `lmpi ctl stop`) before \
finishing; 5 more than --max-delete entries were due (nothing deleted)."
    };
}

const EXIT_STATUS: &str = exit_status!();

const AFTER_LONG_HELP: &str = concat!(
    exit_status!(),
    "

Environment:
  LMPI_CONFIG: the config file when --config is not given.
  LMPI_JOB_ID: the job's id (else SLURM_JOB_ID, else the start time); it names the error log and the target lock's holder, and `lmpi ctl --job` addresses the job by it.
  LMPI_LUSTREAPI: the liblustreapi to load (else liblustreapi.so.1, then .so); `[lustre] library` in the config file comes first.
  LMPI_RESOLVE=walk: open paths below the roots one component at a time (openat, as on kernels before 5.6) instead of with openat2.
  XDG_STATE_HOME, HOME: for a user other than root, the default error log directory ($XDG_STATE_HOME/lmpi, else ~/.local/state/lmpi; root's is /var/log/lmpi).
  OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK, PMI_FD, PMI_SIZE: set by MPI launchers, lmpi runs as one of N ranks; without them, alone (srun without an MPI plugin is refused).

Signals:
  SIGTERM, SIGINT, SIGUSR1: a graceful stop. In-flight work finishes, the summary says STOPPED, exit status 4; running the pass again resumes. A stop that overruns its grace ends the process (partial files never look complete). Under Slurm, `sbatch --signal=TERM@120` asks for it before the time limit; `lmpi ctl stop` does the same over RabbitMQ.

Man page and shell completions: `lmpi man`, `lmpi completions SHELL` (docs/cli.md)."
);

/// The options only some passes use, by clap id, with those passes: any
/// other pass refuses them on the command line (exit 2), so a mistyped pass
/// does not run a different job than meant. The config file's keys are not
/// checked: one file may serve every pass. Tuning knobs and filters
/// (threads, chunks, dates, excludes) are taken by every pass, so a script
/// can pass one set of them to all its passes.
pub const PASS_ONLY: &[(&str, &[PassKind])] = &[
    (
        "from_manifest",
        &[PassKind::Copy, PassKind::Final, PassKind::Verify],
    ),
    (
        "content",
        &[PassKind::Copy, PassKind::Final, PassKind::Verify],
    ),
    ("sample", &[PassKind::Verify]),
    ("max_delete", &[PassKind::Delete, PassKind::Final]),
    ("allow_empty_source", &[PassKind::Delete, PassKind::Final]),
    ("require_mountpoints", &[PassKind::Delete, PassKind::Final]),
    ("check_xattrs", &[PassKind::Copy, PassKind::Final]),
    ("changes", &[PassKind::Final]),
];

#[derive(Debug, Parser)]
#[command(
    name = "lmpi",
    version = VERSION,
    about = "Clone a very large (Lustre) filesystem with one MPI job",
    long_about = LONG_ABOUT,
    after_help = EXIT_STATUS,
    after_long_help = AFTER_LONG_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Sub>,
    #[command(flatten)]
    pub pass: PassArgs,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Talk to a running job over RabbitMQ (stop, status, pool-grow, ...).
    Ctl(lmpi::control::client::CtlArgs),
    /// Record every change on the live source by identity (fanotify, or
    /// Lustre changelogs), so
    /// `--pass final --changes JOURNAL` visits only what changed. Runs until
    /// SIGTERM/SIGINT, then syncs the journal and exits 0.
    Track(TrackArgs),
    /// Stats tools.
    Stats {
        #[command(subcommand)]
        cmd: StatsCmd,
    },
    /// Print a shell completion script to stdout, e.g.
    /// `lmpi completions bash > /etc/bash_completion.d/lmpi`.
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout: `lmpi man > /usr/share/man/man1/lmpi.1`.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Args, Clone)]
pub struct TrackArgs {
    /// The source tree to watch (the whole filesystem it is on is marked).
    #[arg(long, value_name = "DIR")]
    pub source: PathBuf,
    /// The journal to append to (created 0600; a tracker restarted on it
    /// records the gap, which makes the final pass walk everything).
    #[arg(long, value_name = "FILE")]
    pub journal: PathBuf,
    /// Sync the journal at least this often (milliseconds).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub flush_ms: u64,
    /// Print a progress line this often (seconds; 0: never).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub report_interval: u64,
    /// Lustre: read this MDT's changelog (repeat for each MDT; default:
    /// `[lustre] changelog_mdts`).
    #[arg(long = "mdt", value_name = "NAME")]
    pub mdts: Vec<String>,
    /// Lustre: the registered changelog user (default: `[lustre]
    /// changelog_user`). With one, a source on Lustre is tracked through
    /// its changelogs instead of fanotify.
    #[arg(long, value_name = "ID")]
    pub changelog_user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum StatsCmd {
    /// Read and clear the memcached counters and send them to Graphite.
    Graphite(lmpi::statsd::GraphiteArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct PassArgs {
    /// The pass to run.
    #[arg(long, value_enum, required = true)]
    pub pass: Option<PassKind>,
    /// Config file (TOML); default: $LMPI_CONFIG if set, else built-in defaults.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Source tree root (overrides `source_mount`).
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Target tree root (overrides `target_mount`).
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// I/O threads per rank (`threads_per_rank`; 1 to `max_threads_per_rank`, at most 1024).
    #[arg(long, value_name = "N", value_parser = ranged::<usize>("threads_per_rank", MAX_THREADS))]
    pub threads: Option<usize>,
    /// Seconds between progress lines (`report_interval`; 1-86400).
    #[arg(long, value_name = "SECS", value_parser = ranged::<u64>("report_interval", REPORT_INTERVAL))]
    pub report_interval: Option<u64>,
    /// Skip files whose atime is older than now minus SECS (`oldest_date`; 0 = off; at most 3155760000, 100 years).
    #[arg(long, value_name = "SECS", value_parser = ranged::<u64>("oldest_date", AGE))]
    pub oldest_date: Option<u64>,
    /// Skip files whose mtime is newer than now minus SECS (`newest_date`; 0 = off; at most 3155760000, 100 years).
    #[arg(long, value_name = "SECS", value_parser = ranged::<u64>("newest_date", AGE))]
    pub newest_date: Option<u64>,
    /// Leave this out (repeatable): a bare name (`.snapshot`) at any depth; a path with `/`
    /// (relative to the source root, or absolute under it) and all below it; a glob with `*`,
    /// `?` or `[` (`*.tmp` matches names at any depth, `a/*/cache` paths from the root).
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<PathBuf>,
    /// Read excludes from FILE, one per line (`#` comments, blank lines ignored;
    /// config key `exclude_file`).
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Option<PathBuf>,
    /// Entries per work item when a directory is split (`batch_size`; 1-1000000).
    #[arg(long, value_name = "N", value_parser = ranged::<usize>("batch_size", BATCH_SIZE))]
    pub batch_size: Option<usize>,
    /// Files of at least this many bytes are copied in chunks by several ranks
    /// (`chunk_threshold`; chunk size to 2^50, which means never).
    #[arg(long, value_name = "BYTES", value_parser = ranged::<u64>("chunk_threshold", CHUNK_THRESHOLD))]
    pub chunk_threshold: Option<u64>,
    /// Chunk size in bytes (`chunk_size`; a multiple of 4096 from 4096 to 2^30).
    #[arg(long, value_name = "BYTES", value_parser = ranged::<u64>("chunk_size", CHUNK_SIZE))]
    pub chunk_size: Option<u64>,
    /// copy: also compare and fix the xattrs and ACLs of up-to-date files (`check_xattrs`).
    #[arg(long)]
    pub check_xattrs: bool,
    /// verify: also compare file data, read on both sides (`verify_content`); copy/final:
    /// compare the data of files whose size and mtime match, and copy again those that differ.
    #[arg(long)]
    pub content: bool,
    /// verify --content: compare the data of this fraction of the files only, the same files
    /// every run (`verify_sample`; 0 to 1).
    #[arg(long, value_name = "FRACTION")]
    pub sample: Option<f64>,
    /// verify: check only the entries these manifests name (of the passes since the last full
    /// verify), content included with --content; copy/final: re-examine and fix only the
    /// entries these manifests name (a verify's differences, a pass's failures); repeatable.
    #[arg(long, value_name = "FILE")]
    pub from_manifest: Vec<PathBuf>,
    /// delete/final: count first; if more than N entries are due (doomed subtrees counted whole),
    /// delete nothing and exit with status 5, else delete them all (any N from 0 to 2^64-1).
    #[arg(long, value_name = "N")]
    pub max_delete: Option<u64>,
    /// delete/final: run even if the source root is empty while the target is not.
    #[arg(long)]
    pub allow_empty_source: bool,
    /// delete/final: refuse (exit 3) unless both roots are mount points
    /// (`require_mountpoints`; on by default with `[lustre] mode = "require"`).
    #[arg(long)]
    pub require_mountpoints: bool,
    /// Run even while another job holds the target's lock (`<target>/.lmpi.lock`).
    #[arg(long)]
    pub force_concurrent: bool,
    /// Wait for `lmpi ctl start` (or the old cmover start message) before starting.
    #[arg(long)]
    pub wait_for_start: bool,
    /// Write the final summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Error log file (default: <log_dir>/lmpi-<pass>-<job>.errors).
    #[arg(long, value_name = "FILE")]
    pub error_log: Option<PathBuf>,
    /// Write every action (created, copied, fixed, linked, removed, failed, skipped; in a dry
    /// run, what would be done) to FILE, one record per line (`manifest`; see docs/manifest.md).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Print no progress lines, only errors and the summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// final: visit only what the `lmpi track` journal FILE recorded since
    /// the last clean copy (walks everything, saying why, when the journal
    /// cannot stand for every change).
    #[arg(long, value_name = "FILE")]
    pub changes: Option<PathBuf>,
}
