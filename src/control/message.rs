//! The control protocol, without I/O: Celery's pidbox requests in, replies
//! out. Pure functions over bytes, so the parser can be fuzzed; nothing here
//! panics on any input.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{Command, JobStatus};
use crate::engine::THREADS_LIMIT;

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

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    // Only an object with both names as strings; anything else means no reply.
    let reply_to = o
        .get("reply_to")
        .filter(|r| r.is_object())
        .and_then(|r| ReplyTo::deserialize(r).ok());
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

/// `n` of pool_grow/pool_shrink: absent or null means 1 (as Celery's
/// default); otherwise a whole number in 1..=`THREADS_LIMIT`, as a JSON
/// number or a string of digits. Anything else (negative, fraction, bool,
/// huge) is refused rather than guessed at.
pub fn count_arg(req: &Request) -> Result<usize, String> {
    let v = match req.arguments.get("n") {
        None | Some(Value::Null) => return Ok(1),
        Some(v) => v,
    };
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s)
            if !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.trim().parse::<u64>().ok()
        }
        _ => None,
    };
    match n {
        Some(n) if (1..=THREADS_LIMIT as u64).contains(&n) => Ok(n as usize),
        _ => Err(format!(
            "{}: n must be a whole number from 1 to {THREADS_LIMIT}, not {}",
            req.method,
            one_line_json(v)
        )),
    }
}

/// A value as it was sent, cut short: replies stay one short line.
fn one_line_json(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// pool_grow/pool_shrink: the count is checked, then clamped so the pool
/// stays within 1..=max_threads_per_rank (the reply says when it was). The
/// status may be up to a report interval old, so the engine clamps again.
fn pool(req: &Request, status: &JobStatus, grow: bool) -> (Option<Command>, Value) {
    let n = match count_arg(req) {
        Ok(n) => n,
        Err(e) => return (None, json!({ "error": e })),
    };
    let cap = match status.max_threads_per_rank {
        0 => THREADS_LIMIT,
        c => c,
    };
    let now = status.threads_per_rank;
    let (room, verb, limit) = if grow {
        let room = if now == 0 {
            cap
        } else {
            cap.saturating_sub(now)
        };
        (room, "grow", format!("max_threads_per_rank = {cap}"))
    } else {
        let room = if now == 0 { n } else { now.saturating_sub(1) };
        (
            room,
            "shrink",
            "at least 1 I/O thread per rank stays".to_string(),
        )
    };
    if room == 0 {
        return (
            None,
            json!({ "error": format!("pool cannot {verb}: it has {now} I/O threads per rank ({limit}); nothing changed") }),
        );
    }
    let k = n.min(room);
    let cmd = if grow {
        Command::PoolGrow(k)
    } else {
        Command::PoolShrink(k)
    };
    let mut msg = format!("pool will {verb} by {k} I/O threads per rank");
    if k < n {
        msg.push_str(&format!(" (asked for {n}; clamped: {limit})"));
    }
    (Some(cmd), json!({ "ok": msg }))
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
        "pool_grow" => pool(req, status, true),
        "pool_shrink" => pool(req, status, false),
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
    fn reply_to_is_an_object_of_two_strings_or_nothing() {
        let reply_to = |r: &str| {
            parse_request(format!(r#"{{"method":"ping","reply_to":{r}}}"#).as_bytes())
                .unwrap()
                .reply_to
        };
        assert_eq!(
            reply_to(r#"{"exchange":"x","routing_key":"k","extra":1}"#),
            Some(ReplyTo {
                exchange: "x".into(),
                routing_key: "k".into()
            })
        );
        for r in [
            r#"["x","k"]"#,
            r#"{"exchange":"x"}"#,
            r#"{"exchange":"x","routing_key":1}"#,
            r#""x""#,
            "null",
        ] {
            assert_eq!(reply_to(r), None, "{r}");
        }
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
    }

    fn pool_req(method: &str, n: Value) -> Request {
        parse_request(
            json!({"method": method, "arguments": {"n": n}})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    }

    fn at(threads: usize, cap: usize) -> JobStatus {
        JobStatus {
            threads_per_rank: threads,
            max_threads_per_rank: cap,
            ..Default::default()
        }
    }

    #[test]
    fn bad_counts_are_refused_and_change_nothing() {
        let huge: Value = serde_json::from_str("1000000000000000000000000000000").unwrap();
        for (method, n) in [
            ("pool_grow", json!(-5)),
            ("pool_grow", json!("abc")),
            ("pool_grow", json!(2.5)),
            ("pool_grow", json!(true)),
            ("pool_grow", huge),
            ("pool_grow", json!(1_000_000_000u64)),
            ("pool_grow", json!(0)),
            ("pool_grow", json!("-3")),
            ("pool_grow", json!("")),
            ("pool_grow", json!([2])),
            ("pool_shrink", json!(-7)),
            ("pool_shrink", json!(1025)),
        ] {
            let (cmd, reply) = decide(&pool_req(method, n.clone()), &at(4, 64), "x");
            assert_eq!(cmd, None, "{method} {n}");
            let e = reply["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {n}: {reply}"));
            assert!(e.contains("n must be a whole number from 1 to 1024"), "{e}");
        }
        let r = parse_request(br#"{"method":"pool_grow"}"#).unwrap();
        assert_eq!(count_arg(&r), Ok(1));
        assert_eq!(count_arg(&pool_req("pool_grow", json!(" 7 "))), Ok(7));
        assert_eq!(count_arg(&pool_req("pool_grow", json!(1024))), Ok(1024));
    }

    #[test]
    fn counts_are_clamped_to_the_cap_and_to_one_thread() {
        let (cmd, reply) = decide(&pool_req("pool_grow", json!(1000)), &at(4, 64), "x");
        assert_eq!(cmd, Some(Command::PoolGrow(60)));
        let ok = reply["ok"].as_str().unwrap();
        assert!(
            ok.contains("grow by 60")
                && ok.contains("asked for 1000")
                && ok.contains("max_threads_per_rank = 64"),
            "{ok}"
        );
        let (cmd, reply) = decide(&pool_req("pool_grow", json!(1)), &at(64, 64), "x");
        assert_eq!(cmd, None);
        assert!(
            reply["error"].as_str().unwrap().contains("cannot grow"),
            "{reply}"
        );
        let (cmd, reply) = decide(&pool_req("pool_shrink", json!(9)), &at(4, 64), "x");
        assert_eq!(cmd, Some(Command::PoolShrink(3)));
        assert!(
            reply["ok"].as_str().unwrap().contains("at least 1"),
            "{reply}"
        );
        let (cmd, _) = decide(&pool_req("pool_shrink", json!(1)), &at(1, 64), "x");
        assert_eq!(cmd, None);
        let (cmd, reply) = decide(&pool_req("pool_grow", json!(2)), &at(4, 64), "x");
        assert_eq!(cmd, Some(Command::PoolGrow(2)));
        assert_eq!(reply["ok"], "pool will grow by 2 I/O threads per rank");
    }
}
