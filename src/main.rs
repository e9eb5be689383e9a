//! `lmpi`: thin entry point over the library.

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

mod cli;

use std::path::PathBuf;

use cli::{Cli, PassArgs, StatsCmd, Sub};
use lmpi::config::{Config, ConfigError};
use lmpi::settings::{PassKind, Settings};
use lmpi::status::ExitStatus;

fn main() {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => usage_error(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => usage_error(e),
    };
    let code = match cli.cmd {
        Some(Sub::Ctl(args)) => {
            let cfg = match load_config(&cli.pass) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("lmpi: {e}");
                    std::process::exit(ExitStatus::Usage.code());
                }
            };
            lmpi::control::client::run_ctl(&args, &cfg.control)
        }
        Some(Sub::Track(args)) => {
            let lustre = match track_lustre(&cli.pass, &args) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("lmpi track: {e}");
                    std::process::exit(ExitStatus::Usage.code());
                }
            };
            let s = lmpi::track::TrackSettings {
                lustre,
                source: args.source,
                journal: args.journal,
                flush: std::time::Duration::from_millis(args.flush_ms.max(1)),
                report: (args.report_interval > 0)
                    .then(|| std::time::Duration::from_secs(args.report_interval)),
            };
            match lmpi::track::track(&s) {
                Ok(_) => ExitStatus::Done.code(),
                Err(e) => {
                    eprintln!("lmpi track: {e}");
                    ExitStatus::Errors.code()
                }
            }
        }
        Some(Sub::Stats {
            cmd: StatsCmd::Graphite(args),
        }) => {
            let cfg = match load_config(&cli.pass) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("lmpi: {e}");
                    std::process::exit(ExitStatus::Usage.code());
                }
            };
            lmpi::statsd::graphite(&args, &cfg.stats)
        }
        Some(Sub::Completions { shell }) => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "lmpi", &mut std::io::stdout());
            ExitStatus::Done.code()
        }
        Some(Sub::Man) => man_page(),
        None => {
            lmpi::signals::install();
            lmpi::fsops::clear_umask();
            use lmpi::transport::solo::{detect, Launch, SoloTransport};
            match detect(|k| std::env::var_os(k)) {
                Launch::Alone => {
                    let s = settings(&cli.pass, &matches);
                    let s = s.as_ref().map_err(|e| e as &dyn std::fmt::Display);
                    lmpi::run::run_pass(&mut SoloTransport::default(), s).code()
                }
                Launch::SrunWithoutMpi { tasks } => {
                    eprintln!(
                        "lmpi: srun started {tasks} tasks without an MPI plugin: each would copy alone; use srun --mpi=pmix (or set MpiDefault=pmix)"
                    );
                    ExitStatus::Usage.code()
                }
                Launch::Mpi => match lmpi::transport::mpi::MpiTransport::init() {
                    Some(mut t) => {
                        let s = settings(&cli.pass, &matches);
                        let s = s.as_ref().map_err(|e| e as &dyn std::fmt::Display);
                        let code = lmpi::run::run_pass(&mut t, s).code();
                        drop(t);
                        code
                    }
                    None => {
                        eprintln!("lmpi: MPI could not be initialised");
                        ExitStatus::Usage.code()
                    }
                },
            }
        }
    };
    std::process::exit(code);
}

/// The man page, from the same command as --help (subcommands included as
/// sections of their own).
fn man_page() -> i32 {
    let man = clap_mangen::Man::new(Cli::command());
    match man.render(&mut std::io::stdout()) {
        Ok(()) => ExitStatus::Done.code(),
        Err(e) => {
            eprintln!("lmpi man: stdout: {e}");
            ExitStatus::Errors.code()
        }
    }
}

/// Bad usage is one line naming the option (clap's first paragraph, without
/// its usage block and hint) and exit status 2; --help/--version print as usual.
fn usage_error(e: clap::Error) -> ! {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let rendered = e.render().to_string();
    let mut paragraphs = rendered.split("\n\n").map(str::trim);
    let first = paragraphs.next().unwrap_or("");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // clap's tips ("a similar argument exists: '--pass'") are the useful
    // part of its other paragraphs; the usage block is --help's job.
    let tips: Vec<&str> = paragraphs.filter(|p| p.starts_with("tip:")).collect();
    let line = lmpi::config::one_line(
        &[first]
            .into_iter()
            .chain(tips)
            .collect::<Vec<_>>()
            .join("; "),
    );
    eprintln!("lmpi: {line}");
    std::process::exit(ExitStatus::Usage.code());
}

/// Load the config named on the command line (or $LMPI_CONFIG), then apply overrides.
/// `[lustre]` of the config with `--mdt` and `--changelog-user` applied.
fn track_lustre(
    pass: &PassArgs,
    args: &cli::TrackArgs,
) -> Result<lmpi::lustre::LustreConfig, String> {
    let mut l = load_config(pass).map_err(|e| e.to_string())?.lustre;
    if !args.mdts.is_empty() {
        l.changelog_mdts = args.mdts.clone();
    }
    if let Some(u) = &args.changelog_user {
        l.changelog_user = Some(u.clone());
    }
    l.validate()
        .map_err(|(key, why)| format!("--mdt/--changelog-user ({key}): {why}"))?;
    Ok(l)
}

fn load_config(args: &PassArgs) -> Result<Config, ConfigError> {
    let path = args
        .config
        .clone()
        .or_else(|| std::env::var_os("LMPI_CONFIG").map(PathBuf::from));
    let mut cfg = match &path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    // The file was checked alone while loading: what fails now comes from a flag.
    let shown = path
        .as_ref()
        .map(|p| format!("{} with the command-line options", p.display()))
        .unwrap_or_else(|| "command line".into());
    if let Some(s) = &args.source {
        cfg.source_mount = Some(s.clone());
    }
    if let Some(s) = &args.target {
        cfg.target_mount = Some(s.clone());
    }
    macro_rules! set {
        ($($f:ident),*) => { $(if let Some(v) = args.$f { cfg.$f = v; })* };
    }
    set!(
        oldest_date,
        newest_date,
        report_interval,
        batch_size,
        chunk_threshold,
        chunk_size
    );
    if let Some(v) = args.threads {
        cfg.threads_per_rank = v;
    }
    cfg.check_xattrs |= args.check_xattrs;
    cfg.verify_content |= args.content;
    if let Some(f) = args.sample {
        cfg.verify_sample = f;
    }
    cfg.exclude.extend(args.exclude.iter().cloned());
    if let Some(f) = &args.exclude_from {
        cfg.exclude_file = Some(f.clone());
    }
    cfg.validate(&shown)?;
    cfg.control.max_threads_per_rank = cfg.max_threads_per_rank;
    Ok(cfg)
}

/// Why the pass's settings cannot be resolved.
#[derive(Debug, thiserror::Error)]
enum SettingsError {
    #[error("--pass is required (copy, delete, dirtime, final or verify)")]
    NoPass,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--{flag} is for --pass {passes} only")]
    NotForPass { flag: String, passes: String },
    #[error("{0} and {1} choose what a pass visits in two ways: give one")]
    Conflict(&'static str, &'static str),
}

/// The first option given on the command line that `pass` does not use
/// (`cli::PASS_ONLY`), named with the passes that take it.
fn refuse_foreign_options(pass: PassKind, m: &ArgMatches) -> Result<(), SettingsError> {
    for (id, passes) in cli::PASS_ONLY {
        if passes.contains(&pass) || m.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let names: Vec<&str> = passes.iter().map(|p| p.name()).collect();
        return Err(SettingsError::NotForPass {
            flag: id.replace('_', "-"),
            passes: match names.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            },
        });
    }
    Ok(())
}

/// The pass's settings: the config file with the command line applied.
fn settings(args: &PassArgs, m: &ArgMatches) -> Result<Settings, SettingsError> {
    let pass = args.pass.ok_or(SettingsError::NoPass)?;
    refuse_foreign_options(pass, m)?;
    let cfg = load_config(args)?;
    let mut s = Settings::new(pass, cfg);
    s.dry_run = args.dry_run;
    s.max_delete = args.max_delete;
    s.allow_empty_source = args.allow_empty_source;
    s.require_mountpoints |= args.require_mountpoints;
    s.force_concurrent = args.force_concurrent;
    s.wait_for_start = args.wait_for_start;
    s.report = args.report.clone();
    s.error_log = args.error_log.clone();
    if let Some(m) = &args.manifest {
        s.manifest = Some(m.clone());
    }
    s.quiet = args.quiet;
    s.from_manifest = args.from_manifest.clone();
    s.changes = args.changes.clone();
    if s.changes.is_some() && !s.from_manifest.is_empty() {
        return Err(SettingsError::Conflict("--changes", "--from-manifest"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every id in the table is an option of the command (a renamed field
    /// would otherwise never be refused).
    #[test]
    fn pass_only_names_real_options() {
        let cmd = Cli::command();
        for (id, passes) in cli::PASS_ONLY {
            let arg = cmd.get_arguments().find(|a| a.get_id() == *id);
            let long = arg.and_then(|a| a.get_long());
            assert_eq!(long, Some(id.replace('_', "-").as_str()), "{id}");
            assert!(!passes.is_empty(), "{id}");
        }
    }
}
