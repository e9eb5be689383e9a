//! Stats export, the successor of the old workers' memcached counters and
//! `send_graphite.py`: every rank pushes its counters to memcached
//! (`pusher`), and `lmpi stats graphite` reads and clears them and sends them
//! to carbon (`graphite`). Neither ever stops or slows a pass.
//!
//! Keys (`<p>` = `key_prefix`, default `cmover`, as the old tool):
//! * `<p>.workers` — registry: one worker name per line (memcached cannot list keys).
//! * `<p>.<worker>.<counter>` — a running total, increased with `incr` every
//!   `report_interval`; `<worker>` is `<pass>_<host>_<rank>` (dots in the host
//!   name become `_`, since Graphite splits paths on dots); `<counter>` is one of
//!   `files data dirs scanned meta uptodate skipped deleted dirtimes errors`
//!   (see `stats::Counters`: `files` entries copied or created, `data` bytes,
//!   `dirs` directories walked, `meta` owner/mode-only fixes, `uptodate`
//!   entries already identical, `skipped` filtered, `deleted` removed,
//!   `dirtimes` directory times set, `errors` error lines).
//! * `<p>.<worker>.queued`, `<p>.<worker>.inflight` — gauges (`set`): the
//!   rank's outstanding work, in place of the old RabbitMQ queue lengths.

mod graphite;
mod pusher;

pub use graphite::{graphite, GraphiteArgs};
pub use pusher::{start_for_rank, Pusher};
use serde::Deserialize;

/// Counters that are gauges: set, not incremented, and not cleared by the reader.
pub const GAUGES: &[&str] = &["queued", "inflight"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// Push counters to memcached (the old STATS_ENABLED).
    pub enabled: bool,
    /// memcached as host:port (the old tool used the broker host, port 11211).
    pub memcached: String,
    pub key_prefix: String,
    pub carbon_host: String,
    pub carbon_port: u16,
    pub graphite_prefix: String,
    /// Connect/read/write timeout for memcached and carbon, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            enabled: false,
            memcached: "127.0.0.1:11211".into(),
            key_prefix: "cmover".into(),
            carbon_host: "127.0.0.1".into(),
            carbon_port: 2003,
            graphite_prefix: "system.hpc.datamove".into(),
            timeout_ms: 500,
        }
    }
}

impl StatsConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        match self.memcached.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
            _ => return bad("memcached", "must be host:port"),
        }
        if !valid_key_part(&self.key_prefix) {
            return bad(
                "key_prefix",
                "must be non-empty, without spaces or control characters",
            );
        }
        if !valid_key_part(&self.graphite_prefix) {
            return bad(
                "graphite_prefix",
                "must be non-empty, without spaces or control characters",
            );
        }
        if self.carbon_host.is_empty() {
            return bad("carbon_host", "must not be empty");
        }
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return bad("timeout_ms", "must be between 1 and 60000");
        }
        Ok(())
    }

    pub(crate) fn memcache_url(&self) -> String {
        let t = self.timeout_ms as f64 / 1000.0;
        format!(
            "memcache://{}?timeout={t}&connect_timeout={t}&protocol=ascii",
            self.memcached
        )
    }
}

fn valid_key_part(s: &str) -> bool {
    !s.is_empty() && s.len() < 200 && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `<pass>_<host>_<rank>`, safe as a memcached key part and a Graphite path node.
pub fn worker_name(pass: &str, host: &str, rank: usize) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{pass}_{host}_{rank}")
}

pub(crate) fn registry_key(prefix: &str) -> String {
    format!("{prefix}.workers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_validation() {
        assert_eq!(
            worker_name("copy", "node1.cluster.org", 3),
            "copy_node1_cluster_org_3"
        );
        assert!(StatsConfig::default().validate().is_ok());
        let c = StatsConfig {
            memcached: "nohost".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "memcached");
        let c = StatsConfig {
            key_prefix: "a b".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "key_prefix");
    }
}
