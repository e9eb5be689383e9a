//! Rank 0's broker connection: a Celery pidbox node plus, for a job waiting
//! to start, a consumer of the old `celery` task queue. Runs on its own thread
//! with a one-thread tokio runtime; the pass never waits for it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::message::{addressed_to, decide, is_start_task, parse_request};
use super::{Command, ControlConfig, SharedStatus};

pub const PIDBOX: &str = "celery.pidbox";
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";

pub fn run(
    cfg: ControlConfig,
    job: String,
    status: SharedStatus,
    tx: Sender<Command>,
    want_start: bool,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lmpi: control: cannot start the bridge: {e}");
            return;
        }
    };
    let shown = cfg.shown_url();
    rt.block_on(async move {
        let mut backoff = Duration::from_secs(1);
        let mut down_said = false;
        let mut want_start = want_start;
        loop {
            let mut connected = false;
            let r = session(
                &cfg,
                &job,
                &status,
                &tx,
                &mut want_start,
                &mut down_said,
                &mut connected,
            )
            .await;
            // A session that got in and was then lost starts over with a short wait;
            // only repeated failures to connect back off.
            if connected {
                backoff = Duration::from_secs(1);
            }
            if let Err(e) = r {
                if !down_said {
                    eprintln!("lmpi: control: broker {shown}: {e}; the pass goes on, retrying in the background");
                    down_said = true;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
}

pub(crate) async fn declare_exchanges(ch: &Channel) -> lapin::Result<()> {
    // As kombu declares them (durable=False, transient), or the broker refuses ours.
    let opts = ExchangeDeclareOptions {
        durable: false,
        auto_delete: false,
        ..Default::default()
    };
    ch.exchange_declare(
        PIDBOX.into(),
        ExchangeKind::Fanout,
        opts,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        REPLY_EXCHANGE.into(),
        ExchangeKind::Direct,
        opts,
        FieldTable::default(),
    )
    .await
}

async fn session(
    cfg: &ControlConfig,
    job: &str,
    status: &SharedStatus,
    tx: &Sender<Command>,
    want_start: &mut bool,
    down_said: &mut bool,
    connected: &mut bool,
) -> Result<(), String> {
    let conn = Connection::connect_uri(cfg.broker_uri()?, ConnectionProperties::default())
        .await
        .map_err(|e| e.to_string())?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    declare_exchanges(&ch).await.map_err(|e| e.to_string())?;
    let node = cfg.node();
    let alias = format!("lmpi@{job}");
    // One queue per job: two jobs on one host must not compete for messages.
    let queue = format!("{node}.{job}.celery.pidbox");
    let qopts = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    ch.queue_declare(queue.as_str().into(), qopts, FieldTable::default())
        .await
        .map_err(|e| e.to_string())?;
    ch.queue_bind(
        queue.as_str().into(),
        PIDBOX.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let copts = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut pidbox = ch
        .basic_consume(
            queue.as_str().into(),
            format!("lmpi-{job}").into(),
            copts,
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    // The old workflow started workers first and then sent `cmover.procDir`
    // to Celery's default queue; listen there only while waiting for it.
    let mut tasks = if *want_start {
        let q = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("celery".into(), q, FieldTable::default())
            .await
            .map_err(|e| e.to_string())?;
        Some(
            ch.basic_consume(
                "celery".into(),
                format!("lmpi-start-{job}").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    *connected = true;
    if *down_said {
        eprintln!("lmpi: control: connected to broker {}", cfg.shown_url());
        *down_said = false;
    }
    loop {
        enum Ev {
            Pidbox(Option<lapin::Result<lapin::message::Delivery>>),
            Task(Option<lapin::Result<lapin::message::Delivery>>),
        }
        let ev = match tasks.as_mut() {
            Some(t) => {
                futures_lite::future::or(async { Ev::Pidbox(pidbox.next().await) }, async {
                    Ev::Task(t.next().await)
                })
                .await
            }
            None => Ev::Pidbox(pidbox.next().await),
        };
        match ev {
            Ev::Pidbox(None) | Ev::Task(None) => return Err("connection closed".into()),
            Ev::Pidbox(Some(Err(e))) | Ev::Task(Some(Err(e))) => return Err(e.to_string()),
            Ev::Task(Some(Ok(d))) => {
                let task = header_str(&d.properties, "task");
                if is_start_task(task.as_deref(), &d.data) {
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                    let _ = tx.send(Command::Start);
                    *want_start = false;
                    tasks = None;
                } else {
                    // Not ours: leave it for whoever else consumes Celery's queue.
                    let _ = d
                        .acker
                        .nack(lapin::options::BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await;
                }
            }
            Ev::Pidbox(Some(Ok(d))) => {
                if let Some(exp) = header_f64(&d.properties, "expires") {
                    if exp > 0.0 && now() > exp {
                        continue; // kombu drops expired requests too
                    }
                }
                let req = match parse_request(&d.data) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("lmpi: control: ignored a malformed control message: {e}");
                        continue;
                    }
                };
                if !addressed_to(&req, &[node.as_str(), alias.as_str()]) {
                    continue;
                }
                let snapshot = status.lock().map(|s| s.clone()).unwrap_or_default();
                let (cmd, reply) = decide(&req, &snapshot, &node);
                if let Some(c) = cmd {
                    if c == Command::Start {
                        *want_start = false;
                    }
                    let _ = tx.send(c);
                }
                if let (Some(rt), Some(ticket)) = (&req.reply_to, &req.ticket) {
                    let body = serde_json::json!({ node.as_str(): reply });
                    publish_reply(&ch, &rt.exchange, &rt.routing_key, ticket, &body)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
}

async fn publish_reply(
    ch: &Channel,
    exchange: &str,
    key: &str,
    ticket: &str,
    body: &serde_json::Value,
) -> lapin::Result<()> {
    let mut h = FieldTable::default();
    h.insert(
        "ticket".into(),
        AMQPValue::LongString(LongString::from(ticket)),
    );
    h.insert("clock".into(), AMQPValue::LongLongInt(1));
    let props = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_content_encoding(ShortString::from("utf-8"))
        .with_delivery_mode(1)
        .with_headers(h);
    let payload = serde_json::to_vec(body).unwrap_or_default();
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        &payload,
        props,
    )
    .await?;
    Ok(())
}

pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(crate) fn header_str(p: &BasicProperties, key: &str) -> Option<String> {
    match p.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn header_f64(p: &BasicProperties, key: &str) -> Option<f64> {
    Some(match p.headers().as_ref()?.inner().get(key)? {
        AMQPValue::Double(v) => *v,
        AMQPValue::Float(v) => *v as f64,
        AMQPValue::LongLongInt(v) => *v as f64,
        AMQPValue::LongInt(v) => *v as f64,
        AMQPValue::LongUInt(v) => *v as f64,
        AMQPValue::ShortInt(v) => *v as f64,
        AMQPValue::ShortUInt(v) => *v as f64,
        _ => return None,
    })
}
