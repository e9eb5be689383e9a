//! Services can never hold a pass hostage: a memcached that trickles one
//! byte every 300 ms (never a whole line), one that accepts and never
//! answers, and one that answers garbage. The copy ends within seconds of
//! its work, says once that stats were not delivered, and keeps its exit
//! status; SIGTERM during the hang stops it in bounded time.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[derive(Clone, Copy, Debug)]
enum Peer {
    Trickle,
    Silent,
    Garbage,
}

/// A local server behaving as `peer` on every connection, for the test's life.
fn serve(peer: Peer) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || talk(peer, conn));
        }
    });
    port
}

fn talk(peer: Peer, mut c: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = c.set_read_timeout(Some(Duration::from_millis(50)));
    loop {
        let _ = c.read(&mut buf);
        let out: &[u8] = match peer {
            Peer::Trickle => b"V",
            Peer::Silent => b"",
            Peer::Garbage => b"\xff\x00garbage\r\nNOT A REPLY\r\n",
        };
        if !out.is_empty() && c.write_all(out).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    let cfg = dir.join("c.toml");
    let text = format!(
        "report_interval = 1\nstop_grace_seconds = 3\n[stats]\nenabled = true\nmemcached = \"127.0.0.1:{port}\"\ntimeout_ms = 300\n"
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[test]
fn a_slow_silent_or_garbled_memcached_never_holds_the_pass() {
    for peer in [Peer::Trickle, Peer::Silent, Peer::Garbage] {
        let (t, src, dst) = src_and_dst();
        for i in 0..200 {
            std::fs::write(src.join(format!("f{i}")), b"x").unwrap();
        }
        let cfg = config(t.path(), serve(peer));
        let t0 = Instant::now();
        let (code, r, o) = pass(
            Launch::Alone,
            "copy",
            &src,
            &dst,
            &["--config", cfg.to_str().unwrap()],
        );
        let took = t0.elapsed();
        assert_eq!(code, 0, "{peer:?}: {}", text(&o));
        assert!(took < Duration::from_secs(15), "{peer:?}: {took:?}");
        assert_eq!(total(&r, "files"), 200);
        let notes = r["notes"].to_string();
        assert!(
            notes.contains("stats could not be delivered"),
            "{peer:?}: {r}"
        );
    }
}

#[test]
fn sigterm_during_a_hung_stats_exchange_stops_in_bounded_time() {
    let (t, src, dst) = src_and_dst();
    for i in 0..20_000 {
        std::fs::write(src.join(format!("f{i}")), b"x").unwrap();
    }
    let cfg = config(t.path(), serve(Peer::Trickle));
    let mut child = Command::new(bin())
        .args(["--pass", "copy", "-q", "--threads", "1", "--config"])
        .arg(&cfg)
        .arg("--source")
        .arg(&src)
        .arg("--target")
        .arg(&dst)
        .arg("--error-log")
        .arg(t.path().join("errors"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("still running 30 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Stopped before the copy finished, or finished first: never a hang.
    assert!(matches!(status.code(), Some(0) | Some(4)), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

/// The control bridge's broker trickles, never answers, or answers garbage:
/// the bridge lives on its own thread and the pass never waits for it.
#[test]
fn a_hostile_broker_never_holds_the_pass() {
    for peer in [Peer::Trickle, Peer::Silent, Peer::Garbage] {
        let (t, src, dst) = src_and_dst();
        for i in 0..50 {
            std::fs::write(src.join(format!("f{i}")), b"x").unwrap();
        }
        let cfg = t.path().join("c.toml");
        let port = serve(peer);
        std::fs::write(
            &cfg,
            format!("[control]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\n"),
        )
        .unwrap();
        let t0 = Instant::now();
        let (code, r, o) = pass(
            Launch::Alone,
            "copy",
            &src,
            &dst,
            &["--config", cfg.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{peer:?}: {}", text(&o));
        assert_eq!(total(&r, "files"), 50);
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{peer:?}: {:?}",
            t0.elapsed()
        );
    }
}

/// `lmpi stats graphite` against a trickling or silent memcached ends
/// within its deadline with one line and status 1.
#[test]
fn stats_graphite_against_a_hostile_memcached_ends_in_bounded_time() {
    for peer in [Peer::Trickle, Peer::Silent, Peer::Garbage] {
        let t = tempfile::tempdir().unwrap();
        let cfg = config(t.path(), serve(peer));
        let t0 = Instant::now();
        let o = Command::new(bin())
            .args(["stats", "graphite", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{peer:?}: {}", text(&o));
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{peer:?}: {:?}",
            t0.elapsed()
        );
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).lines().count(),
            1,
            "{}",
            text(&o)
        );
    }
}
