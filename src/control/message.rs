//! The control protocol, without I/O: Celery's pidbox requests in, replies
//! out. Pure functions over bytes, so the parser can be fuzzed; nothing here
//! panics on any input.

use serde_json::{json, Map, Value};

use super::{Command, JobStatus};

/// A pidbox request as kombu's `Mailbox._broadcast` sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub arguments: Map<String, Value>,
    pub destination: Option<Vec<String>>,
    pub pattern: Option<String>,
    pub matcher: Option<String>,
    pub ticket: Option<String>,
    pub reply_to: Option<ReplyTo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub exchange: String,
    pub routing_key: String,
}

/// Parse a JSON pidbox body; a one-line reason for anything else.
pub fn parse_request(body: &[u8]) -> Result<Request, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let o = v.as_object().ok_or("not a JSON object")?;
    let method = o
        .get("method")
        .and_then(Value::as_str)
        .ok_or("no method")?
        .to_string();
    let arguments = match o.get("arguments") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Null) | None => Map::new(),
        Some(_) => return Err("arguments is not an object".into()),
    };
    let destination = match o.get("destination") {
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        ),
        Some(Value::String(s)) => Some(vec![s.clone()]),
        _ => None,
    };
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(String::from);
    let reply_to = o.get("reply_to").and_then(Value::as_object).and_then(|r| {
        Some(ReplyTo {
            exchange: r.get("exchange")?.as_str()?.to_string(),
            routing_key: r.get("routing_key")?.as_str()?.to_string(),
        })
    });
    Ok(Request {
        method,
        arguments,
        destination,
        pattern: s("pattern"),
        matcher: s("matcher"),
        ticket: s("ticket"),
        reply_to,
    })
}

/// Is this request for us? As kombu's `Node.handle_message`: an explicit
/// destination list, else a pattern, else everyone. `names` are this node's
/// names (the Celery node name and `lmpi@<job>`).
pub fn addressed_to(req: &Request, names: &[&str]) -> bool {
    if let Some(d) = &req.destination {
        if !d.is_empty() {
            return d.iter().any(|x| names.contains(&x.as_str()));
        }
    }
    if let (Some(p), Some(m)) = (&req.pattern, &req.matcher) {
        return names.iter().any(|n| match m.as_str() {
            "glob" => glob(p, n),
            // No regex engine here: a pcre pattern matches as a literal or substring.
            _ => n.contains(p.as_str()),
        });
    }
    true
}

fn glob(p: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    p.len() <= 256 && go(p.as_bytes(), s.as_bytes())
}

fn count_arg(req: &Request) -> usize {
    match req.arguments.get("n") {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(1) as usize,
        Some(Value::String(s)) => s.trim().parse().unwrap_or(1),
        _ => 1,
    }
    .min(1024)
}

/// What to do and what to answer. The reply is the value kombu puts under our
/// node name: `{"ok": ...}`, `{"error": ...}`, or a method's data.
pub fn decide(req: &Request, status: &JobStatus, node: &str) -> (Option<Command>, Value) {
    match req.method.as_str() {
        "ping" => (None, json!({"ok": "pong"})),
        "shutdown" => (
            Some(Command::Stop),
            json!({"ok": format!("shutting down: graceful stop of lmpi job {}", status.job)}),
        ),
        "pool_grow" => {
            let n = count_arg(req);
            (
                Some(Command::PoolGrow(n)),
                json!({"ok": format!("pool will grow by {n} I/O threads per rank")}),
            )
        }
        "pool_shrink" => {
            let n = count_arg(req);
            (
                Some(Command::PoolShrink(n)),
                json!({"ok": format!("pool will shrink by {n} I/O threads per rank")}),
            )
        }
        "lmpi_start" => (
            Some(Command::Start),
            json!({"ok": format!("starting lmpi job {}", status.job)}),
        ),
        "lmpi_status" => (None, serde_json::to_value(status).unwrap_or(Value::Null)),
        "active" => (None, active(status, node)),
        "stats" => (
            None,
            json!({
                "total": status.totals,
                "pool": {"max-concurrency": status.threads_per_rank, "processes": status.ranks},
                "lmpi": {"job": status.job, "pass": status.pass, "state": status.state},
            }),
        ),
        other => (
            None,
            json!({"error": format!("No such control command: {other}")}),
        ),
    }
}

/// `inspect active`: the items in flight, shaped like Celery's task requests.
fn active(status: &JobStatus, node: &str) -> Value {
    let mut out = Vec::new();
    for r in &status.per_rank {
        for (i, item) in r.active.iter().enumerate() {
            out.push(json!({
                "id": format!("{}-{}-{}", status.job, r.rank, i),
                "name": format!("lmpi.{}", status.pass),
                "type": format!("lmpi.{}", status.pass),
                "args": [item],
                "kwargs": {"rank": r.rank},
                "hostname": node,
                "time_start": null,
                "acknowledged": true,
                "delivery_info": {"exchange": "", "routing_key": "lmpi", "priority": 0, "redelivered": false},
                "worker_pid": std::process::id(),
            }));
        }
    }
    Value::Array(out)
}

/// The old `cmover_control.py start`: a Celery task message for `cmover.procDir`
/// (protocol 2 names the task in the `task` header, protocol 1 in the body).
pub fn is_start_task(header_task: Option<&str>, body: &[u8]) -> bool {
    if header_task == Some("cmover.procDir") {
        return true;
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("task")
                .and_then(Value::as_str)
                .map(|t| t == "cmover.procDir")
        })
        .unwrap_or(false)
}

/// A random UUID (v4 layout) for tickets and reply routing keys.
pub fn uuid() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURED_POOL_GROW: &str = r#"{"method": "pool_grow", "arguments": {"n": 2}, "destination": null, "pattern": null, "matcher": null, "ticket": "295800f8-0864-4753-aaa2-66c1a685d211", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "8e674da1-62c3-3baa-87a7-a45247b65803"}}"#;

    #[test]
    fn captured_celery_messages_parse() {
        let r = parse_request(CAPTURED_POOL_GROW.as_bytes()).unwrap();
        assert_eq!(r.method, "pool_grow");
        assert_eq!(r.reply_to.as_ref().unwrap().exchange, "reply.celery.pidbox");
        let (cmd, reply) = decide(&r, &JobStatus::default(), "celery@file_x");
        assert_eq!(cmd, Some(Command::PoolGrow(2)));
        assert!(reply["ok"].is_string());
        let s = parse_request(br#"{"method": "shutdown", "arguments": {}, "destination": null, "pattern": null, "matcher": null}"#).unwrap();
        assert_eq!(
            decide(&s, &JobStatus::default(), "n").0,
            Some(Command::Stop)
        );
        assert!(s.reply_to.is_none());
    }

    #[test]
    fn destinations() {
        let mut r = parse_request(br#"{"method":"ping","destination":["celery@file_a"]}"#).unwrap();
        assert!(addressed_to(&r, &["celery@file_a", "lmpi@7"]));
        assert!(!addressed_to(&r, &["celery@file_b", "lmpi@8"]));
        r.destination = None;
        r.pattern = Some("celery@file_*".into());
        r.matcher = Some("glob".into());
        assert!(addressed_to(&r, &["celery@file_zz"]));
        assert!(!addressed_to(&r, &["other@x"]));
    }

    #[test]
    fn unknown_and_bad_input() {
        let r = parse_request(br#"{"method":"rate_limit"}"#).unwrap();
        assert!(decide(&r, &JobStatus::default(), "n").1["error"].is_string());
        for bad in [
            &b""[..],
            b"null",
            b"[]",
            b"{}",
            b"{\"method\":1}",
            b"{\"method\":\"x\",\"arguments\":[]}",
            b"\xff",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
        assert!(is_start_task(Some("cmover.procDir"), b""));
        assert!(is_start_task(
            None,
            br#"{"task":"cmover.procDir","args":[]}"#
        ));
        assert!(!is_start_task(Some("other"), b"[]"));
        assert_eq!(uuid().len(), 36);
    }
}
