//! `lmpi`: thin entry point over the library.

use clap::error::ErrorKind;
use clap::Parser;

use lmpi::cli::{Cli, StatsCmd, Sub};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => usage_error(e),
    };
    let code = match cli.cmd {
        Some(Sub::Ctl(args)) => {
            let cfg = match lmpi::run::load_config(&cli.pass) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("lmpi: {e}");
                    std::process::exit(lmpi::status::ExitStatus::Usage.code());
                }
            };
            lmpi::control::client::run_ctl(&args, &cfg.control)
        }
        Some(Sub::Stats {
            cmd: StatsCmd::Graphite(args),
        }) => {
            let cfg = match lmpi::run::load_config(&cli.pass) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("lmpi: {e}");
                    std::process::exit(lmpi::status::ExitStatus::Usage.code());
                }
            };
            lmpi::statsd::graphite(&args, &cfg.stats)
        }
        None => {
            lmpi::signals::install();
            lmpi::fsops::clear_umask();
            use lmpi::transport::solo::{detect, Launch, SoloTransport};
            match detect(|k| std::env::var_os(k)) {
                Launch::Alone => {
                    lmpi::run::run_pass(&mut SoloTransport::default(), &cli.pass).code()
                }
                Launch::SrunWithoutMpi { tasks } => {
                    eprintln!(
                        "lmpi: srun started {tasks} tasks without an MPI plugin: each would copy alone; use srun --mpi=pmix (or set MpiDefault=pmix)"
                    );
                    lmpi::status::ExitStatus::Usage.code()
                }
                Launch::Mpi => match lmpi::transport::mpi::MpiTransport::init() {
                    Some(mut t) => {
                        let code = lmpi::run::run_pass(&mut t, &cli.pass).code();
                        drop(t);
                        code
                    }
                    None => {
                        eprintln!("lmpi: MPI could not be initialised");
                        lmpi::status::ExitStatus::Usage.code()
                    }
                },
            }
        }
    };
    std::process::exit(code);
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
    let first = rendered.split("\n\n").next().unwrap_or("");
    let line = lmpi::config::one_line(first);
    eprintln!("lmpi: {}", line.strip_prefix("error: ").unwrap_or(&line));
    std::process::exit(lmpi::status::ExitStatus::Usage.code());
}
