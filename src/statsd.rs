//! Stats export: memcached counters and Graphite (issue 5 fills this in).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {}

impl StatsConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}

#[derive(Debug, clap::Args)]
pub struct GraphiteArgs {
    /// Send once and exit.
    #[arg(long)]
    pub once: bool,
}

pub fn graphite(_args: &GraphiteArgs, _cfg: &StatsConfig) -> i32 {
    eprintln!("lmpi: stats graphite: not built in yet");
    2
}

/// Per-rank memcached pusher (placeholder until the stats module lands).
pub struct Pusher;

impl Pusher {
    pub fn finish(&self, _s: &crate::stats::Snapshot) -> bool {
        true
    }
}

pub fn start_for_rank(
    cfg: &StatsConfig,
    _pass: &str,
    _host: &str,
    _rank: usize,
    _counters: std::sync::Arc<crate::stats::Counters>,
    _interval: std::time::Duration,
) -> Option<Pusher> {
    let _ = cfg;
    None
}
