//! `lmpi track` and `--pass final --changes`: the downtime pass visits only
//! what the tracker recorded (fanotify, for real, on a tmpfs of the test's
//! own), converges to the same tree as a full final pass, and walks
//! everything, saying why, whenever the journal cannot stand for every change.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct Stage {
    _m: TmpfsMount,
    _t: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
    journal: PathBuf,
}

fn stage() -> Option<Stage> {
    if !is_root() {
        assert!(!in_ci(), "lmpi track needs root in CI");
        return None;
    }
    let t = tempfile::tempdir().unwrap();
    let m = TmpfsMount::at(&t.path().join("srcfs"), "size=64m")?;
    let src = t.path().join("srcfs/tree");
    let dst = t.path().join("dst");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    build_odd_tree(&src, false);
    for d in 0..20 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..20 {
            std::fs::write(dir.join(format!("f{f}")), format!("{d}/{f}")).unwrap();
        }
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/deep"), b"deep").unwrap();
    }
    let journal = t.path().join("journal");
    Some(Stage {
        _m: m,
        _t: t,
        src,
        dst,
        journal,
    })
}

fn start_tracker(st: &Stage) -> Child {
    let mut child = Command::new(bin())
        .args(["track", "--flush-ms", "50", "--report-interval", "0"])
        .arg("--source")
        .arg(&st.src)
        .arg("--journal")
        .arg(&st.journal)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lmpi track");
    // Its mark is in place once the journal has one more `start`.
    let starts =
        || std::fs::read_to_string(&st.journal).map_or(0, |j| j.matches("\nstart ").count());
    let before = starts();
    for _ in 0..3000 {
        if starts() > before {
            return child;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("lmpi track did not start");
}

fn stop_tracker(child: Child) -> String {
    let pid = child.id() as i32;
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait for lmpi track");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    text(&out)
}

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

/// Changes of every kind the issue lists, on the live source.
fn churn(src: &Path) {
    let s = src.display();
    sh(&format!(
        "cd '{s}' && echo new > d0/new && mkdir -p d1/newdir/x && echo y > d1/newdir/x/y \
         && rm d2/f3 && rm -r d3/sub && mv d4/sub d5/moved && chmod 600 d6/f1 \
         && chmod 700 d7 && touch -d @1000000 d8 && echo more >> d9/f9 \
         && ln -s target d10/link && mv d11/f1 d11/f1.renamed && truncate -s 0 d12/f2 \
         && printf 'same size' > d13/f13 && mkfifo d14/fifo"
    ));
}

fn final_changes(launch: Launch, st: &Stage) -> (i32, String) {
    let j = st.journal.to_str().unwrap();
    let (code, _, out) = pass(launch, "final", &st.src, &st.dst, &["--changes", j]);
    (code, text(&out))
}

/// The tracker must be watching 2 s (the clock skew allowed) before the copy.
const SKEW: Duration = Duration::from_millis(2100);

fn converges(launch: Launch) {
    let Some(st) = stage() else { return };
    let tracker = start_tracker(&st);
    std::thread::sleep(SKEW);
    let (code, _, out) = pass(launch, "final", &st.src, &st.dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    churn(&st.src);
    stop_tracker(tracker);
    let (code, out) = final_changes(launch, &st);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("--changes: "), "{out}");
    assert!(
        !out.contains("the whole tree was walked"),
        "the journal was not used: {out}"
    );
    let diffs = compare_trees(&st.src, &st.dst, true);
    assert!(diffs.is_empty(), "{diffs:#?}\n{out}");
}

#[test]
fn a_final_pass_with_changes_converges() {
    converges(Launch::Alone);
}

#[test]
fn a_final_pass_with_changes_converges_under_mpirun() {
    if have("mpirun") {
        converges(Launch::Mpirun(2));
    }
}

/// Each reason a journal cannot stand for every change makes the final
/// pass walk the whole tree, say why, and still converge.
fn walks_because(st: &Stage, why: &str) {
    let (code, out) = final_changes(Launch::Alone, st);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(why) && out.contains("the whole tree was walked"),
        "{out}"
    );
    let diffs = compare_trees(&st.src, &st.dst, true);
    assert!(diffs.is_empty(), "{diffs:#?}\n{out}");
}

#[test]
fn a_killed_tracker_means_a_full_walk() {
    let Some(st) = stage() else { return };
    let mut tracker = start_tracker(&st);
    std::thread::sleep(SKEW);
    let (code, _, out) = pass(Launch::Alone, "final", &st.src, &st.dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    tracker.kill().unwrap();
    tracker.wait().unwrap();
    churn(&st.src);
    walks_because(&st, "has not stopped");
}

#[test]
fn a_tracker_started_after_the_copy_means_a_full_walk() {
    let Some(st) = stage() else { return };
    let (code, _, out) = pass(Launch::Alone, "final", &st.src, &st.dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    let tracker = start_tracker(&st);
    std::thread::sleep(Duration::from_millis(100));
    churn(&st.src);
    stop_tracker(tracker);
    walks_because(&st, "started after the last clean pass");
}

#[test]
fn a_restarted_tracker_is_a_gap() {
    let Some(st) = stage() else { return };
    let tracker = start_tracker(&st);
    std::thread::sleep(SKEW);
    let (code, _, out) = pass(Launch::Alone, "final", &st.src, &st.dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    stop_tracker(tracker);
    sh(&format!("echo unseen > '{}/d0/unseen'", st.src.display()));
    let again = start_tracker(&st);
    churn(&st.src);
    stop_tracker(again);
    walks_because(&st, "a gap");
}

#[test]
fn a_changed_hardlink_walks_to_find_every_name() {
    let Some(st) = stage() else { return };
    sh(&format!("cd '{}' && ln d0/f0 d5/f0.link", st.src.display()));
    let tracker = start_tracker(&st);
    std::thread::sleep(SKEW);
    let (code, _, out) = pass(Launch::Alone, "final", &st.src, &st.dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    sh(&format!(
        "cd '{}' && echo changed >> d0/f0",
        st.src.display()
    ));
    stop_tracker(tracker);
    let (code, out) = final_changes(Launch::Alone, &st);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hardlinked files were named"), "{out}");
    let diffs = compare_trees(&st.src, &st.dst, true);
    assert!(diffs.is_empty(), "{diffs:#?}\n{out}");
}

#[test]
fn changes_is_refused_by_other_passes() {
    let (_t, src, dst) = src_and_dst();
    let (code, _, out) = pass(Launch::Alone, "copy", &src, &dst, &["--changes", "/x"]);
    assert_eq!(code, 2, "{}", text(&out));
    assert!(text(&out).contains("--changes is for --pass final only"));
}

/// A directory renamed on the source (across directories, and within
/// one) is renamed on the target: its files keep their inodes, and no
/// byte of them is copied again.
#[test]
fn a_renamed_directory_is_renamed_on_the_target() {
    use std::os::unix::fs::MetadataExt;
    let Some(st) = stage() else { return };
    sh(&format!(
        "cd '{}' && mkdir -p d15/big/inner && head -c 2097152 /dev/urandom > d15/big/inner/blob \
         && mkdir d16/other && echo o > d16/other/o",
        st.src.display()
    ));
    let tracker = start_tracker(&st);
    std::thread::sleep(SKEW);
    let (code, _, out) = pass(Launch::Alone, "final", &st.src, &st.dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let blob = ino(&st.dst.join("d15/big/inner/blob"));
    let o = ino(&st.dst.join("d16/other/o"));
    sh(&format!(
        "cd '{}' && mv d15/big d17/moved && mv d16/other d16/renamed && echo new > d17/moved/inner/new",
        st.src.display()
    ));
    stop_tracker(tracker);
    let j = st.journal.to_str().unwrap();
    let (code, report, out) = pass(Launch::Alone, "final", &st.src, &st.dst, &["--changes", j]);
    let out = text(&out);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 directories renamed"), "{out}");
    assert_eq!(ino(&st.dst.join("d17/moved/inner/blob")), blob);
    assert_eq!(ino(&st.dst.join("d16/renamed/o")), o);
    assert!(total(&report, "data") < 100, "{report}");
    let diffs = compare_trees(&st.src, &st.dst, true);
    assert!(diffs.is_empty(), "{diffs:#?}\n{out}");
}

/// A clean final, the tracker watching before it, then `changes` on the
/// source, the tracker stopped: ready for a `--changes` pass.
fn tracked(st: &Stage, changes: &str, final_args: &[&str]) {
    let tracker = start_tracker(st);
    std::thread::sleep(SKEW);
    let (code, _, out) = pass(Launch::Alone, "final", &st.src, &st.dst, final_args);
    assert_eq!(code, 0, "{}", text(&out));
    sh(&format!("cd '{}' && {changes}", st.src.display()));
    stop_tracker(tracker);
}

#[test]
fn a_journal_used_once_is_not_trusted_again() {
    let Some(st) = stage() else { return };
    tracked(&st, "echo a > d0/a", &[]);
    let (code, out) = final_changes(Launch::Alone, &st);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("the whole tree was walked"), "{out}");
    sh(&format!(
        "cd '{}' && echo b > d1/after && rm -r d2",
        st.src.display()
    ));
    walks_because(&st, "used already");
}

#[test]
fn other_excludes_than_the_clean_pass_mean_a_full_walk() {
    let Some(st) = stage() else { return };
    tracked(&st, "echo a > d0/a", &["--exclude", "d3"]);
    walks_because(&st, "left out other paths");
}

#[test]
fn a_hardlinked_file_changed_outside_the_tree_means_a_full_walk() {
    let Some(st) = stage() else { return };
    let outside = st.src.parent().unwrap().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::hard_link(st.src.join("d0/f1"), outside.join("f1")).unwrap();
    tracked(
        &st,
        &format!("echo more >> '{}'", outside.join("f1").display()),
        &[],
    );
    walks_because(&st, "outside the tree");
}

#[test]
fn a_filesystem_mounted_inside_the_source_is_walked() {
    let Some(st) = stage() else { return };
    let Some(_inner) = TmpfsMount::at(&st.src.join("d9/mnt"), "size=4m") else {
        return;
    };
    sh(&format!(
        "cd '{}/d9/mnt' && echo one > file && mkdir dd",
        st.src.display()
    ));
    tracked(
        &st,
        "echo changed-longer > d9/mnt/file && touch d9/mnt/new && rm -r d9/mnt/dd",
        &[],
    );
    let (code, out) = final_changes(Launch::Alone, &st);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 filesystems mounted inside"), "{out}");
    let diffs = compare_trees(&st.src, &st.dst, true);
    assert!(diffs.is_empty(), "{diffs:#?}\n{out}");
}

#[test]
fn a_path_longer_than_path_max_means_a_full_walk() {
    let Some(st) = stage() else { return };
    // Built and written by relative steps: the whole path is too long for one call.
    let down = "for i in $(seq 25); do d=$(printf '%0200d' $i); mkdir -p $d && cd $d; done";
    let at_leaf = |cmd: &str| {
        let script = format!("cd '{}/d5' && {down} && {cmd}", st.src.display());
        let o = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(o.status.success(), "{script}: {}", text(&o));
    };
    at_leaf("echo old > leaf");
    let tracker = start_tracker(&st);
    std::thread::sleep(SKEW);
    let (code, _, out) = pass(Launch::Alone, "final", &st.src, &st.dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    at_leaf("echo newest > leaf && echo added > added");
    stop_tracker(tracker);
    walks_because(&st, "could not be read");
}
