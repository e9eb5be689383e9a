//! Manifests: every action a pass took (or, in a dry run, would take), one
//! record per line, written per rank during the pass and merged by rank 0
//! at the end. The format is in docs/manifest.md:
//!
//! ```text
//! <action>\t<fields...>\t<path>
//! ```
//!
//! where the path is relative to the roots and percent-encoded, so any byte
//! string survives. `read` parses a manifest back (the verify pass's
//! `--from-manifest`).

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use percent_encoding::{percent_decode, percent_encode, AsciiSet, CONTROLS};

use crate::fsops::{self, Existing, Kind, OutputError, OutputFailure, Stat};

/// The mode of the manifest and its parts: they name every entry a pass
/// touched, those in users' 0700 directories too, so root's only.
pub const MODE: u32 = 0o600;

/// Bytes a path field carries percent-encoded: controls (tab, newline, CR
/// among them), space, `%` and, always, every byte from 0x80 up; so a field
/// is only bytes 0x21..=0x7e.
const PATH_SET: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// What was fixed on an entry whose data was already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Owner and/or mode (and the xattrs a chown makes the kernel drop).
    OwnerMode,
    Xattrs,
    /// Inode flags (immutable, append-only, no-dump).
    Flags,
    /// Directory times (dirtime).
    Times,
}

/// Why an entry was left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Under an `exclude` prefix.
    Exclude,
    /// Outside `oldest_date`/`newest_date`.
    Age,
}

/// One action on one entry (the path travels beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A directory, symlink, fifo, socket or device node made on the
    /// target; `replaced`: something else was in the way and went.
    Created {
        kind: Kind,
        replaced: bool,
    },
    /// A regular file's data and metadata written: the source's size and
    /// mtime (nanoseconds since the epoch) at the copy.
    Copied {
        size: u64,
        mtime_ns: i128,
    },
    Fixed(Fix),
    /// Made a hardlink to `to` (relative path), the group's copied name.
    Linked {
        to: Vec<u8>,
    },
    /// Removed from the target.
    Removed {
        dir: bool,
    },
    /// Failed: errno (0 when the failure is not a call's) and the call.
    Failed {
        errno: i32,
        call: String,
    },
    Skipped(Skip),
}

impl Action {
    /// What copying source entry `s` onto a target without it means.
    pub fn of_new(s: &Stat) -> Action {
        match s.kind {
            Kind::File => Action::copied(s),
            kind => Action::Created {
                kind,
                replaced: false,
            },
        }
    }

    pub fn copied(s: &Stat) -> Action {
        Action::Copied {
            size: s.size,
            mtime_ns: s.mtime.sec as i128 * 1_000_000_000 + s.mtime.nsec as i128,
        }
    }

    /// The record's first field.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Created { .. } => "created",
            Action::Copied { .. } => "copied",
            Action::Fixed(_) => "fixed",
            Action::Linked { .. } => "linked",
            Action::Removed { .. } => "removed",
            Action::Failed { .. } => "failed",
            Action::Skipped(_) => "skipped",
        }
    }

    /// The fields between the action's name and the path.
    fn fields(&self) -> Vec<String> {
        match self {
            Action::Created { kind, replaced } => vec![
                (*kind).name().into(),
                if *replaced { "replaced" } else { "new" }.into(),
            ],
            Action::Copied { size, mtime_ns } => vec![size.to_string(), mtime_ns.to_string()],
            Action::Fixed(f) => vec![fix_name(*f).into()],
            Action::Linked { to } => vec![encode(to)],
            Action::Removed { dir } => vec![if *dir { "dir" } else { "nondir" }.into()],
            Action::Failed { errno, call } => vec![errno.to_string(), call.clone()],
            Action::Skipped(s) => vec![match s {
                Skip::Exclude => "exclude",
                Skip::Age => "age",
            }
            .into()],
        }
    }

    /// The dry run's line for it (None: nothing to say).
    pub fn would(&self, rel: &[u8]) -> Option<String> {
        let p = crate::fsops::show(rel);
        let what = match self {
            Action::Created {
                kind: Kind::Dir,
                replaced: true,
            } => "would replace with a directory",
            Action::Created {
                kind: Kind::Dir, ..
            } => "would create directory",
            Action::Created { .. } | Action::Copied { .. } => "would copy",
            Action::Fixed(Fix::OwnerMode) => "would fix owner/mode",
            Action::Fixed(Fix::Xattrs) => "would fix xattrs",
            Action::Fixed(Fix::Flags) => "would fix flags",
            Action::Fixed(Fix::Times) => "would set times",
            Action::Linked { .. } => "would link",
            Action::Removed { dir: true } => return Some(format!("would delete: {p}/")),
            Action::Removed { dir: false } => "would delete",
            Action::Failed { .. } | Action::Skipped(_) => return None,
        };
        Some(format!("{what}: {p}"))
    }
}

const KINDS: [Kind; 7] = [
    Kind::File,
    Kind::Dir,
    Kind::Symlink,
    Kind::Fifo,
    Kind::Socket,
    Kind::Char,
    Kind::Block,
];

fn fix_name(f: Fix) -> &'static str {
    match f {
        Fix::OwnerMode => "owner-mode",
        Fix::Xattrs => "xattrs",
        Fix::Flags => "flags",
        Fix::Times => "times",
    }
}

const FIXES: [Fix; 4] = [Fix::OwnerMode, Fix::Xattrs, Fix::Flags, Fix::Times];

/// A path's bytes as a record field (only bytes 0x21..=0x7e).
pub fn encode(path: &[u8]) -> String {
    percent_encode(path, PATH_SET).to_string()
}

/// A record field back to the path's bytes; None unless it is exactly what
/// `encode` writes (every `%` followed by two hex digits, nothing outside
/// 0x21..=0x7e).
pub fn decode(field: &[u8]) -> Option<Vec<u8>> {
    let mut i = 0;
    while i < field.len() {
        match field[i] {
            b'%' => {
                let hex = field.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                i += 3;
            }
            0x21..=0x7e => i += 1,
            _ => return None,
        }
    }
    Some(percent_decode(field).collect())
}

/// One record, newline included.
pub fn record(a: &Action, rel: &[u8]) -> Vec<u8> {
    let mut line = String::from(a.name());
    for f in a.fields() {
        line.push('\t');
        line.push_str(&f);
    }
    line.push('\t');
    line.push_str(&encode(rel));
    line.push('\n');
    line.into_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A part, the merge's temp file or the manifest itself refused or not
    /// opened (`fsops::open_own_output`).
    #[error(transparent)]
    Output(#[from] OutputFailure),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: larger than {max} bytes")]
    TooBig { path: String, max: u64 },
    #[error("{path}: line {line}: {msg}")]
    Parse {
        path: String,
        line: u64,
        msg: String,
    },
}

impl ManifestError {
    pub fn io(path: &Path, source: std::io::Error) -> ManifestError {
        ManifestError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// A path relative to the roots that stays below them: empty (the roots
/// themselves) or names joined by single slashes, none of them `.` or `..`,
/// no NUL. Anything else names no entry of the tree (`..` would reach the
/// roots' parents).
fn check_rel(path: &[u8]) -> Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    if path.contains(&0) {
        return Err("path holds a NUL byte".into());
    }
    for name in path.split(|&b| b == b'/') {
        match name {
            b"" => return Err("path is absolute or has an empty name".into()),
            b"." | b".." => return Err(format!("path has a `{}` name", crate::fsops::show(name))),
            _ => {}
        }
    }
    Ok(())
}

/// Parse one record (without its newline).
pub fn parse(line: &[u8]) -> Result<(Action, Vec<u8>), String> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
    let (path, head) = fields.split_last().ok_or("empty record")?;
    let path = decode(path).ok_or("bad path field")?;
    check_rel(&path)?;
    let text =
        |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "field is not UTF-8".to_string());
    let head: Vec<String> = head.iter().map(|b| text(b)).collect::<Result<_, _>>()?;
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    let num =
        |s: &str| -> Result<i128, String> { s.parse().map_err(|_| format!("bad number `{s}`")) };
    let action = match head.as_slice() {
        ["created", kind, how] => Action::Created {
            kind: *KINDS
                .iter()
                .find(|k| (**k).name() == *kind)
                .ok_or(format!("unknown kind `{kind}`"))?,
            replaced: match *how {
                "new" => false,
                "replaced" => true,
                _ => return Err(format!("bad `created` field `{how}`")),
            },
        },
        ["copied", size, mtime] => Action::Copied {
            size: u64::try_from(num(size)?).map_err(|_| format!("bad size `{size}`"))?,
            mtime_ns: num(mtime)?,
        },
        ["fixed", what] => Action::Fixed(
            *FIXES
                .iter()
                .find(|f| fix_name(**f) == *what)
                .ok_or(format!("unknown fix `{what}`"))?,
        ),
        ["linked", to] => Action::Linked {
            to: {
                let to = decode(to.as_bytes()).ok_or("bad link field")?;
                check_rel(&to)?;
                to
            },
        },
        ["removed", "dir"] => Action::Removed { dir: true },
        ["removed", "nondir"] => Action::Removed { dir: false },
        ["failed", errno, call] => Action::Failed {
            errno: i32::try_from(num(errno)?).map_err(|_| format!("bad errno `{errno}`"))?,
            call: call.to_string(),
        },
        ["skipped", "exclude"] => Action::Skipped(Skip::Exclude),
        ["skipped", "age"] => Action::Skipped(Skip::Age),
        _ => return Err("unknown action or wrong number of fields".into()),
    };
    Ok((action, path))
}

/// The longest record `read` takes, newline included: a path of 64 levels
/// of 255-byte names each, every byte percent-encoded, is 49 KiB; lmpi walks
/// deeper trees than PATH_MAX, but a line past this is not a record lmpi
/// wrote. A longer line is one error and is skipped unread.
pub const LINE_MAX: usize = 1 << 20;

/// Where reading a manifest goes on: the byte offset of the next record and
/// the number of lines before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub offset: u64,
    pub line: u64,
}

/// The records of a manifest, in file order, read a buffer at a time: the
/// memory is one line's, whatever the number of records.
pub struct Records {
    path: PathBuf,
    r: BufReader<File>,
    at: Position,
    /// The file is refused past this many bytes (it grew since it was opened).
    max_bytes: u64,
    done: bool,
}

/// How reading one line ended.
enum Line {
    Whole,
    /// The file ends without a newline.
    Cut,
    /// Longer than `LINE_MAX` (not kept).
    Long,
    /// Past `max_bytes`.
    TooBig,
    Eof,
}

impl Records {
    /// Where the next record starts.
    pub fn at(&self) -> Position {
        self.at
    }

    /// The next line into `buf`, newline included, unless it is too long.
    fn next_line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Line> {
        let mut long = false;
        loop {
            if self.at.offset > self.max_bytes {
                return Ok(Line::TooBig);
            }
            let avail = self.r.fill_buf()?;
            if avail.is_empty() {
                return Ok(match (long, buf.is_empty()) {
                    (true, _) => Line::Long,
                    (false, true) => Line::Eof,
                    (false, false) => Line::Cut,
                });
            }
            let (take, end) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            if !long && buf.len() + take > LINE_MAX {
                long = true;
                *buf = Vec::new();
            }
            if !long {
                buf.extend_from_slice(&avail[..take]);
            }
            self.r.consume(take);
            self.at.offset += take as u64;
            if end {
                return Ok(if long { Line::Long } else { Line::Whole });
            }
        }
    }

    fn parse_error(&self, msg: String) -> ManifestError {
        ManifestError::Parse {
            path: self.path.display().to_string(),
            line: self.at.line,
            msg,
        }
    }
}

impl Iterator for Records {
    type Item = Result<(Action, Vec<u8>), ManifestError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        let got = self.next_line(&mut buf);
        let r = match got {
            Ok(Line::Eof) => {
                self.done = true;
                return None;
            }
            Err(e) => {
                self.done = true;
                return Some(Err(ManifestError::io(&self.path, e)));
            }
            Ok(Line::TooBig) => {
                self.done = true;
                return Some(Err(ManifestError::TooBig {
                    path: self.path.display().to_string(),
                    max: self.max_bytes,
                }));
            }
            Ok(Line::Whole) => {
                buf.pop();
                parse(&buf)
            }
            Ok(Line::Cut) => Err("last record has no newline (cut short?)".into()),
            Ok(Line::Long) => Err(format!("longer than {LINE_MAX} bytes")),
        };
        self.at.line += 1;
        Some(r.map_err(|msg| self.parse_error(msg)))
    }
}

/// Read a manifest: each record as its action and its path's bytes.
pub fn read(path: &Path) -> Result<Records, ManifestError> {
    read_at(path, Position::default(), u64::MAX).map(|(r, _)| r)
}

/// Read a manifest of at most `max_bytes` bytes from `at` on; also the
/// file's metadata (whose identity a reader going on later checks). The
/// file must be a regular file (a FIFO or a device is refused unread).
pub fn read_at(
    path: &Path,
    at: Position,
    max_bytes: u64,
) -> Result<(Records, std::fs::Metadata), ManifestError> {
    use std::io::{Seek, SeekFrom};
    let (mut f, meta) =
        crate::bounded::open_regular(path).map_err(|e| ManifestError::io(path, e))?;
    if meta.len() > max_bytes {
        return Err(ManifestError::TooBig {
            path: path.display().to_string(),
            max: max_bytes,
        });
    }
    f.seek(SeekFrom::Start(at.offset))
        .map_err(|e| ManifestError::io(path, e))?;
    let r = Records {
        path: path.to_path_buf(),
        r: BufReader::with_capacity(64 << 10, f),
        at,
        max_bytes,
        done: false,
    };
    Ok((r, meta))
}

/// Rank `rank`'s part of manifest `file`: `FILE.rank<N>`.
pub fn part_path(file: &Path, rank: usize) -> PathBuf {
    let mut p = OsString::from(file.as_os_str());
    p.push(format!(".rank{rank}"));
    PathBuf::from(p)
}

/// Rank `rank`'s part of the manifest named `name`, as a name in its directory.
fn part_name(name: &[u8], rank: usize) -> Vec<u8> {
    [name, format!(".rank{rank}").as_bytes()].concat()
}

fn bytes(p: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes()
}

/// Rank 0, after every rank flushed its part: concatenate the parts in
/// rank order into `file` (written aside to `<file>.merging`, then renamed
/// into place) and remove them. On failure the parts stay. `inos` holds
/// each rank's part's inode as that rank opened it: a part that is not that
/// file (lmpi's own, regular, one link) is refused, never a link or FIFO a
/// user put in its place; so is a link or a user's file at `file`.
pub fn merge(file: &Path, inos: &[u64]) -> Result<(), ManifestError> {
    let (dir, name) =
        fsops::open_output_dir(file).map_err(|e| OutputError::from(e).at(bytes(file)))?;
    let dir = std::os::fd::AsFd::as_fd(&dir);
    match fsops::stat_at(dir, &name) {
        Ok(st) => fsops::check_own_output(&st).map_err(|e| e.at(bytes(file)))?,
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(OutputError::from(e).at(bytes(file)).into()),
    }
    let tmp_name = [&name[..], b".merging"].concat();
    let mut tmp = OsString::from(file.as_os_str());
    tmp.push(".merging");
    let tmp = PathBuf::from(tmp);
    let (fd, _, _) = fsops::open_own_output(dir, &tmp_name, Existing::Truncate, MODE)
        .map_err(|e| e.at(bytes(&tmp)))?;
    let res = (|| {
        let mut w = BufWriter::new(File::from(fd));
        for (rank, &ino) in inos.iter().enumerate() {
            let part = part_path(file, rank);
            let fd = fsops::open_own_input(dir, &part_name(&name, rank), ino)
                .map_err(|e| e.at(bytes(&part)))?;
            std::io::copy(&mut File::from(fd), &mut w).map_err(|e| ManifestError::io(&part, e))?;
        }
        let f = w
            .into_inner()
            .map_err(|e| ManifestError::io(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| ManifestError::io(&tmp, e))?;
        fsops::rename_at(dir, &tmp_name, &name)
            .map_err(|e| ManifestError::from(OutputError::from(e).at(bytes(file))))
    })();
    if res.is_err() {
        let _ = fsops::unlink_at(dir, &tmp_name);
        return res;
    }
    for (rank, &ino) in inos.iter().enumerate() {
        let part = part_name(&name, rank);
        if fsops::stat_at(dir, &part).is_ok_and(|st| st.ino == ino) {
            let _ = fsops::unlink_at(dir, &part);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn hostile() -> Vec<Vec<u8>> {
        vec![
            b"plain".to_vec(),
            b"a\nb".to_vec(),
            b"tab\there".to_vec(),
            b"100%".to_vec(),
            b"%41".to_vec(),
            b"cr\rx".to_vec(),
            b" lead and trail ".to_vec(),
            vec![0xff, 0xfe, b'/', 0x80],
            vec![b'n'; 255],
            [vec![b'%'; 255], b"/".to_vec(), vec![0xff; 255]].concat(),
            (1u8..=255).collect(),
            Vec::new(),
        ]
    }

    fn actions() -> Vec<Action> {
        vec![
            Action::Created {
                kind: Kind::Dir,
                replaced: false,
            },
            Action::Created {
                kind: Kind::Fifo,
                replaced: true,
            },
            Action::Copied {
                size: u64::MAX,
                mtime_ns: -1_500_000_000,
            },
            Action::Fixed(Fix::OwnerMode),
            Action::Fixed(Fix::Times),
            Action::Linked {
                to: b"x\ty\n%\xff".to_vec(),
            },
            Action::Removed { dir: true },
            Action::Removed { dir: false },
            Action::Failed {
                errno: 13,
                call: "openat2".into(),
            },
            Action::Skipped(Skip::Exclude),
            Action::Skipped(Skip::Age),
        ]
    }

    #[test]
    fn fields_are_printable_ascii() {
        for p in hostile() {
            let e = encode(&p);
            assert!(e.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{e}");
            assert_eq!(decode(e.as_bytes()).as_deref(), Some(p.as_slice()));
        }
    }

    #[test]
    fn records_round_trip_through_a_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("m");
        let mut want = Vec::new();
        let mut f = File::create(&path)?;
        for (i, p) in hostile().into_iter().enumerate() {
            for a in actions().into_iter().skip(i % 3) {
                let r = record(&a, &p);
                assert_eq!(r.iter().filter(|&&b| b == b'\n').count(), 1);
                f.write_all(&r)?;
                want.push((a, p.clone()));
            }
        }
        drop(f);
        let got: Vec<_> = read(&path)?.collect::<Result<_, _>>()?;
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn dry_run_wording() {
        let w = |a: Action| a.would(b"d/x\n");
        assert_eq!(
            w(Action::Removed { dir: true }).as_deref(),
            Some("would delete: d/x\\x0a/")
        );
        assert_eq!(
            w(Action::Fixed(Fix::Xattrs)).as_deref(),
            Some("would fix xattrs: d/x\\x0a")
        );
        assert_eq!(w(Action::Skipped(Skip::Age)), None);
    }

    #[test]
    fn bad_lines_are_refused() {
        for bad in [
            &b"copied\t1\tpath"[..],
            b"copied\tx\t2\tp",
            b"removed\tdir\ta b",
            b"removed\tdir\t%4",
            b"removed\tdir\t%zz",
            b"nonsense\tp",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn names_that_leave_the_roots_are_refused() {
        for bad in [
            &b"removed\tdir\t.."[..],
            b"removed\tdir\t.",
            b"removed\tdir\ta/../..",
            b"removed\tdir\ta/./b",
            b"removed\tdir\t/etc",
            b"removed\tdir\ta//b",
            b"removed\tdir\ta/",
            b"removed\tdir\t%2E%2E",
            b"removed\tdir\ta%00b",
            b"linked\t..\tx",
        ] {
            let e = parse(bad).err().unwrap_or_default();
            assert!(e.contains("path"), "{}: {e}", String::from_utf8_lossy(bad));
        }
        for good in [
            &b"removed\tdir\t"[..],
            b"removed\tdir\t...",
            b"removed\tdir\t.a/..b",
        ] {
            assert!(parse(good).is_ok(), "{}", String::from_utf8_lossy(good));
        }
    }

    #[test]
    fn a_long_line_is_one_error_and_reading_goes_on() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("m");
        let mut data = b"removed\tdir\ta\nremoved\tdir\t".to_vec();
        data.extend(std::iter::repeat_n(b'x', 3 * LINE_MAX));
        data.extend(b"\nremoved\tdir\tb\n");
        std::fs::write(&path, &data)?;
        let got: Vec<_> = read(&path)?.collect();
        assert_eq!(got.len(), 3);
        let e = got[1]
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("line 2: longer than"), "{e}");
        assert!(matches!(&got[2], Ok((_, p)) if p == b"b"));
        Ok(())
    }

    #[test]
    fn a_file_over_the_limit_is_refused_and_a_fifo_is_not_opened(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("m");
        std::fs::write(&path, b"removed\tdir\ta\nremoved\tdir\tb\n")?;
        let e = read_at(&path, Position::default(), 10).err();
        assert!(
            matches!(e, Some(ManifestError::TooBig { max: 10, .. })),
            "{e:?}"
        );
        let (mut r, _) = read_at(
            &path,
            Position {
                offset: 14,
                line: 1,
            },
            28,
        )?;
        assert!(matches!(r.next(), Some(Ok((_, p))) if p == b"b"));
        assert_eq!(
            r.at(),
            Position {
                offset: 28,
                line: 2
            }
        );
        for bad in ["/dev/zero", "/dev/null"] {
            let e = read(Path::new(bad)).err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains("not a regular file")), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn a_cut_last_line_is_an_error() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("m");
        std::fs::write(&path, b"removed\tdir\ta\nremoved\tdi")?;
        let got: Vec<_> = read(&path)?.collect();
        assert!(got[0].is_ok());
        assert!(got[1].is_err());
        Ok(())
    }

    #[test]
    fn merge_concatenates_in_rank_order() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("m");
        let mut inos = Vec::new();
        for r in 0..3 {
            std::fs::write(part_path(&file, r), format!("removed\tdir\t{r}\n"))?;
            inos.push(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(
                part_path(&file, r),
            )?));
        }
        merge(&file, &inos)?;
        assert_eq!(
            std::fs::read_to_string(&file)?,
            "removed\tdir\t0\nremoved\tdir\t1\nremoved\tdir\t2\n"
        );
        assert!(!part_path(&file, 0).exists());
        Ok(())
    }

    /// A part that is not the file its rank wrote (another inode: swapped)
    /// is not merged, and the parts stay.
    #[test]
    fn merge_refuses_a_swapped_part() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("m");
        std::fs::write(part_path(&file, 0), "removed\tdir\t0\n")?;
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(part_path(&file, 0))?);
        let e = merge(&file, &[ino + 1]).expect_err("merged a swapped part");
        assert!(e.to_string().contains("m.rank0"), "{e}");
        assert!(part_path(&file, 0).exists() && !file.exists());
        assert!(!dir.path().join("m.merging").exists());
        Ok(())
    }
}
