//! Each rank's memcached pusher: a background thread that, every interval,
//! adds what the counters gained since its last successful push. A failed push
//! keeps the delta for the next one and costs one line on stderr; the pass
//! never waits for memcached, and at its end waits for the last push only
//! until a deadline (a server that trickles bytes defeats per-read timeouts).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{registry_key, worker_name, StatsConfig, GAUGES};
use crate::stats::{Counters, Snapshot};

pub struct Pusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    last_ok: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// Closed when the thread ends.
    ended: crossbeam_channel::Receiver<()>,
    /// How long the end of the pass waits for the last push.
    deadline: Duration,
    who: String,
}

/// Start pushing this rank's counters, if `[stats] enabled`.
pub fn start_for_rank(
    cfg: &StatsConfig,
    pass: &str,
    host: &str,
    rank: usize,
    counters: Arc<Counters>,
    interval: Duration,
) -> Option<Pusher> {
    if !cfg.enabled {
        return None;
    }
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let last_ok = Arc::new(AtomicBool::new(true));
    let mut conn = Conn::new(
        cfg.clone(),
        worker_name(pass, host, rank),
        format!("lmpi[{host}:{rank}]"),
    );
    let (s, ok) = (stop.clone(), last_ok.clone());
    let (ended_tx, ended) = crossbeam_channel::bounded::<()>(0);
    let handle = std::thread::Builder::new()
        .name("lmpi-stats".into())
        .spawn(move || loop {
            let _ended = &ended_tx; // dropped when the thread returns
            let stopping = {
                let (lock, cv) = &*s;
                let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                let (guard, _) = cv
                    .wait_timeout_while(guard, interval, |stop| !*stop)
                    .unwrap_or_else(|p| p.into_inner());
                *guard
            };
            ok.store(conn.push(&counters.snapshot()), Ordering::Relaxed);
            if stopping {
                return;
            }
        })
        .ok()?;
    Some(Pusher {
        stop,
        last_ok,
        handle: Some(handle),
        ended,
        deadline: Duration::from_millis(cfg.timeout_ms.saturating_mul(3)) + Duration::from_secs(1),
        who: format!("lmpi[{host}:{rank}]"),
    })
}

impl Pusher {
    /// Push the final figures and stop; true if memcached has every count.
    /// Waits at most the deadline; a push still hanging then is abandoned
    /// (its thread ends with the process).
    pub fn finish(mut self) -> bool {
        {
            let (lock, cv) = &*self.stop;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        match self.ended.recv_timeout(self.deadline) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "{}: stats: the last push to memcached did not finish within {:.1} s: abandoned",
                    self.who,
                    self.deadline.as_secs_f64()
                );
                return false;
            }
            _ => {
                if let Some(h) = self.handle.take() {
                    let _ = h.join();
                }
            }
        }
        self.last_ok.load(Ordering::Relaxed)
    }
}

struct Conn {
    cfg: StatsConfig,
    worker: String,
    who: String,
    client: Option<memcache::Client>,
    registered: bool,
    /// What memcached has from us so far, per counter.
    pushed: HashMap<&'static str, u64>,
}

impl Conn {
    fn new(cfg: StatsConfig, worker: String, who: String) -> Conn {
        Conn {
            cfg,
            worker,
            who,
            client: None,
            registered: false,
            pushed: HashMap::new(),
        }
    }

    fn push(&mut self, snap: &Snapshot) -> bool {
        match self.try_push(snap) {
            Ok(()) => true,
            Err(e) => {
                // Reconnect next time; the unpushed delta stays in `pushed`'s gap.
                self.client = None;
                self.registered = false;
                eprintln!(
                    "{}: stats: memcached {} unreachable: {e}",
                    self.who, self.cfg.memcached
                );
                false
            }
        }
    }

    fn try_push(&mut self, snap: &Snapshot) -> Result<(), memcache::MemcacheError> {
        if self.client.is_none() {
            self.client = Some(memcache::Client::connect(self.cfg.memcache_url())?);
        }
        let Some(client) = self.client.as_ref() else {
            return Ok(());
        };
        if !self.registered {
            register(client, &registry_key(&self.cfg.key_prefix), &self.worker)?;
            self.registered = true;
        }
        for (name, value) in snap.pairs() {
            let key = format!("{}.{}.{name}", self.cfg.key_prefix, self.worker);
            if GAUGES.contains(&name) {
                client.set(&key, value, 0)?;
                continue;
            }
            let before = self.pushed.get(name).copied().unwrap_or(0);
            let delta = value.saturating_sub(before);
            if delta == 0 {
                continue;
            }
            add_to(client, &key, delta)?;
            self.pushed.insert(name, value);
        }
        Ok(())
    }
}

/// Add `delta` to a counter. When the key is missing, create it as 0 with
/// `add` and then `incr`: the ascii protocol does not report an `add` that lost
/// a race (NOT_STORED), and this way nothing is lost whoever created the key.
pub(crate) fn add_to(
    client: &memcache::Client,
    key: &str,
    delta: u64,
) -> Result<(), memcache::MemcacheError> {
    match client.increment(key, delta) {
        Ok(_) => Ok(()),
        Err(memcache::MemcacheError::CommandError(memcache::CommandError::KeyNotFound)) => {
            client.add(key, 0u64, 0)?;
            client.increment(key, delta).map(drop)
        }
        Err(e) => Err(e),
    }
}

/// Put `worker` in the registry. `add` creates the list and `append` extends
/// it atomically; as the ascii protocol does not report NOT_STORED (an `add`
/// that lost a race, an `append` to a missing key), read back and retry.
fn register(
    client: &memcache::Client,
    key: &str,
    worker: &str,
) -> Result<(), memcache::MemcacheError> {
    let line = format!("{worker}\n");
    for _ in 0..10 {
        // Bytes: a stray non-UTF-8 line (graphite skips it) must not stop
        // every rank from registering.
        match client.get::<Vec<u8>>(key)? {
            Some(list) if list.split(|&b| b == b'\n').any(|l| l == worker.as_bytes()) => {
                return Ok(())
            }
            Some(_) => client.append(key, line.as_str())?,
            None => client.add(key, line.as_str(), 0)?,
        }
    }
    Err(memcache::MemcacheError::CommandError(
        memcache::CommandError::KeyExists,
    ))
}
