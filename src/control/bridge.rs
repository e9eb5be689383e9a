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
    let mut bridge = Bridge {
        node: cfg.node(),
        alias: format!("lmpi@{job}"),
        cfg,
        job,
        status,
        tx,
        want_start,
        down_said: false,
    };
    rt.block_on(bridge.serve_forever());
}

/// Why a broker session ended.
#[derive(Debug, thiserror::Error)]
enum BridgeError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("connection closed")]
    Closed,
}

/// The bridge's state across broker sessions.
struct Bridge {
    cfg: ControlConfig,
    job: String,
    /// This host's pidbox node name, and the job's alias.
    node: String,
    alias: String,
    status: SharedStatus,
    tx: Sender<Command>,
    /// Still waiting for the old workflow's start task.
    want_start: bool,
    /// "Broker down" was said and "connected" not yet.
    down_said: bool,
}

/// One connected session: the channel and its consumers.
struct Session {
    ch: Channel,
    pidbox: lapin::Consumer,
    tasks: Option<lapin::Consumer>,
}

enum Ev {
    Pidbox(Option<lapin::Result<lapin::message::Delivery>>),
    Task(Option<lapin::Result<lapin::message::Delivery>>),
}

impl Bridge {
    /// Connect, serve, and after a loss reconnect in the background: a
    /// session that got in starts over after a short wait; only repeated
    /// failures to connect back off.
    async fn serve_forever(&mut self) {
        let shown = self.cfg.shown_url();
        let mut backoff = Duration::from_secs(1);
        loop {
            let r = match self.open().await {
                Ok(session) => {
                    backoff = Duration::from_secs(1);
                    self.serve(session).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                if !self.down_said {
                    eprintln!("lmpi: control: broker {shown}: {e}; the pass goes on, retrying in the background");
                    self.down_said = true;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Connect and declare: the pidbox queue of this job (one queue per
    /// job: two jobs on one host must not compete for messages) and, while
    /// waiting to start, a consumer of Celery's default queue.
    async fn open(&mut self) -> Result<Session, BridgeError> {
        let uri = self.cfg.broker_uri().map_err(BridgeError::Config)?;
        let conn = Connection::connect_uri(uri, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        declare_exchanges(&ch).await?;
        let queue = format!("{}.{}.celery.pidbox", self.node, self.job);
        let qopts = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        ch.queue_declare(queue.as_str().into(), qopts, FieldTable::default())
            .await?;
        let (bind, args) = (QueueBindOptions::default(), FieldTable::default());
        ch.queue_bind(queue.as_str().into(), PIDBOX.into(), "".into(), bind, args)
            .await?;
        let copts = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let tag = format!("lmpi-{}", self.job);
        let pidbox = ch
            .basic_consume(
                queue.as_str().into(),
                tag.into(),
                copts,
                FieldTable::default(),
            )
            .await?;
        let tasks = match self.want_start {
            true => Some(self.start_consumer(&ch).await?),
            false => None,
        };
        if self.down_said {
            eprintln!(
                "lmpi: control: connected to broker {}",
                self.cfg.shown_url()
            );
            self.down_said = false;
        }
        Ok(Session { ch, pidbox, tasks })
    }

    /// The old workflow started workers first and then sent `cmover.procDir`
    /// to Celery's default queue; listen there only while waiting for it.
    async fn start_consumer(&self, ch: &Channel) -> Result<lapin::Consumer, BridgeError> {
        let q = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("celery".into(), q, FieldTable::default())
            .await?;
        let tag = format!("lmpi-start-{}", self.job);
        let opts = BasicConsumeOptions::default();
        Ok(ch
            .basic_consume("celery".into(), tag.into(), opts, FieldTable::default())
            .await?)
    }

    async fn serve(&mut self, mut s: Session) -> Result<(), BridgeError> {
        loop {
            let ev = match s.tasks.as_mut() {
                Some(t) => {
                    let pidbox = async { Ev::Pidbox(s.pidbox.next().await) };
                    futures_lite::future::or(pidbox, async { Ev::Task(t.next().await) }).await
                }
                None => Ev::Pidbox(s.pidbox.next().await),
            };
            match ev {
                Ev::Pidbox(None) | Ev::Task(None) => return Err(BridgeError::Closed),
                Ev::Pidbox(Some(Err(e))) | Ev::Task(Some(Err(e))) => return Err(e.into()),
                Ev::Task(Some(Ok(d))) => {
                    if self.on_task(d).await {
                        s.tasks = None;
                    }
                }
                Ev::Pidbox(Some(Ok(d))) => self.on_pidbox(&s.ch, d).await?,
            }
        }
    }

    /// A task on Celery's queue: true if it was the start task (taken).
    async fn on_task(&mut self, d: lapin::message::Delivery) -> bool {
        let task = header_str(&d.properties, "task");
        if is_start_task(task.as_deref(), &d.data) {
            let _ = d.acker.ack(BasicAckOptions::default()).await;
            let _ = self.tx.send(Command::Start);
            self.want_start = false;
            return true;
        }
        // Not ours: leave it for whoever else consumes Celery's queue.
        let requeue = lapin::options::BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        let _ = d.acker.nack(requeue).await;
        false
    }

    /// A pidbox request: act on it if it is addressed to us, and reply.
    async fn on_pidbox(
        &mut self,
        ch: &Channel,
        d: lapin::message::Delivery,
    ) -> Result<(), BridgeError> {
        if header_f64(&d.properties, "expires").is_some_and(|exp| exp > 0.0 && now() > exp) {
            return Ok(()); // kombu drops expired requests too
        }
        let req = match parse_request(&d.data) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("lmpi: control: ignored a malformed control message: {e}");
                return Ok(());
            }
        };
        if !addressed_to(&req, &[self.node.as_str(), self.alias.as_str()]) {
            return Ok(());
        }
        let snapshot = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        let (cmd, reply) = decide(&req, &snapshot, &self.node);
        if let Some(c) = cmd {
            if c == Command::Start {
                self.want_start = false;
            }
            let _ = self.tx.send(c);
        }
        if let (Some(rt), Some(ticket)) = (&req.reply_to, &req.ticket) {
            let body = serde_json::json!({ self.node.as_str(): reply });
            publish_reply(ch, &rt.exchange, &rt.routing_key, ticket, &body).await?;
        }
        Ok(())
    }
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
