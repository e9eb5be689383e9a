//! `lmpi stats graphite`: the successor of send_graphite.py. Reads every
//! registered worker's counters, clears what it read, and sends
//! `<graphite_prefix>.<worker>.<counter> <value> <ts>` lines, per-pass totals
//! `<graphite_prefix>.<pass>.total.<counter>`, and the outstanding work
//! `<graphite_prefix>.<pass>.queued|inflight` to carbon's plaintext port.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::pusher::add_to;
use super::{registry_key, StatsConfig, GAUGES};
use crate::stats::Snapshot;

#[derive(Debug, clap::Args)]
pub struct GraphiteArgs {
    /// Send once and exit (the default).
    #[arg(long, conflicts_with = "every")]
    pub once: bool,
    /// Send every N seconds until stopped.
    #[arg(long, value_name = "SECS")]
    pub every: Option<u64>,
    /// Print the lines instead of sending them (and clear nothing).
    #[arg(long)]
    pub dry_run: bool,
}

pub fn graphite(args: &GraphiteArgs, cfg: &StatsConfig) -> i32 {
    match args.every {
        None => match round_within(cfg, args.dry_run) {
            Ok(n) => {
                if !args.dry_run {
                    eprintln!(
                        "lmpi: stats: sent {n} values to {}:{}",
                        cfg.carbon_host, cfg.carbon_port
                    );
                }
                0
            }
            Err(e) => {
                eprintln!("lmpi: stats: {e}");
                1
            }
        },
        Some(secs) => {
            crate::signals::install();
            while !crate::signals::stop_requested() {
                if let Err(e) = round_within(cfg, args.dry_run) {
                    eprintln!("lmpi: stats: {e}");
                }
                let t0 = std::time::Instant::now();
                while t0.elapsed() < Duration::from_secs(secs.max(1))
                    && !crate::signals::stop_requested()
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            0
        }
    }
}

/// One read-clear-send round; the number of values sent.
/// One round with a deadline for the whole exchange: per-read timeouts do
/// not bound a server that trickles bytes. A round still running at the
/// deadline is abandoned (its thread ends with the process).
fn round_within(cfg: &StatsConfig, dry_run: bool) -> Result<usize, String> {
    let deadline =
        Duration::from_millis(cfg.timeout_ms.saturating_mul(10)) + Duration::from_secs(2);
    let (tx, rx) = crossbeam_channel::bounded(1);
    let c = cfg.clone();
    std::thread::Builder::new()
        .name("lmpi-graphite".into())
        .spawn(move || {
            let _ = tx.send(round(&c, dry_run));
        })
        .map_err(|e| format!("cannot start a round: {e}"))?;
    rx.recv_timeout(deadline).unwrap_or_else(|_| {
        Err(format!(
            "memcached {} or carbon {}:{}: no complete exchange within {:.1} s: abandoned",
            cfg.memcached,
            cfg.carbon_host,
            cfg.carbon_port,
            deadline.as_secs_f64()
        ))
    })
}

fn round(cfg: &StatsConfig, dry_run: bool) -> Result<usize, String> {
    let client = memcache::Client::connect(cfg.memcache_url())
        .map_err(|e| format!("memcached {}: {e}", cfg.memcached))?;
    let mc = |e: memcache::MemcacheError| format!("memcached {}: {e}", cfg.memcached);
    // Bytes, not a String: one stray byte must not cost every worker its round.
    let registry: Vec<u8> = client
        .get(&registry_key(&cfg.key_prefix))
        .map_err(mc)?
        .unwrap_or_default();
    let workers = worker_names(&registry, &cfg.key_prefix);
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut lines = Vec::new();
    // What we took out of memcached, to put back if carbon cannot have it.
    let mut taken: Vec<(String, u64)> = Vec::new();
    let mut totals: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    let mut take_all = || -> Result<(), String> {
        for w in &workers {
            let pass = w.split('_').next().unwrap_or("unknown").to_string();
            for name in Snapshot::KEYS {
                let key = format!("{}.{w}.{name}", cfg.key_prefix);
                let Some(v) = read_count(&client, &key).map_err(mc)? else {
                    continue;
                };
                if GAUGES.contains(name) {
                    *totals.entry((pass.clone(), name)).or_default() += v;
                    lines.push(format!("{}.{w}.{name} {v} {ts}", cfg.graphite_prefix));
                    continue;
                }
                if v == 0 {
                    continue;
                }
                // decr by what we read, not delete: an incr that lands between our
                // get and this decr is kept for the next round.
                if !dry_run {
                    client.decrement(&key, v).map_err(mc)?;
                    taken.push((key, v));
                }
                *totals.entry((pass.clone(), name)).or_default() += v;
                lines.push(format!("{}.{w}.{name} {v} {ts}", cfg.graphite_prefix));
            }
        }
        Ok(())
    };
    if let Err(e) = take_all() {
        // memcached failed halfway through the round: what was already taken
        // goes back (best effort) rather than vanishing unsent.
        give_back(&client, &taken);
        return Err(e);
    }
    for ((pass, name), v) in &totals {
        let path = if GAUGES.contains(name) {
            format!("{pass}.{name}")
        } else {
            format!("{pass}.total.{name}")
        };
        lines.push(format!("{}.{path} {v} {ts}", cfg.graphite_prefix));
    }
    if dry_run {
        for l in &lines {
            crate::report::say(l);
        }
        return Ok(lines.len());
    }
    if let Err(e) = send(cfg, &lines) {
        // Nothing may be lost: give the counts back to memcached.
        give_back(&client, &taken);
        return Err(format!(
            "carbon {}:{}: {e} (counters left in memcached)",
            cfg.carbon_host, cfg.carbon_port
        ));
    }
    Ok(lines.len())
}

/// The registry's worker names, sorted, each once. A line that is not a
/// name `worker_name` makes (ASCII letters, digits, `-`, `_`) is skipped
/// with one line on stderr: not UTF-8, a space or a dot would make a bad
/// memcached key or Graphite path.
fn worker_names(registry: &[u8], prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in registry.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match std::str::from_utf8(line) {
            Ok(w) if is_worker_name(w) && prefix.len() + w.len() + KEY_TAIL <= KEY_MAX => {
                out.push(w.to_string())
            }
            _ => eprintln!(
                "lmpi: stats: {}: skipped `{}`: not a worker name",
                registry_key(prefix),
                crate::fsops::show(&line[..line.len().min(100)])
            ),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// memcached's longest key, and what a counter adds to `<prefix><worker>`.
const KEY_MAX: usize = 250;
const KEY_TAIL: usize = 2 + 16;

fn is_worker_name(w: &str) -> bool {
    w.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A counter's value; None when missing, or not a number (then skipped
/// with one line: it is not ours to clear, nor worth failing the round).
fn read_count(
    client: &memcache::Client,
    key: &str,
) -> Result<Option<u64>, memcache::MemcacheError> {
    let Some(raw) = client.get::<Vec<u8>>(key)? else {
        return Ok(None);
    };
    let v = std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    if v.is_none() {
        let shown = crate::fsops::show(&raw[..raw.len().min(100)]);
        eprintln!("lmpi: stats: {key}: skipped: `{shown}` is not a count");
    }
    Ok(v)
}

fn give_back(client: &memcache::Client, taken: &[(String, u64)]) {
    for (key, v) in taken {
        let _ = add_to(client, key, *v);
    }
}

fn send(cfg: &StatsConfig, lines: &[String]) -> std::io::Result<()> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let addr = (cfg.carbon_host.as_str(), cfg.carbon_port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_write_timeout(Some(timeout))?;
    let mut buf = String::new();
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    s.write_all(buf.as_bytes())?;
    s.flush()
}
