//! `lmpi track` on Lustre: the changelog backend, through the liblustreapi
//! test double (tests/lustre_double/), which serves a changelog the test
//! writes (one text line per record), maps FIDs to paths of a real temp
//! tree for llapi_fid2path, and records what llapi_changelog_clear cleared.
//! lmpi loads it as the real library, through $LMPI_LUSTREAPI.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MDT: &str = "fs-MDT0000";
const USER: &str = "cl1";
const ROOT_FID: &str = "[0x200000007:0x1:0x0]";
/// The tracker must be watching 2 s (the clock skew allowed) before the pass.
const SKEW: Duration = Duration::from_millis(2100);

fn fid(n: u32) -> String {
    format!("[0x200000401:{n:#x}:0x0]")
}

/// The FID as the journal writes it (seq, oid, ver in hex).
fn hex(fid: &str) -> String {
    let f: Vec<u64> = fid
        .trim_matches(|c| c == '[' || c == ']')
        .split(':')
        .map(|x| u64::from_str_radix(x.trim_start_matches("0x"), 16).unwrap())
        .collect();
    format!("{:016x}{:08x}{:08x}", f[0], f[1], f[2])
}

struct Stage {
    _t: tempfile::TempDir,
    lib: PathBuf,
    src: PathBuf,
    dst: PathBuf,
    cl: PathBuf,
    journal: PathBuf,
    config: PathBuf,
    /// FID -> path relative to src ("/" for the root): the double's map.
    fids: BTreeMap<String, String>,
    next_fid: u32,
    next_index: u64,
}

fn stage() -> Option<Stage> {
    if !have("cc") || !is_root() {
        assert!(!in_ci(), "the Lustre double needs cc and root in CI");
        return None;
    }
    let (t, src, dst) = src_and_dst();
    let cl = t.path().join("changelog");
    std::fs::create_dir(&cl).unwrap();
    std::fs::write(cl.join(format!("{MDT}.users")), format!("{USER}\n")).unwrap();
    std::fs::write(cl.join(format!("{MDT}.log")), "").unwrap();
    let config = t.path().join("lmpi.toml");
    std::fs::write(
        &config,
        format!("[lustre]\nchangelog_user = \"{USER}\"\nchangelog_mdts = [\"{MDT}\"]\n"),
    )
    .unwrap();
    let mut st = Stage {
        journal: t.path().join("journal"),
        lib: build_lustre_double(),
        _t: t,
        src,
        dst,
        cl,
        config,
        fids: BTreeMap::new(),
        next_fid: 0x10,
        next_index: 1,
    };
    st.fids.insert(ROOT_FID.into(), "/".into());
    st.write_map();
    Some(st)
}

impl Stage {
    fn env(&self, cmd: &mut Command) {
        let roots = format!(
            "{}:{}",
            self.src.canonicalize().unwrap().display(),
            self.dst.canonicalize().unwrap().display()
        );
        cmd.env("LMPI_LUSTREAPI", &self.lib)
            .env("LUSTRE_DOUBLE_ROOTS", roots)
            .env("LUSTRE_DOUBLE_CHANGELOG", &self.cl)
            .env("LUSTRE_DOUBLE_FIDS", self.cl.join("fids"));
    }

    fn write_map(&self) {
        let map: String = self
            .fids
            .iter()
            .map(|(f, p)| format!("{f} {p}\n"))
            .collect();
        std::fs::write(self.cl.join("fids"), map).unwrap();
    }

    fn fid_of(&self, rel: &str) -> String {
        let want = if rel.is_empty() { "/" } else { rel };
        let found = self.fids.iter().find(|(_, p)| p.as_str() == want);
        found
            .map(|(f, _)| f.clone())
            .unwrap_or_else(|| panic!("no FID for {rel:?}"))
    }

    /// A new FID for `rel` (an entry just made).
    fn assign(&mut self, rel: &str) -> String {
        let f = fid(self.next_fid);
        self.next_fid += 1;
        self.fids.insert(f.clone(), rel.into());
        f
    }

    /// Append one record line ("TYPE tfid pfid name [sfid spfid sname]").
    fn record(&mut self, rest: &str) -> u64 {
        let i = self.next_index;
        self.next_index += 1;
        self.raw_record(i, rest);
        i
    }

    fn raw_record(&self, index: u64, rest: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.cl.join(format!("{MDT}.log")))
            .unwrap();
        writeln!(f, "{index} {rest}").unwrap();
    }

    fn cleared(&self) -> u64 {
        let text =
            std::fs::read_to_string(self.cl.join(format!("{MDT}.cleared"))).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{USER} ")))
            .filter_map(|n| n.parse().ok())
            .max()
            .unwrap_or(0)
    }

    fn journal_text(&self) -> String {
        std::fs::read_to_string(&self.journal).unwrap_or_default()
    }

    /// The last `upto` of the MDT in the journal.
    fn upto(&self) -> u64 {
        self.journal_text()
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("upto {MDT} ")))
            .filter_map(|n| n.parse().ok())
            .max()
            .unwrap_or(0)
    }

    fn start_tracker(&self, flush_ms: u64) -> Child {
        let mut cmd = Command::new(bin());
        cmd.args(["track", "--report-interval", "0", "--flush-ms"])
            .arg(flush_ms.to_string())
            .arg("--config")
            .arg(&self.config)
            .arg("--source")
            .arg(&self.src)
            .arg("--journal")
            .arg(&self.journal)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.env(&mut cmd);
        let before = self.journal_text().matches("start ").count();
        let mut child = cmd.spawn().expect("start lmpi track");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if self.journal_text().matches("start ").count() > before {
                return child;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("lmpi track did not start: {}", text(&out));
    }

    /// Wait until the journal holds every record written so far.
    fn caught_up(&self) {
        let t0 = Instant::now();
        while self.upto() + 1 < self.next_index {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "tracker behind: {}",
                self.journal_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pass(&self, pass: &str, extra: &[&str]) -> Output {
        let mut cmd = launcher(Launch::Alone, &bin());
        cmd.args(["--pass", pass, "-q", "--error-log"])
            .arg(self._t.path().join("errors.log"))
            .arg("--config")
            .arg(&self.config)
            .arg("--source")
            .arg(&self.src)
            .arg("--target")
            .arg(&self.dst)
            .args(extra);
        self.env(&mut cmd);
        cmd.output().expect("run lmpi")
    }
}

fn stop_tracker(child: Child) -> String {
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait for lmpi track");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    text(&out)
}

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

#[test]
fn each_record_type_is_journaled_as_its_change() {
    let Some(mut st) = stage() else { return };
    let (r, d) = (ROOT_FID.to_string(), fid(2));
    let t = |n| fid(0x100 + n);
    let names = [
        ("CREAT", "a", 'd'),
        ("MKDIR", "dir", 'D'),
        ("HLINK", "h", 'd'),
        ("SLINK", "s", 'd'),
        ("MKNOD", "n", 'd'),
        ("UNLNK", "u", 'd'),
        ("RMDIR", "rd", 'D'),
        ("RNMTO", "to", 'd'),
    ];
    for (i, (kind, name, _)) in names.iter().enumerate() {
        st.record(&format!("{kind} {} {d} {name}", t(i as u32)));
    }
    st.record(&format!("RENME {} {d} new {} {r} old", fid(0), t(20)));
    let attrs = [
        "SATTR", "XATTR", "MTIME", "CTIME", "TRUNC", "CLOSE", "LYOUT",
    ];
    for (i, kind) in attrs.iter().enumerate() {
        st.record(&format!("{kind} {} {d} -", t(30 + i as u32)));
    }
    st.record(&format!("ATIME {} {d} -", t(50)));
    st.record(&format!("MARK {} {} -", fid(0), fid(0)));
    let tracker = st.start_tracker(50);
    st.caught_up();
    let out = stop_tracker(tracker);
    assert!(
        out.contains("Lustre changelogs of fs-MDT0000 as user cl1"),
        "{out}"
    );
    let j = st.journal_text();
    let has = |tag: char, h: &str, name: Option<&str>| {
        let tail = match name {
            Some(n) => format!(".-1.{} {n}", hex(h)),
            None => format!(".-1.{}", hex(h)),
        };
        j.lines().any(|l| l.starts_with(tag) && l.ends_with(&tail))
    };
    for (kind, name, tag) in names {
        assert!(has(tag, &d, Some(name)), "{kind}: {j}");
    }
    assert!(
        has('d', &d, Some("new")) && has('d', &r, Some("old")),
        "RENME: {j}"
    );
    for (i, kind) in attrs.iter().enumerate() {
        assert!(has('s', &t(30 + i as u32), None), "{kind}: {j}");
    }
    assert!(!j.contains(&hex(&t(50))), "ATIME is not a change: {j}");
    assert!(!j.contains("loss"), "{j}");
    let last = st.next_index - 1;
    assert_eq!((st.upto(), st.cleared()), (last, last), "{j}");
    assert!(j.lines().last().unwrap_or("").starts_with("stop "), "{j}");
}

#[test]
fn records_are_cleared_only_once_the_journal_has_them() {
    let Some(mut st) = stage() else { return };
    let tracker = st.start_tracker(700);
    let t0 = Instant::now();
    let mut n = 0u32;
    while t0.elapsed() < Duration::from_millis(2500) {
        st.record(&format!("CREAT {} {ROOT_FID} f{n}", fid(0x100 + n)));
        n += 1;
        // Cleared first, then the journal: what was cleared must be in it.
        let cleared = st.cleared();
        let j = st.journal_text();
        let upto = st.upto();
        assert!(
            cleared <= upto,
            "cleared {cleared} with the journal at {upto}"
        );
        for i in 0..cleared.min(u64::from(n)) as u32 {
            assert!(
                j.contains(&format!("{} f{i}\n", hex(ROOT_FID))),
                "record {i} cleared, not journaled"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        st.cleared() > 0,
        "nothing cleared in 2.5 s at a 0.7 s flush"
    );
    stop_tracker(tracker);
    assert_eq!(st.cleared(), st.next_index - 1);
}

#[test]
fn a_gap_is_a_loss() {
    let Some(mut st) = stage() else { return };
    st.record(&format!("CREAT {} {ROOT_FID} a", fid(0x100)));
    st.raw_record(3, &format!("CREAT {} {ROOT_FID} b", fid(0x101)));
    st.next_index = 4;
    let tracker = st.start_tracker(50);
    st.caught_up();
    stop_tracker(tracker);
    let j = lmpi::track::journal::read(&st.journal).unwrap();
    let d = j.doubt.unwrap_or_default();
    assert!(d.contains("skips records 2 to 2"), "{d}");
}

#[test]
fn a_restart_goes_on_from_the_journal_and_a_gap_then_is_a_loss() {
    let Some(mut st) = stage() else { return };
    for i in 0..3 {
        st.record(&format!("CREAT {} {ROOT_FID} a{i}", fid(0x100 + i)));
    }
    let tracker = st.start_tracker(50);
    st.caught_up();
    stop_tracker(tracker);
    // The MDT kept what came while nobody read: no gap.
    st.record(&format!("CREAT {} {ROOT_FID} b", fid(0x200)));
    let tracker = st.start_tracker(50);
    st.caught_up();
    stop_tracker(tracker);
    let j = lmpi::track::journal::read(&st.journal).unwrap();
    assert_eq!(j.doubt, None, "{}", st.journal_text());
    assert!(st
        .journal_text()
        .contains(&format!("{} b\n", hex(ROOT_FID))));
    // Records purged by someone else before the tracker read them.
    st.record(&format!("CREAT {} {ROOT_FID} c", fid(0x201)));
    st.record(&format!("CREAT {} {ROOT_FID} d", fid(0x202)));
    std::fs::write(
        st.cl.join(format!("{MDT}.cleared")),
        format!("other {}\n", st.next_index - 2),
    )
    .unwrap();
    let tracker = st.start_tracker(50);
    st.caught_up();
    stop_tracker(tracker);
    let d = lmpi::track::journal::read(&st.journal)
        .unwrap()
        .doubt
        .unwrap_or_default();
    assert!(d.contains("skips records"), "{d}");
}

/// A tree with a FID for every entry.
fn tree(st: &mut Stage) {
    for d in 0..6 {
        let dir = format!("d{d}");
        std::fs::create_dir_all(st.src.join(&dir).join("sub")).unwrap();
        st.assign(&dir);
        st.assign(&format!("{dir}/sub"));
        std::fs::write(st.src.join(&dir).join("sub/deep"), b"deep").unwrap();
        st.assign(&format!("{dir}/sub/deep"));
        for f in 0..4 {
            std::fs::write(st.src.join(&dir).join(format!("f{f}")), format!("{d}/{f}")).unwrap();
            st.assign(&format!("{dir}/f{f}"));
        }
    }
    st.write_map();
}

/// Changes on the real tree, each with the records Lustre would write and
/// the FID map as it is after.
fn churn(st: &mut Stage) {
    let s = st.src.display().to_string();
    let f = |st: &Stage, p: &str| st.fid_of(p);
    sh(&format!(
        "cd '{s}' && echo new > d0/new && mkdir d1/newdir && echo x > d1/newdir/x"
    ));
    let new = st.assign("d0/new");
    st.record(&format!("CREAT {new} {} new", f(st, "d0")));
    let nd = st.assign("d1/newdir");
    st.record(&format!("MKDIR {nd} {} newdir", f(st, "d1")));
    let x = st.assign("d1/newdir/x");
    st.record(&format!("CREAT {x} {nd} x"));
    sh(&format!("cd '{s}' && rm d2/f3 && rm -r d3/sub"));
    st.record(&format!("UNLNK {} {} f3", f(st, "d2/f3"), f(st, "d2")));
    st.record(&format!(
        "UNLNK {} {} deep",
        f(st, "d3/sub/deep"),
        f(st, "d3/sub")
    ));
    st.record(&format!("RMDIR {} {} sub", f(st, "d3/sub"), f(st, "d3")));
    for gone in ["d2/f3", "d3/sub/deep", "d3/sub"] {
        let g = f(st, gone);
        st.fids.remove(&g);
    }
    // A subtree moved to another directory, a file renamed in place.
    sh(&format!(
        "cd '{s}' && mv d4/sub d5/moved && mv d5/f1 d5/f1.renamed"
    ));
    let sub = f(st, "d4/sub");
    st.record(&format!(
        "RENME {} {} moved {sub} {} sub",
        fid(0),
        f(st, "d5"),
        f(st, "d4")
    ));
    st.fids.insert(sub, "d5/moved".into());
    let deep = f(st, "d4/sub/deep");
    st.fids.insert(deep, "d5/moved/deep".into());
    let f1 = f(st, "d5/f1");
    st.record(&format!(
        "RENME {} {} f1.renamed {f1} {} f1",
        fid(0),
        f(st, "d5"),
        f(st, "d5")
    ));
    st.fids.insert(f1, "d5/f1.renamed".into());
    // Data and attributes, on files and a directory.
    sh(&format!(
        "cd '{s}' && chmod 600 d0/f1 && echo more >> d1/f2 && truncate -s 0 d2/f0 \
         && setfattr -n user.x -v 1 d3/f1 && chmod 700 d1 && ln -s target d5/link"
    ));
    st.record(&format!("SATTR {} {} -", f(st, "d0/f1"), f(st, "d0")));
    st.record(&format!("CLOSE {} {} -", f(st, "d1/f2"), f(st, "d1")));
    st.record(&format!("TRUNC {} {} -", f(st, "d2/f0"), f(st, "d2")));
    st.record(&format!("XATTR {} {} -", f(st, "d3/f1"), f(st, "d3")));
    st.record(&format!("SATTR {} {ROOT_FID} -", f(st, "d1")));
    let link = st.assign("d5/link");
    st.record(&format!("SLINK {link} {} link", f(st, "d5")));
    // Changed, then removed: its FID no longer resolves (skipped; the
    // removal is in its parent). And one the map never knew.
    sh(&format!("cd '{s}' && chmod 604 d0/f3 && rm d0/f3"));
    let f3 = f(st, "d0/f3");
    st.record(&format!("SATTR {f3} {} -", f(st, "d0")));
    st.record(&format!("UNLNK {f3} {} f3", f(st, "d0")));
    st.fids.remove(&f3);
    st.record(&format!("SATTR {} {ROOT_FID} -", fid(0xdead)));
    st.write_map();
}

/// The double records the layout each file was created with in
/// trusted.lov, on the target only (the source's are the filesystem
/// default): not what this test compares.
fn drop_layouts(dir: &Path) {
    use std::os::fd::AsFd;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let d = open(dir);
        let name = e.file_name();
        let _ = lmpi::fsops::remove_xattr(None, d.as_fd(), name.as_encoded_bytes(), b"trusted.lov");
        if e.file_type().unwrap().is_dir() {
            drop_layouts(&e.path());
        }
    }
}

#[test]
fn final_changes_over_a_changelog_journal_converges() {
    let Some(mut st) = stage() else { return };
    if !have("setfattr") {
        assert!(!in_ci(), "setfattr is needed in CI");
        return;
    }
    tree(&mut st);
    let tracker = st.start_tracker(50);
    std::thread::sleep(SKEW);
    let out = st.pass("final", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    churn(&mut st);
    st.caught_up();
    stop_tracker(tracker);
    let j = st.journal.to_str().unwrap().to_string();
    // An xattr-only change leaves size and mtime: the pass compares a
    // journaled file's xattrs only with --check-xattrs (as the copy does).
    let out = st.pass("final", &["--check-xattrs", "--changes", &j]);
    let o = text(&out);
    assert_eq!(out.status.code(), Some(0), "{o}");
    assert!(o.contains("--changes: "), "{o}");
    assert!(
        !o.contains("the whole tree was walked"),
        "the journal was not used: {o}"
    );
    assert!(
        !o.contains("(0 records gone"),
        "the FIDs that no longer resolve: {o}"
    );
    drop_layouts(&st.dst);
    let diffs = compare_trees(&st.src, &st.dst, true);
    assert!(diffs.is_empty(), "{diffs:#?}\n{o}");
}
