//! The control bridge against a real RabbitMQ (scripts/services-up.sh) and the
//! real celery CLI (scripts/setup-deps.sh puts it in /opt/lmpi-venv), with jobs
//! running under mpirun. In CI a missing broker or CLI fails these tests.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const VENV: &str = "/opt/lmpi-venv";

fn broker_up() -> bool {
    let ok = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], 5672).into(),
        Duration::from_millis(500),
    )
    .is_ok();
    if !ok {
        assert!(
            !in_ci(),
            "RabbitMQ on localhost:5672 is required in CI (scripts/services-up.sh)"
        );
        eprintln!("skipped: no RabbitMQ on localhost:5672");
    }
    ok
}

fn celery_cli() -> Option<PathBuf> {
    let p = PathBuf::from(VENV).join("bin/celery");
    if p.exists() {
        return Some(p);
    }
    assert!(
        !in_ci(),
        "the celery CLI is required in CI (scripts/setup-deps.sh)"
    );
    eprintln!("skipped: no celery CLI in {VENV}");
    None
}

fn password() -> String {
    std::env::var("LMPI_AMQP_PASSWORD").unwrap_or_else(|_| "data_move_test".into())
}

struct Job {
    id: String,
    child: Child,
    dir: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
    cfg: PathBuf,
}

impl Job {
    /// A copy under mpirun whose small files answer slowly (LD_PRELOAD shim),
    /// so it is still running while the test talks to it.
    fn start(ranks: usize, extra: &[&str], node_name: &str, files_per_dir: usize) -> Job {
        Job::start_via(ranks, extra, node_name, files_per_dir, None)
    }

    /// As `start`, but the job reaches the broker on `port` (a proxy the test
    /// can cut); `lmpi ctl` still talks to the broker directly.
    fn start_via(
        ranks: usize,
        extra: &[&str],
        node_name: &str,
        files_per_dir: usize,
        port: Option<u16>,
    ) -> Job {
        let dir = tempfile::tempdir().unwrap();
        // Tests run side by side on one broker: each job gets its own id.
        let id = format!("t{}-{}", std::process::id(), node_name.replace('@', "-"));
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        for d in 0..8 {
            let p = src.join(format!("d{d}"));
            std::fs::create_dir_all(&p).unwrap();
            for f in 0..files_per_dir {
                std::fs::write(p.join(format!("slowfile{f}")), format!("{d}/{f}")).unwrap();
            }
        }
        std::fs::create_dir_all(&dst).unwrap();
        let cfg = dir.path().join("lmpi.toml");
        std::fs::write(
            &cfg,
            format!(
                "report_interval = 1\n[control]\nenabled = true\npassword = \"{}\"\nnode_name = \"{node_name}\"\ntimeout_ms = 2500\n",
                password()
            ),
        )
        .unwrap();
        let run_cfg = match port {
            None => cfg.clone(),
            Some(port) => {
                let p = dir.path().join("lmpi-via-proxy.toml");
                let text = std::fs::read_to_string(&cfg).unwrap();
                std::fs::write(&p, format!("{text}host = \"127.0.0.1\"\nport = {port}\n")).unwrap();
                p
            }
        };
        let child = Command::new("mpirun")
            .args([
                "--oversubscribe",
                "--bind-to",
                "none",
                "-np",
                &ranks.to_string(),
            ])
            .arg(bin())
            .args(["--pass", "copy", "--threads", "2", "--error-log"])
            .arg(dir.path().join("errors.log"))
            .arg("--source")
            .arg(&src)
            .arg("--target")
            .arg(&dst)
            .arg("--config")
            .arg(&run_cfg)
            .args(extra)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_pml", "ob1")
            .env("LMPI_JOB_ID", &id)
            .env("LD_PRELOAD", shim())
            .env("LMPI_FAULT_SLOW", "slowfile")
            .env("LMPI_FAULT_SLOW_US", "4000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mpirun");
        Job {
            id,
            child,
            dir,
            src,
            dst,
            cfg,
        }
    }

    /// `lmpi ctl` for this job only (unless the args name another --job).
    fn ctl(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin());
        c.arg("ctl").args(args).arg("--config").arg(&self.cfg);
        if !args.contains(&"--job") {
            c.args(["--job", &self.id]);
        }
        c.output().expect("lmpi ctl")
    }

    /// Wait for the job to end; (exit code, stdout + stderr).
    fn wait(mut self, limit: Duration) -> (Option<i32>, String, Job2) {
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                panic!("job did not end within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        let _ = self.child.stdout.take().unwrap().read_to_string(&mut out);
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut out);
        (
            status.code(),
            out,
            Job2 {
                _dir: self.dir,
                src: self.src,
                dst: self.dst,
            },
        )
    }
}

struct Job2 {
    _dir: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
}

impl Job2 {
    fn converges(&self) {
        let (code, _, o) = pass(Launch::Mpirun(2), "copy", &self.src, &self.dst, &[]);
        assert_eq!(code, 0, "{}", text(&o));
        let (code, _, o) = pass(Launch::Mpirun(2), "dirtime", &self.src, &self.dst, &[]);
        assert_eq!(code, 0, "{}", text(&o));
        let diffs = compare_trees(&self.src, &self.dst, true);
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Retry a ctl call until the job's bridge is connected and answers.
fn until_answer(job: &Job, args: &[&str], needle: &str) -> String {
    let t0 = Instant::now();
    loop {
        let o = job.ctl(args);
        let s = stdout(&o);
        if s.contains(needle) {
            return s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no {needle:?} in reply to {args:?}: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn unique_node(tag: &str) -> String {
    format!("celery@file_{tag}{}", std::process::id())
}

#[test]
fn broker_lost_mid_run_the_pass_goes_on_and_the_bridge_comes_back() {
    if !broker_up() || !have("mpirun") {
        return;
    }
    let proxy = Proxy::start(5672);
    let node = unique_node("blip");
    let job = Job::start_via(2, &[], &node, 2000, Some(proxy.port));
    until_answer(&job, &["ping"], &format!("{node}: OK pong"));
    proxy.cut();
    // While it is cut, nobody hears the job...
    std::thread::sleep(Duration::from_millis(500));
    let o = job.ctl(&["ping", "--timeout", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let before = stdout(&job.ctl(&["status", "--timeout", "1"]));
    assert!(before.is_empty(), "{before}");
    std::thread::sleep(Duration::from_secs(2));
    proxy.reopen();
    // ...and once it is back, the bridge reconnects by itself and obeys.
    until_answer(&job, &["ping"], &format!("{node}: OK pong"));
    let s = stdout(&job.ctl(&["stop"]));
    assert!(s.contains("shutting down"), "{s}");
    let (code, out, rest) = job.wait(Duration::from_secs(120));
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("STOPPED"), "{out}");
    assert_eq!(
        out.matches("lmpi: control: broker").count(),
        1,
        "said once: {out}"
    );
    assert_eq!(
        out.matches("lmpi: control: connected to broker").count(),
        1,
        "{out}"
    );
    rest.converges();
}

#[test]
fn lmpi_ctl_against_a_running_job() {
    if !broker_up() || !have("mpirun") {
        return;
    }
    let node = unique_node("ctl");
    let job = Job::start(2, &[], &node, 2000);
    until_answer(&job, &["ping"], &format!("{node}: OK pong"));
    // status: counters and what each rank works on (refreshed every second).
    let t0 = Instant::now();
    let status = loop {
        let s = stdout(&job.ctl(&["status"]));
        if s.contains("rank 1:") && s.contains("entries in") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "status never showed work in flight: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.contains("pass copy state running (2 ranks x 2 threads)"),
        "{status}"
    );
    let jobid = job.id.clone();
    assert!(status.contains(&format!("job {jobid} ")), "{status}");
    let g = stdout(&job.ctl(&["pool-grow", "3"]));
    assert!(g.contains("pool will grow by 3"), "{g}");
    let t1 = Instant::now();
    loop {
        let s = stdout(&job.ctl(&["status"]));
        if s.contains("(2 ranks x 5 threads)") {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(20),
            "pool never grew: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = stdout(&job.ctl(&["pool-shrink", "4"]));
    assert!(s.contains("pool will shrink"), "{s}");
    // --job: only that job answers.
    let other = job.ctl(&["ping", "--job", "no-such-job", "--timeout", "1"]);
    assert_eq!(other.status.code(), Some(1), "{}", text(&other));
    let mine = job.ctl(&["ping", "--job", &jobid]);
    assert!(stdout(&mine).contains("OK pong"), "{}", text(&mine));
    // stop = the graceful stop of scancel.
    let s = stdout(&job.ctl(&["stop"]));
    assert!(s.contains("shutting down"), "{s}");
    let (code, out, rest) = job.wait(Duration::from_secs(120));
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("STOPPED"), "{out}");
    rest.converges();
}

fn celery(cli: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(cli)
        .arg("-A")
        .arg("cmover_control")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("celery CLI")
}

fn write_app(dir: &Path) {
    std::fs::write(
        dir.join("cmover_control.py"),
        format!(
            "from celery import Celery\napp = Celery('cmover_control', broker='amqp://data_move:{}@localhost/data_move')\n",
            password()
        ),
    )
    .unwrap();
}

#[test]
fn old_celery_commands_still_work() {
    if !broker_up() || !have("mpirun") {
        return;
    }
    let Some(cli) = celery_cli() else { return };
    let node = unique_node("cel");
    let job = Job::start(2, &[], &node, 2000);
    let app = job.dir.path().to_path_buf();
    write_app(&app);
    until_answer(&job, &["ping"], "OK pong");
    let d = ["-d", node.as_str()];
    let o = celery(&cli, &app, &[&["inspect", "ping"][..], &d].concat());
    assert!(
        stdout(&o).contains(&format!("{node}: OK")) && stdout(&o).contains("pong"),
        "{}",
        text(&o)
    );
    let t0 = Instant::now();
    loop {
        let o = celery(&cli, &app, &[&["inspect", "active"][..], &d].concat());
        let s = stdout(&o);
        if s.contains("lmpi.copy") && s.contains("entries in") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "inspect active never showed items: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let o = celery(&cli, &app, &[&["inspect", "stats"][..], &d].concat());
    assert!(
        stdout(&o).contains("max-concurrency") && stdout(&o).contains("\"pass\": \"copy\""),
        "{}",
        text(&o)
    );
    let o = celery(
        &cli,
        &app,
        &[&["control", "pool_grow", "2"][..], &d].concat(),
    );
    assert!(stdout(&o).contains("pool will grow by 2"), "{}", text(&o));
    let o = celery(
        &cli,
        &app,
        &[&["control", "pool_shrink", "1"][..], &d].concat(),
    );
    assert!(stdout(&o).contains("pool will shrink by 1"), "{}", text(&o));
    // Addressed to another node: ours stays silent.
    let o = celery(
        &cli,
        &app,
        &[
            "inspect",
            "ping",
            "-d",
            "celery@file_somebody_else",
            "--timeout",
            "1",
        ],
    );
    assert!(!stdout(&o).contains(&node), "{}", text(&o));
    // The old cmover_control.py stop: app.control.broadcast('shutdown').
    let py = PathBuf::from(VENV).join("bin/python");
    let o = Command::new(py)
        .arg("-c")
        .arg(format!("import cmover_control as m; m.app.control.broadcast('shutdown', destination=['{node}'])"))
        .current_dir(&app)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (code, out, rest) = job.wait(Duration::from_secs(120));
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("STOPPED"), "{out}");
    rest.converges();
}

#[test]
fn start_gate_opens_with_the_old_start_task_or_lmpi_ctl_start() {
    if !broker_up() || !have("mpirun") {
        return;
    }
    let Some(_cli) = celery_cli() else { return };
    for how in ["celery-task", "ctl"] {
        let node = unique_node(how.split('-').next().unwrap_or("x"));
        let job = Job::start(2, &["--wait-for-start"], &node, 20);
        write_app(job.dir.path());
        let s = until_answer(&job, &["status"], "state waiting");
        assert!(
            s.contains("files 0"),
            "nothing may be copied before start: {s}"
        );
        // Only the job's lock (`.lmpi.lock`) may be there before the start.
        let before: Vec<_> = std::fs::read_dir(&job.dst)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != ".lmpi.lock")
            .collect();
        assert!(before.is_empty(), "{before:?}");
        if how == "ctl" {
            assert!(stdout(&job.ctl(&["start"])).contains("starting lmpi job"));
        } else {
            // What the old cmover_control.py start did: queue a cmover.procDir task.
            let py = PathBuf::from(VENV).join("bin/python");
            let o = Command::new(py)
                .arg("-c")
                .arg("import cmover_control as m; m.app.send_task('cmover.procDir', args=['/'])")
                .current_dir(job.dir.path())
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", text(&o));
        }
        let (code, out, rest) = job.wait(Duration::from_secs(180));
        assert_eq!(code, Some(0), "{how}: {out}");
        assert!(out.contains("COMPLETE"), "{out}");
        rest.converges();
    }
}

#[test]
fn unreachable_broker_never_stops_the_pass() {
    let (tmp, src, dst) = src_and_dst();
    for f in 0..20 {
        std::fs::write(src.join(format!("f{f}")), b"x").unwrap();
    }
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[control]\nenabled = true\nurl = \"amqp://u:p@127.0.0.1:1/v\"\n",
    )
    .unwrap();
    let (code, rep, out) = pass(
        Launch::Alone,
        "copy",
        &src,
        &dst,
        &["--config", cfg.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(total(&rep, "files"), 20);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("control: broker").count(),
        1,
        "said once: {err}"
    );
    // `lmpi ctl` itself reports an unreachable broker in one line.
    let o = Command::new(bin())
        .args(["ctl", "ping", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr)
            .trim_end()
            .lines()
            .count(),
        1,
        "{}",
        text(&o)
    );
}

/// pool_grow/pool_shrink with a bad `n` (over the bridge, as any client could
/// send it, and through the real celery CLI) answer an error and change
/// nothing; a grow past max_threads_per_rank is clamped and says so.
#[test]
fn bad_pool_counts_are_refused_and_grow_is_capped() {
    if !broker_up() || !have("mpirun") {
        return;
    }
    let node = unique_node("cap");
    // Held at the start gate: the job lives until it is stopped, however
    // slow this host is, and control commands still apply.
    let job = Job::start(2, &["--wait-for-start"], &node, 20);
    until_answer(&job, &["status"], "(2 ranks x 2 threads)");
    let cfg = lmpi::config::Config::load(&job.cfg).unwrap();
    let ask = |method: &str, n: serde_json::Value| {
        let r = lmpi::control::client::request(
            &cfg.control,
            method,
            serde_json::json!({ "n": n }),
            Some(vec![node.clone()]),
            Duration::from_secs(3),
        )
        .unwrap();
        assert_eq!(r.len(), 1, "{method} {n}: {r:?}");
        r[0][node.as_str()].clone()
    };
    let huge: serde_json::Value = serde_json::from_str("1000000000000000000000000000000").unwrap();
    for (method, n) in [
        ("pool_grow", serde_json::json!(-5)),
        ("pool_grow", serde_json::json!("abc")),
        ("pool_grow", serde_json::json!(2.5)),
        ("pool_grow", serde_json::json!(true)),
        ("pool_grow", huge),
        ("pool_grow", serde_json::json!(1_000_000_000u64)),
        ("pool_shrink", serde_json::json!(-7)),
    ] {
        let reply = ask(method, n.clone());
        let e = reply["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("n must be a whole number from 1 to 1024"),
            "{method} {n}: {reply}"
        );
    }
    if let Some(cli) = celery_cli() {
        write_app(job.dir.path());
        let o = celery(
            &cli,
            job.dir.path(),
            &["control", "pool_grow", "1000000000", "-d", node.as_str()],
        );
        assert!(
            stdout(&o).contains("n must be a whole number"),
            "{}",
            text(&o)
        );
    }
    // Two report intervals later the pool is as it was.
    std::thread::sleep(Duration::from_millis(2500));
    let s = stdout(&job.ctl(&["status"]));
    assert!(s.contains("(2 ranks x 2 threads)"), "changed: {s}");
    let cap = lmpi::config::default_max_threads();
    let g = stdout(&job.ctl(&["pool-grow", "1000"]));
    assert!(
        g.contains(&format!("grow by {}", cap - 2))
            && g.contains("asked for 1000")
            && g.contains(&format!("max_threads_per_rank = {cap}")),
        "{g}"
    );
    until_answer(&job, &["status"], &format!("(2 ranks x {cap} threads)"));
    let _ = job.ctl(&["stop"]);
    let (_, out, _) = job.wait(Duration::from_secs(120));
    assert!(out.contains("STOPPED") || out.contains("COMPLETE"), "{out}");
    assert!(out.contains(&format!("(2 ranks x {cap} threads)")), "{out}");
}

mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn control_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(r) = lmpi::control::message::parse_request(&bytes) {
                let _ = lmpi::control::message::decide(&r, &Default::default(), "n");
                let _ = lmpi::control::message::addressed_to(&r, &["n"]);
            }
        }

        #[test]
        fn jsonish_control_messages_never_panic(
            method in "(ping|shutdown|pool_grow|pool_shrink|active|stats|lmpi_status|lmpi_start|[a-z]{0,8})",
            n in "(-?[0-9]{0,20}|\"[^\"]{0,5}\"|null|\\[\\]|\\{\\})",
            dest in "(null|\\[\\]|\\[\"[^\"]{0,10}\"\\]|\"x\"|7)",
            pat in "(null|\"[*?a-z@_]{0,12}\")",
        ) {
            let body = format!(r#"{{"method":"{method}","arguments":{{"n":{n}}},"destination":{dest},"pattern":{pat},"matcher":"glob"}}"#);
            if let Ok(r) = lmpi::control::message::parse_request(body.as_bytes()) {
                let _ = lmpi::control::message::decide(&r, &Default::default(), "celery@file_x");
                let _ = lmpi::control::message::addressed_to(&r, &["celery@file_x", "lmpi@1"]);
            }
        }
    }
}
