//! `lmpi ctl`: publish a control request to running jobs and print the replies.
//! It speaks Celery's pidbox protocol, so it reaches lmpi jobs exactly as the
//! celery CLI does.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};
use uuid::Uuid;

use super::bridge::{declare_exchanges, header_str, now, PIDBOX, REPLY_EXCHANGE};
use super::ControlConfig;

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    #[command(subcommand)]
    pub cmd: CtlCmd,
    /// Only the job with this id (the Slurm job id, or the start time for
    /// jobs outside Slurm, as in the error log's name).
    #[arg(long, global = true)]
    pub job: Option<String>,
    /// stop, start, pool-grow and pool-shrink: act on every job on the broker
    /// (without it they need --job; status and ping always ask every job).
    #[arg(long, global = true, conflicts_with = "job")]
    pub all: bool,
    /// Seconds to wait for replies, 0.05 to 600 (default: control.timeout_ms).
    #[arg(long, global = true, value_parser = timeout_secs)]
    pub timeout: Option<f64>,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCmd {
    /// Graceful stop, as scancel: in-flight files finish, the summary says "stopped".
    Stop,
    /// Release a job started with --wait-for-start.
    Start,
    /// Progress counters and what each rank is working on.
    Status,
    /// Are jobs alive?
    Ping,
    /// Add N I/O threads per rank (N from 1 to 1024; the job clamps to its
    /// max_threads_per_rank and says so).
    PoolGrow {
        #[arg(value_parser = pool_count)]
        n: usize,
    },
    /// Remove N I/O threads per rank (N from 1 to 1024; at least one stays).
    PoolShrink {
        #[arg(value_parser = pool_count)]
        n: usize,
    },
}

fn pool_count(s: &str) -> Result<usize, String> {
    crate::bounded::ranged::<usize>("n", 1..=crate::engine::THREADS_LIMIT as u64)(s)
}

/// A finite number of seconds in 0.05..=600: `Duration::from_secs_f64`
/// panics on infinity, NaN and overflow.
fn timeout_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.05..=600.0).contains(&v) => Ok(v),
        _ => Err("must be a number of seconds from 0.05 to 600".into()),
    }
}

pub fn run_ctl(args: &CtlArgs, cfg: &ControlConfig) -> i32 {
    let (method, arguments) = match &args.cmd {
        CtlCmd::Stop => ("shutdown", json!({})),
        CtlCmd::Start => ("lmpi_start", json!({})),
        CtlCmd::Status => ("lmpi_status", json!({})),
        CtlCmd::Ping => ("ping", json!({})),
        CtlCmd::PoolGrow { n } => ("pool_grow", json!({ "n": n })),
        CtlCmd::PoolShrink { n } => ("pool_shrink", json!({ "n": n })),
    };
    let timeout = args
        .timeout
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_millis(cfg.timeout_ms));
    // One broker may serve several jobs (a copy of one project beside a
    // final of another): a command that changes a job names it.
    let changing = match args.cmd {
        CtlCmd::Stop => Some("stop"),
        CtlCmd::Start => Some("start"),
        CtlCmd::PoolGrow { .. } => Some("pool-grow"),
        CtlCmd::PoolShrink { .. } => Some("pool-shrink"),
        CtlCmd::Status | CtlCmd::Ping => None,
    };
    if let (Some(what), None, false) = (changing, &args.job, args.all) {
        eprintln!(
            "lmpi: ctl {what}: give --job ID (`lmpi ctl status` lists the jobs) or --all for every job on the broker"
        );
        return 2;
    }
    let destination = args.job.as_ref().map(|j| vec![format!("lmpi@{j}")]);
    match request(cfg, method, arguments, destination, timeout) {
        Ok(replies) if replies.is_empty() => {
            eprintln!(
                "lmpi: ctl: no lmpi job replied within {:.1} s (broker {})",
                timeout.as_secs_f64(),
                cfg.shown_url()
            );
            1
        }
        Ok(replies) => {
            for r in &replies {
                print_reply(method, r);
            }
            0
        }
        Err(e) => {
            eprintln!("lmpi: ctl: broker {}: {e}", cfg.shown_url());
            2
        }
    }
}

/// Why `lmpi ctl` got no answer at all.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Broker(#[from] lapin::Error),
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("cannot encode the request: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Publish one pidbox request and collect the replies that carry its ticket.
pub fn request(
    cfg: &ControlConfig,
    method: &str,
    arguments: Value,
    destination: Option<Vec<String>>,
    timeout: Duration,
) -> Result<Vec<Value>, CtlError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let uri = cfg.broker_uri().map_err(CtlError::Config)?;
        let conn = Connection::connect_uri(uri, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        declare_exchanges(&ch).await?;
        let (ticket, reply_key) = (new_id(), new_id());
        let consumer = reply_queue(&ch, &reply_key).await?;
        let body = json!({
            "method": method,
            "arguments": arguments,
            "destination": destination,
            "pattern": null,
            "matcher": null,
            "ticket": ticket,
            "reply_to": {"exchange": REPLY_EXCHANGE, "routing_key": reply_key},
        });
        publish(&ch, &body, timeout).await?;
        let replies = collect(consumer, &ticket, timeout).await;
        let _ = conn.close(0, "bye".into()).await;
        Ok(replies)
    })
}

/// An exclusive queue bound to the reply exchange under `reply_key`.
async fn reply_queue(ch: &lapin::Channel, reply_key: &str) -> Result<lapin::Consumer, CtlError> {
    let opts = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare("".into(), opts, FieldTable::default())
        .await?;
    let qname = q.name().as_str().to_string();
    ch.queue_bind(
        qname.as_str().into(),
        REPLY_EXCHANGE.into(),
        reply_key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let opts = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let consumer = ch
        .basic_consume(
            qname.as_str().into(),
            "lmpi-ctl".into(),
            opts,
            FieldTable::default(),
        )
        .await?;
    Ok(consumer)
}

/// The request on the pidbox exchange, with the headers kombu sends.
async fn publish(ch: &lapin::Channel, body: &Value, timeout: Duration) -> Result<(), CtlError> {
    let mut h = FieldTable::default();
    h.insert("clock".into(), AMQPValue::LongLongInt(1));
    h.insert(
        "expires".into(),
        AMQPValue::Double(now() + timeout.as_secs_f64()),
    );
    let props = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_content_encoding(ShortString::from("utf-8"))
        .with_delivery_mode(1)
        .with_headers(h);
    let payload = serde_json::to_vec(body)?;
    let opts = BasicPublishOptions::default();
    ch.basic_publish(PIDBOX.into(), "".into(), opts, &payload, props)
        .await?;
    Ok(())
}

/// Replies that carry `ticket`, until `timeout`.
async fn collect(mut consumer: lapin::Consumer, ticket: &str, timeout: Duration) -> Vec<Value> {
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while let Ok(Some(d)) = tokio::time::timeout_at(deadline, consumer.next()).await {
        let Ok(d) = d else { break };
        if header_str(&d.properties, "ticket").as_deref() != Some(ticket) {
            continue;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&d.data) {
            replies.push(v);
        }
    }
    replies
}

/// A ticket or reply routing key as kombu makes them: a random v4 UUID,
/// hyphenated lowercase.
fn new_id() -> String {
    Uuid::new_v4().to_string()
}

fn print_reply(method: &str, reply: &Value) {
    let Some(obj) = reply.as_object() else { return };
    for (node, v) in obj {
        if method == "lmpi_status" {
            print_status(node, v);
        } else if let Some(ok) = v.get("ok") {
            crate::report::say(&format!(
                "{node}: OK {}",
                ok.as_str().unwrap_or(&ok.to_string())
            ));
        } else if let Some(err) = v.get("error") {
            crate::report::say(&format!(
                "{node}: ERROR {}",
                err.as_str().unwrap_or(&err.to_string())
            ));
        } else {
            crate::report::say(&format!("{node}: {v}"));
        }
    }
}

fn print_status(node: &str, v: &Value) {
    let s = |k: &str| {
        v.get(k)
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| x.to_string())
            })
            .unwrap_or_default()
    };
    crate::report::say(&format!(
        "{node}: job {} pass {} state {} ({} ranks x {} threads)",
        s("job"),
        s("pass"),
        s("state"),
        s("ranks"),
        s("threads_per_rank")
    ));
    if let Some(t) = v.get("totals").and_then(Value::as_object) {
        let line: Vec<String> = t.iter().map(|(k, x)| format!("{k} {x}")).collect();
        crate::report::say(&format!("  totals: {}", line.join("  ")));
    }
    for r in v
        .get("per_rank")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let active: Vec<&str> = r
            .get("active")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        crate::report::say(&format!(
            "  rank {}: files {} data {} errors {}; working on: {}",
            r.get("rank").unwrap_or(&Value::Null),
            r.pointer("/counters/files").unwrap_or(&Value::Null),
            r.pointer("/counters/data").unwrap_or(&Value::Null),
            r.pointer("/counters/errors").unwrap_or(&Value::Null),
            if active.is_empty() {
                "(idle)".to_string()
            } else {
                active.join("; ")
            }
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_kombus() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        // As in the captures: 8-4-4-4-12 lowercase hex, version 4, RFC 4122 variant.
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts
            .concat()
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
    }
}
