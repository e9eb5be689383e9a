//! Control bridge: RabbitMQ on rank 0, `lmpi ctl`, and the old Celery commands.
//!
//! Rank 0 is a Celery node on the `celery.pidbox` fanout exchange (node name
//! `celery@file_<host>` by default, so the old `-d celery@file_<host>` still
//! targets it; also `lmpi@<job>`). It answers on `reply.celery.pidbox` with the
//! request's ticket, so the real celery CLI prints lmpi's replies. `lmpi ctl`
//! speaks the same protocol. A decided command goes to the engine, which
//! forwards it to every rank over MPI; other ranks never talk to the broker.
//! See `src/control/README.md`.

mod bridge;
pub mod client;
pub mod message;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use amq_protocol_uri::{AMQPAuthority, AMQPUri, AMQPUserInfo};
use serde::{Deserialize, Serialize};

use crate::stats::Snapshot;
use crate::status::RunState;

pub use crate::engine::Command;

/// What `lmpi ctl status` and `celery inspect active` show. Rank 0's main loop
/// refreshes it every `report_interval` from the ranks' periodic reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobStatus {
    pub job: String,
    pub pass: String,
    pub state: RunState,
    pub ranks: usize,
    pub threads_per_rank: usize,
    /// The cap pool_grow clamps to (`max_threads_per_rank`; 0 = not known).
    pub max_threads_per_rank: usize,
    pub totals: Snapshot,
    pub per_rank: Vec<RankStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RankStatus {
    pub rank: usize,
    pub host: String,
    pub counters: Snapshot,
    /// Items in flight on that rank, e.g. "12 entries in a/b".
    pub active: Vec<String>,
}

pub type SharedStatus = Arc<Mutex<JobStatus>>;

/// `[control]`. The broker URL is `url` if given; otherwise it is built from
/// `host` (else the old `<rabbitmq_dir>/rabbitmq.conf`, else localhost),
/// `username`, `password` (else the old `<rabbitmq_dir>/rabbitmq_<username>.conf`)
/// and `vhost` (default: the username, as the old tool).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Run the bridge on rank 0 of every pass.
    pub enabled: bool,
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: u16,
    pub username: String,
    pub password: Option<String>,
    pub vhost: Option<String>,
    /// Directory with the old tool's rabbitmq.conf / rabbitmq_<username>.conf.
    pub rabbitmq_dir: Option<PathBuf>,
    /// Celery node name of rank 0; default `celery@file_<hostname>`.
    pub node_name: Option<String>,
    /// How long `lmpi ctl` waits for replies, in milliseconds (1..=600000).
    pub timeout_ms: u64,
    /// The top-level `max_threads_per_rank`, copied here when the config is
    /// loaded so the bridge can clamp pool_grow; not a `[control]` key.
    #[serde(skip)]
    pub max_threads_per_rank: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            enabled: false,
            url: None,
            host: None,
            port: 5672,
            username: "data_move".into(),
            password: None,
            vhost: None,
            rabbitmq_dir: None,
            node_name: None,
            timeout_ms: 2000,
            max_threads_per_rank: crate::host::default_max_threads(),
        }
    }
}

impl ControlConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(u) = &self.url {
            if !u.starts_with("amqp://") {
                return Err(("url".into(), "must start with amqp://".into()));
            }
        }
        if self.port == 0 {
            return Err(("port".into(), "must be between 1 and 65535".into()));
        }
        if self.username.is_empty() {
            return Err(("username".into(), "must not be empty".into()));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 600_000 {
            return Err(("timeout_ms".into(), "must be between 1 and 600000".into()));
        }
        if let Some(n) = &self.node_name {
            if n.is_empty() || n.chars().any(char::is_whitespace) {
                return Err((
                    "node_name".into(),
                    "must be non-empty, without spaces".into(),
                ));
            }
        }
        Ok(())
    }

    /// The broker, resolved as documented; the error names the file it needed.
    /// A struct, not a URL: lapin connects to it as it is, so no password has
    /// to survive being percent-encoded and parsed back.
    pub fn broker_uri(&self) -> Result<AMQPUri, String> {
        if let Some(u) = &self.url {
            // The same parser lapin's `Connection::connect(&str)` uses. Some of
            // its errors quote the whole URL: never print the password.
            return u.parse().map_err(|e: String| {
                if e.contains(u.as_str()) {
                    "url is not a valid amqp:// URL".to_string()
                } else {
                    format!("url: {e}")
                }
            });
        }
        let old_file = |name: &str| -> Result<Option<String>, String> {
            let Some(dir) = &self.rabbitmq_dir else {
                return Ok(None);
            };
            let p = dir.join(name);
            let text = crate::bounded::read_bounded(&p, crate::bounded::CONFIG_MAX_BYTES)
                .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other));
            match text {
                Ok(s) => Ok(Some(s.trim().to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("{}: {e}", p.display())),
            }
        };
        let host = match &self.host {
            Some(h) => h.clone(),
            None => old_file("rabbitmq.conf")?.unwrap_or_else(|| "localhost".into()),
        };
        let password = match &self.password {
            Some(p) => p.clone(),
            None => old_file(&format!("rabbitmq_{}.conf", self.username))?.ok_or_else(|| {
                format!(
                    "no broker password: set [control] password or put it in {}",
                    self.rabbitmq_dir
                        .as_ref()
                        .map(|d| d
                            .join(format!("rabbitmq_{}.conf", self.username))
                            .display()
                            .to_string())
                        .unwrap_or_else(|| format!(
                            "<rabbitmq_dir>/rabbitmq_{}.conf",
                            self.username
                        ))
                )
            })?,
        };
        Ok(AMQPUri {
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.username.clone(),
                    password,
                },
                host,
                port: self.port,
            },
            vhost: self.vhost.clone().unwrap_or_else(|| self.username.clone()),
            ..Default::default()
        })
    }

    /// The broker without user and password, for messages:
    /// `amqp://<host>:<port>/<vhost>`.
    pub fn shown_url(&self) -> String {
        match self.broker_uri() {
            Ok(u) => format!(
                "{}://{}:{}/{}",
                u.scheme, u.authority.host, u.authority.port, u.vhost
            ),
            Err(e) => e,
        }
    }

    pub fn node(&self) -> String {
        self.node_name
            .clone()
            .unwrap_or_else(|| format!("celery@file_{}", crate::host::hostname()))
    }
}

/// Start the bridge on rank 0 when `[control] enabled`. Returns the receiving
/// end of decided commands. Never fails the pass: an unreachable broker is
/// retried with backoff and reported once.
pub fn spawn(
    cfg: &ControlConfig,
    job: &str,
    status: SharedStatus,
    want_start: bool,
) -> Option<crossbeam_channel::Receiver<Command>> {
    if !cfg.enabled {
        return None;
    }
    if let Ok(mut s) = status.lock() {
        s.max_threads_per_rank = cfg.max_threads_per_rank;
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    let (cfg, job) = (cfg.clone(), job.to_string());
    std::thread::Builder::new()
        .name("lmpi-control".into())
        .spawn(move || bridge::run(cfg, job, status, tx, want_start))
        .ok()?;
    Some(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_resolution_from_old_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("rabbitmq.conf"), "broker.example\n").unwrap();
        std::fs::write(d.path().join("rabbitmq_data_move.conf"), "s3cr/t@x\n").unwrap();
        let c = ControlConfig {
            rabbitmq_dir: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        let u = c.broker_uri().unwrap();
        assert_eq!(u.authority.userinfo.username, "data_move");
        assert_eq!(u.authority.userinfo.password, "s3cr/t@x");
        assert_eq!(u.authority.host, "broker.example");
        assert_eq!(u.authority.port, 5672);
        assert_eq!(u.vhost, "data_move");
        assert_eq!(
            u.to_string(),
            "amqp://data%5Fmove:s3cr%2Ft%40x@broker.example:5672/data%5Fmove"
        );
        assert_eq!(c.shown_url(), "amqp://broker.example:5672/data_move");
        let c = ControlConfig {
            rabbitmq_dir: Some(d.path().join("nope")),
            ..Default::default()
        };
        assert!(c
            .broker_uri()
            .unwrap_err()
            .contains("rabbitmq_data_move.conf"));
        assert!(ControlConfig {
            url: Some("http://x".into()),
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    /// Any password reaches the broker as it is, also where a URL would need
    /// escapes; none is ever shown.
    #[test]
    fn hostile_passwords_survive_and_are_never_shown() {
        for pw in [
            "s3cr/t@x",
            "a:b@c/d",
            "100%",
            "%41%zz",
            " two  spaces ",
            "pässwörd€🙂",
            "#?[]&=+;,",
            "@",
            // Held as it is; as a URL it would not survive (`u:@host` parses
            // back with amq-protocol-uri's default password), one more reason
            // lapin gets the struct.
            "",
        ] {
            let c = ControlConfig {
                password: Some(pw.into()),
                vhost: Some("/".into()),
                host: Some("broker.example".into()),
                ..Default::default()
            };
            let u = c.broker_uri().unwrap();
            assert_eq!(u.authority.userinfo.password, pw);
            assert_eq!(u.vhost, "/");
            // Rendered as a URL it parses back to the same broker, as lapin
            // would parse it.
            let back: AMQPUri = u.to_string().parse().unwrap();
            assert!(pw.is_empty() || back == u, "{pw:?} rendered as {u}");
            assert_eq!(c.shown_url(), "amqp://broker.example:5672//");
        }
    }

    #[test]
    fn given_url_is_parsed_and_shown_without_credentials() {
        let c = ControlConfig {
            url: Some("amqp://u%40x:p%2Fw%40rd@127.0.0.1:1/v%2Fh".into()),
            ..Default::default()
        };
        let u = c.broker_uri().unwrap();
        assert_eq!(u.authority.userinfo.username, "u@x");
        assert_eq!(u.authority.userinfo.password, "p/w@rd");
        assert_eq!(
            (u.authority.host.as_str(), u.authority.port),
            ("127.0.0.1", 1)
        );
        assert_eq!(u.vhost, "v/h");
        assert_eq!(c.shown_url(), "amqp://127.0.0.1:1/v/h");
        // A bad URL is an error that does not repeat the password.
        for bad in [
            "amqp:secret",
            "amqp://u:secret@h:99999/v",
            "amqp://u:secret@/v",
        ] {
            let c = ControlConfig {
                url: Some(bad.into()),
                ..Default::default()
            };
            let e = c.broker_uri().unwrap_err();
            assert!(
                !e.contains("secret") && !c.shown_url().contains("secret"),
                "{e}"
            );
        }
    }
}
