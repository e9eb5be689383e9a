//! `lmpi ctl` (placeholder until the bridge lands).

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// stop | start | status | pool-grow N | pool-shrink N | ping
    pub command: Vec<String>,
}

pub fn run_ctl(_args: &CtlArgs, _cfg: &super::ControlConfig) -> i32 {
    eprintln!("lmpi: ctl: the control bridge is not built in yet");
    2
}
