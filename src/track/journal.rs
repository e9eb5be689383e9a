//! The tracker's journal: one text line per distinct change, appended and
//! synced as the tracker goes, read by `--pass final --changes`.
//!
//! ```text
//! lmpi-journal 1 fsid=<hex> root=<dev>:<ino>
//! start <unix ns> [changelog]
//! d <handle> <name>      an entry of directory <handle> appeared, went or was renamed
//! e <handle> <name>      an entry of directory <handle> changed otherwise
//! D, E                   the same for an entry that is a directory
//! s <handle>             a directory (or file) itself changed
//! loss <unix ns> <why>   events were lost: the journal cannot be trusted
//! stop <unix ns>         the tracker stopped, everything before is in
//! upto <mdt> <index>     every changelog record of <mdt> up to <index> is in
//! ```
//!
//! A `start` after a `stop` is a time nobody watched: a gap, as a loss.
//! Not so for a changelog tracker (`start ... changelog`): the MDT kept
//! the records meanwhile, and the tracker checks that the first one it
//! reads follows the journal's `upto` (else it records a loss).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::handle::Handle;
use super::{Change, TrackError};
use crate::manifest;

const MAGIC: &str = "lmpi-journal 1";
/// No real line comes near this (a handle is at most 128 bytes, a name 255
/// bytes, 3 x that encoded): a longer one is not ours.
pub const MAX_LINE: usize = 4096;

/// Which tree a journal watches: the source filesystem and its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    pub fsid: u64,
    pub root_dev: u64,
    pub root_ino: u64,
}

impl Watched {
    fn header(&self) -> String {
        format!(
            "{MAGIC} fsid={:016x} root={}:{}\n",
            self.fsid, self.root_dev, self.root_ino
        )
    }

    fn parse(line: &str) -> Option<Watched> {
        let rest = line.strip_prefix(MAGIC)?.trim();
        let mut fsid = None;
        let mut root = None;
        for f in rest.split(' ') {
            if let Some(v) = f.strip_prefix("fsid=") {
                fsid = u64::from_str_radix(v, 16).ok();
            } else if let Some(v) = f.strip_prefix("root=") {
                let (d, i) = v.split_once(':')?;
                root = Some((d.parse().ok()?, i.parse().ok()?));
            }
        }
        let (root_dev, root_ino) = root?;
        Some(Watched {
            fsid: fsid?,
            root_dev,
            root_ino,
        })
    }
}

/// Appends changes, each distinct one once, and syncs on `flush`.
pub struct Writer {
    path: PathBuf,
    file: std::fs::File,
    seen: HashSet<Change>,
    pending: Vec<u8>,
    /// The `upto`s of the journal this one continues (None: a new journal).
    resumed: Option<BTreeMap<String, u64>>,
}

impl Writer {
    /// Open (or create) journal `path` for `watched`, and append a `start`.
    /// An existing journal must watch the same tree.
    pub fn open(path: &Path, watched: Watched, now_ns: u128) -> Result<Writer, TrackError> {
        Self::open_tagged(path, watched, now_ns, "")
    }

    /// `open`, the `start` tagged with the backend (`changelog`, or "").
    pub fn open_tagged(
        path: &Path,
        watched: Watched,
        now_ns: u128,
        tag: &str,
    ) -> Result<Writer, TrackError> {
        let file = super::own_file(path)?;
        let len = file.metadata().map_err(|e| TrackError::io(path, e))?.len();
        let mut w = Writer {
            path: path.to_path_buf(),
            file,
            seen: HashSet::new(),
            pending: Vec::new(),
            resumed: None,
        };
        if len == 0 {
            w.pending.extend_from_slice(watched.header().as_bytes());
        } else {
            let old = read(path)?;
            if old.watched != watched {
                return Err(TrackError::Other(format!(
                    "journal {} watches another tree ({:?}, not {:?})",
                    path.display(),
                    old.watched,
                    watched
                )));
            }
            w.seen.extend(old.changes);
            w.resumed = Some(old.upto);
        }
        let start = match tag {
            "" => format!("start {now_ns}\n"),
            t => format!("start {now_ns} {t}\n"),
        };
        w.pending.extend_from_slice(start.as_bytes());
        w.flush()?;
        Ok(w)
    }

    /// Record `c` unless recorded before. Returns whether it was new.
    pub fn add(&mut self, c: Change) -> bool {
        if let Change::Loss(why) = &c {
            let now = super::unix_ns();
            let line = format!("loss {now} {}\n", manifest::encode(why.as_bytes()));
            self.pending.extend_from_slice(line.as_bytes());
            return true;
        }
        if self.seen.contains(&c) {
            return false;
        }
        let line = match &c {
            Change::Entry {
                dir,
                name,
                dirent,
                ondir,
            } => {
                let tag = match (*dirent, *ondir) {
                    (true, false) => 'd',
                    (false, false) => 'e',
                    (true, true) => 'D',
                    (false, true) => 'E',
                };
                format!("{tag} {} {}\n", dir.encode(), manifest::encode(name))
            }
            Change::Itself(h) => format!("s {}\n", h.encode()),
            Change::Loss(_) => unreachable!("handled above"),
        };
        self.pending.extend_from_slice(line.as_bytes());
        self.seen.insert(c);
        true
    }

    /// Everything added is on stable storage when this returns Ok.
    pub fn flush(&mut self) -> Result<(), TrackError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.pending)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| TrackError::io(&self.path, e))?;
        self.pending.clear();
        Ok(())
    }

    /// The tracker ends: a `stop` record, synced.
    pub fn close(mut self) -> Result<(), TrackError> {
        let now = super::unix_ns();
        self.pending
            .extend_from_slice(format!("stop {now}\n").as_bytes());
        self.flush()
    }

    /// Every changelog record of `mdt` up to `index` is added: written
    /// with the next flush.
    pub fn note_upto(&mut self, mdt: &str, index: u64) {
        let line = format!("upto {} {index}\n", manifest::encode(mdt.as_bytes()));
        self.pending.extend_from_slice(line.as_bytes());
    }

    /// The `upto`s of the journal this one continues; None if it is new.
    pub fn resumed(&self) -> Option<&BTreeMap<String, u64>> {
        self.resumed.as_ref()
    }

    pub fn distinct(&self) -> usize {
        self.seen.len()
    }
}

/// A journal as read back.
#[derive(Debug)]
pub struct Journal {
    pub watched: Watched,
    /// Distinct changes, in no order that matters.
    pub changes: BTreeSet<Change>,
    /// When watching began (the first `start`).
    pub since_ns: Option<u128>,
    /// When the tracker last stopped (its last `stop`).
    pub stop_ns: Option<u128>,
    /// Why the journal cannot stand for every change since `since_ns`, if
    /// it cannot: a loss, a gap, or no `stop` at its end.
    pub doubt: Option<String>,
    /// Per MDT, the last changelog record in the journal.
    pub upto: BTreeMap<String, u64>,
}

/// Read journal `path` (a regular file, lines bounded).
pub fn read(path: &Path) -> Result<Journal, TrackError> {
    // A regular file only: a FIFO would block, a device never end.
    let (file, _) = crate::bounded::open_regular(path).map_err(|e| TrackError::io(path, e))?;
    let mut r = std::io::BufReader::new(file);
    let mut line = Vec::new();
    let mut n = 0u64;
    let mut j: Option<Journal> = None;
    let mut stopped = false;
    loop {
        line.clear();
        let got = std::io::Read::take(&mut r, MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| TrackError::io(path, e))?;
        if got == 0 {
            break;
        }
        n += 1;
        let bad =
            |why: &str| TrackError::Other(format!("journal {} line {n}: {why}", path.display()));
        if line.len() > MAX_LINE || line.last() != Some(&b'\n') {
            return Err(bad("too long or cut"));
        }
        let text = std::str::from_utf8(&line[..line.len() - 1]).map_err(|_| bad("not text"))?;
        let Some(j) = j.as_mut() else {
            let watched = Watched::parse(text).ok_or_else(|| bad("not an lmpi journal"))?;
            j = Some(Journal {
                watched,
                changes: BTreeSet::new(),
                since_ns: None,
                stop_ns: None,
                doubt: None,
                upto: BTreeMap::new(),
            });
            continue;
        };
        stopped = apply(j, text, stopped).ok_or_else(|| bad("bad record"))?;
    }
    let mut j =
        j.ok_or_else(|| TrackError::Other(format!("journal {} is empty", path.display())))?;
    if !stopped && j.doubt.is_none() {
        j.doubt = Some("its tracker has not stopped (still running, or killed)".into());
    }
    Ok(j)
}

/// One record line into `j`; Some(whether the journal is now stopped).
fn apply(j: &mut Journal, text: &str, stopped: bool) -> Option<bool> {
    let (kind, rest) = text.split_once(' ')?;
    let doubt = |j: &mut Journal, why: String| {
        j.doubt.get_or_insert(why);
    };
    match kind {
        "start" => {
            let (t, tag) = rest.split_once(' ').unwrap_or((rest, ""));
            let t: u128 = t.parse().ok()?;
            match j.since_ns {
                None => j.since_ns = Some(t),
                // The changelog kept what happened meanwhile.
                Some(_) if tag == "changelog" => {}
                Some(_) if stopped => {
                    doubt(j, "its tracker was stopped for a while (a gap)".into())
                }
                Some(_) => doubt(
                    j,
                    "its tracker was restarted without a stop (killed)".into(),
                ),
            }
            Some(false)
        }
        "stop" => {
            j.stop_ns = Some(rest.parse::<u128>().ok()?);
            Some(true)
        }
        "loss" => {
            let why = rest.split_once(' ').map_or(rest, |(_, w)| w);
            let why = manifest::decode(why.as_bytes()).unwrap_or_default();
            doubt(
                j,
                format!("events were lost ({})", String::from_utf8_lossy(&why)),
            );
            Some(stopped)
        }
        "e" | "d" | "E" | "D" => {
            let (h, name) = rest.split_once(' ')?;
            let name = manifest::decode(name.as_bytes())?;
            j.changes.insert(Change::Entry {
                dir: Handle::decode(h)?,
                name,
                dirent: kind.eq_ignore_ascii_case("d"),
                ondir: kind == "D" || kind == "E",
            });
            Some(stopped)
        }
        "upto" => {
            let (mdt, index) = rest.split_once(' ')?;
            let mdt = String::from_utf8(manifest::decode(mdt.as_bytes())?).ok()?;
            j.upto.insert(mdt, index.parse().ok()?);
            Some(stopped)
        }
        "s" => {
            j.changes.insert(Change::Itself(Handle::decode(rest)?));
            Some(stopped)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> Handle {
        Handle {
            fsid: 7,
            kind: 1,
            bytes: vec![n, 0, 0xff],
        }
    }

    #[test]
    fn dedupes_and_reads_back() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let p = t.path().join("j");
        let w0 = Watched {
            fsid: 1,
            root_dev: 2,
            root_ino: 3,
        };
        let mut w = Writer::open(&p, w0, 10)?;
        for _ in 0..1000 {
            w.add(Change::Entry {
                dir: h(1),
                name: b"a \n\xff".to_vec(),
                dirent: true,
                ondir: false,
            });
        }
        w.add(Change::Itself(h(2)));
        assert_eq!(w.distinct(), 2);
        w.close()?;
        let j = read(&p)?;
        assert_eq!(
            (j.watched, j.since_ns, j.doubt.clone()),
            (w0, Some(10), None)
        );
        assert_eq!(j.changes.len(), 2);
        assert_eq!(std::fs::read_to_string(&p)?.lines().count(), 5);
        // Restarted after its stop: a gap.
        Writer::open(&p, w0, 20)?.close()?;
        assert!(read(&p)?.doubt.is_some_and(|d| d.contains("gap")));
        Ok(())
    }

    #[test]
    fn a_changelog_restart_is_no_gap() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let p = t.path().join("j");
        let w0 = Watched {
            fsid: 1,
            root_dev: 2,
            root_ino: 3,
        };
        let mut w = Writer::open_tagged(&p, w0, 10, "changelog")?;
        assert!(w.resumed().is_none());
        w.note_upto("fs-MDT0000", 41);
        w.close()?;
        let w = Writer::open_tagged(&p, w0, 20, "changelog")?;
        assert_eq!(w.resumed().and_then(|u| u.get("fs-MDT0000")), Some(&41));
        w.close()?;
        let j = read(&p)?;
        assert_eq!((j.doubt, j.since_ns), (None, Some(10)));
        Ok(())
    }

    #[test]
    fn a_loss_or_no_stop_is_doubt() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let p = t.path().join("j");
        let w0 = Watched {
            fsid: 1,
            root_dev: 2,
            root_ino: 3,
        };
        let mut w = Writer::open(&p, w0, 10)?;
        w.add(Change::Loss("overflow".into()));
        w.flush()?;
        drop(w);
        let d = read(&p)?.doubt.unwrap_or_default();
        assert!(d.contains("lost (overflow)"), "{d}");
        let other = Watched { fsid: 9, ..w0 };
        assert!(Writer::open(&p, other, 11).is_err());
        Ok(())
    }
}
