//! Resumable big files: what a stopped chunked copy leaves behind.
//!
//! A big file is written under `.lmpi-resume-<source inode, hex>.part` in its
//! target directory. The xattr `trusted.lmpi.resume` on that partial file
//! names the source (identity, size, mtime, ctime and its name) and the
//! chunks that are in, as one text line an admin can read with
//! `getfattr -n trusted.lmpi.resume`. The record is written empty when the
//! file is created and filled in after a stop, once every rank has synced
//! the partials it wrote into: it never claims more than the file holds.
//!
//! Only root can write `trusted.*`, so a file under a partial's name without
//! the record is not ours: lmpi never trusts, opens for resuming or removes
//! it (a big file then goes under a plain temp name; the final or delete
//! pass removes it like any entry the source lacks). The partial file is
//! mode 0600 until it is complete. The next copy or final pass resumes a
//! partial whose record matches the source exactly and starts over
//! otherwise; one that will not be resumed (source gone, changed, small,
//! hardlinked, or already copied whole) is removed by the pass that lists
//! its directory.

use std::os::fd::BorrowedFd;

use percent_encoding::{percent_decode, percent_encode, AsciiSet, CONTROLS};

use crate::fsops::{self, Kind, OsError, Stat, Time};

/// Where the record lives on the partial file.
pub const KEY: &[u8] = b"trusted.lmpi.resume";
const MAGIC: &str = "lmpi-resume-1";
const PREFIX: &[u8] = b".lmpi-resume-";
const SUFFIX: &[u8] = b".part";
/// Bytes of a record lmpi writes at most: every filesystem that keeps
/// xattrs takes this much (ext4 without ea_inode: one 4 KiB block).
const MAX_RECORD: usize = 3072;
/// The name goes last, so only what would end or split a field is escaped.
const NAME_ESCAPES: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(0x7f);

/// The partial file of source inode `ino`.
pub fn partial_name(ino: u64) -> Vec<u8> {
    format!(".lmpi-resume-{ino:016x}.part").into_bytes()
}

/// A name of the partial-file pattern (16 lowercase hex digits between
/// prefix and suffix), as `partial_name` makes them.
pub fn is_partial_name(name: &[u8]) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|n| n.strip_suffix(SUFFIX))
        .is_some_and(|hex| {
            hex.len() == 16 && hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// What the source file was when the partial copy began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: Time,
    pub ctime: Time,
}

impl Source {
    pub fn of(s: &Stat) -> Source {
        Source {
            dev: s.dev,
            ino: s.ino,
            size: s.size,
            mtime: s.mtime,
            ctime: s.ctime,
        }
    }
}

/// Chunk numbers that are in: sorted, disjoint, non-touching half-open ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunks(Vec<(u64, u64)>);

impl Chunks {
    pub fn contains(&self, i: u64) -> bool {
        self.0.iter().any(|&(a, z)| a <= i && i < z)
    }

    pub fn insert(&mut self, i: u64) {
        if self.contains(i) {
            return;
        }
        // The first range ending at or after i: i extends it at its end,
        // or starts just before it, or goes in front of it alone.
        let at = self.0.partition_point(|&(_, z)| z < i);
        let v = &mut self.0;
        match v.get(at).copied() {
            Some((_, z)) if z == i => {
                v[at].1 = i + 1;
                if v.get(at + 1).is_some_and(|&(a, _)| a == i + 1) {
                    v[at].1 = v[at + 1].1;
                    v.remove(at + 1);
                }
            }
            Some((a, _)) if a == i + 1 => v[at].0 = i,
            _ => v.insert(at, (i, i + 1)),
        }
    }

    /// Half-open ranges, in order.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// `0-4,7`: inclusive ranges, as an admin reads them.
    fn to_text(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|&(a, z)| match z - a {
                1 => a.to_string(),
                _ => format!("{a}-{}", z - 1),
            })
            .collect();
        parts.join(",")
    }

    fn parse(t: &str) -> Option<Chunks> {
        let mut c = Chunks::default();
        for part in t.split(',').filter(|p| !p.is_empty()) {
            let (a, z) = match part.split_once('-') {
                Some((a, z)) => (a.parse::<u64>().ok()?, z.parse::<u64>().ok()?),
                None => {
                    let a = part.parse::<u64>().ok()?;
                    (a, a)
                }
            };
            // In order and apart, as written: anything else is not our record.
            if z < a || c.0.last().is_some_and(|&(_, pz)| a <= pz) {
                return None;
            }
            c.0.push((a, z.checked_add(1)?));
        }
        Some(c)
    }
}

/// The record on a partial file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub source: Source,
    /// The source file's name in its directory.
    pub name: Vec<u8>,
    /// Chunk size in bytes: chunk `i` is `[i * chunk, (i + 1) * chunk)`.
    pub chunk: u64,
    pub done: Chunks,
}

impl Record {
    pub fn new(s: &Stat, name: &[u8], chunk: u64) -> Record {
        Record {
            source: Source::of(s),
            name: name.to_vec(),
            chunk: chunk.max(1),
            done: Chunks::default(),
        }
    }

    /// Bytes of the file the listed chunks hold.
    pub fn done_bytes(&self) -> u64 {
        let size = self.source.size;
        let at = |i: u64| i.saturating_mul(self.chunk).min(size);
        self.done.0.iter().map(|&(a, z)| at(z) - at(a)).sum()
    }

    /// The record as one text line, short enough for an xattr every
    /// filesystem takes: when the list of chunks is too long (scattered
    /// chunks of a huge file), the ranges at its end are left out, a subset
    /// of the truth, so still safe. None only if even no ranges do not fit.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut r = self.clone();
        loop {
            if let Some(line) = r.encode_all() {
                return Some(line);
            }
            let n = r.done.0.len();
            if n == 0 {
                return None;
            }
            // Halve the list: a record of thousands of ranges fits in a few steps.
            r.done.0.truncate(n / 2);
        }
    }

    fn encode_all(&self) -> Option<Vec<u8>> {
        let s = &self.source;
        let t = |t: Time| format!("{}.{:09}", t.sec, t.nsec);
        let line = format!(
            "{MAGIC} dev={} ino={} size={} mtime={} ctime={} chunk={} done={} name={}",
            s.dev,
            s.ino,
            s.size,
            t(s.mtime),
            t(s.ctime),
            self.chunk,
            self.done.to_text(),
            percent_encode(&self.name, NAME_ESCAPES),
        );
        (line.len() <= MAX_RECORD).then(|| line.into_bytes())
    }

    /// A record lmpi wrote, or None for anything else.
    pub fn decode(b: &[u8]) -> Option<Record> {
        let line = std::str::from_utf8(b).ok()?;
        let mut f = line.split(' ');
        if f.next()? != MAGIC {
            return None;
        }
        let mut field = |key: &str| f.next()?.strip_prefix(key)?.strip_prefix('=');
        let num = |v: Option<&str>| v?.parse::<u64>().ok();
        let time = |v: Option<&str>| -> Option<Time> {
            let (sec, nsec) = v?.split_once('.')?;
            let nsec = nsec.parse::<u32>().ok().filter(|&n| n < 1_000_000_000)?;
            Some(Time {
                sec: sec.parse().ok()?,
                nsec,
            })
        };
        let source = Source {
            dev: num(field("dev"))?,
            ino: num(field("ino"))?,
            size: num(field("size"))?,
            mtime: time(field("mtime"))?,
            ctime: time(field("ctime"))?,
        };
        let chunk = num(field("chunk")).filter(|&c| c > 0)?;
        let done = Chunks::parse(field("done")?)?;
        let name: Vec<u8> = percent_decode(field("name")?.as_bytes()).collect();
        // One name in the directory, never a path to walk.
        let one_name = !name.contains(&b'/') && name != b"." && name != b"..";
        if !one_name
            || name.is_empty()
            || done
                .0
                .last()
                .is_some_and(|&(_, z)| z > source.size.div_ceil(chunk))
        {
            return None;
        }
        Some(Record {
            source,
            name,
            chunk,
            done,
        })
    }

    /// The record of partial file `name` in `dir` (read without following a
    /// link; through `fd` when given): `Ok(None)` if it carries none lmpi
    /// wrote (then it is not ours), `Err` if that cannot be told.
    pub fn read(
        fd: Option<BorrowedFd>,
        dir: BorrowedFd,
        name: &[u8],
    ) -> Result<Option<Record>, OsError> {
        match fsops::get_xattr(fd, dir, name, KEY) {
            Ok(raw) => Ok(Record::decode(&raw)),
            Err(e) if matches!(e.errno, libc::ENODATA | libc::EOPNOTSUPP | libc::EPERM) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether this is the record of partial file `name`.
    pub fn names(&self, name: &[u8]) -> bool {
        partial_name(self.source.ino) == name
    }
}

/// Whether the delete pass keeps partial `name`: ours (it carries our
/// record) and its source file is still that inode; kept too when that
/// cannot be told. One that is not ours is an entry like any other.
pub fn still_wanted(sd: BorrowedFd, dd: BorrowedFd, name: &[u8]) -> bool {
    let r = match Record::read(None, dd, name) {
        Ok(Some(r)) if r.names(name) => r,
        Ok(_) => return false,
        Err(_) => return true,
    };
    match fsops::stat_at(sd, &r.name) {
        Ok(s) => s.kind == Kind::File && s.ino == r.source.ino && s.dev == r.source.dev,
        Err(e) => !e.is_not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stat() -> Stat {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        use std::os::fd::AsFd;
        fsops::stat_at(d.as_fd(), b"f").unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(partial_name(0xabc), b".lmpi-resume-0000000000000abc.part");
        assert!(is_partial_name(&partial_name(u64::MAX)));
        assert!(!is_partial_name(b".lmpi-resume-abc.part"));
        assert!(!is_partial_name(b".lmpi-resume-000000000000zabc.part"));
        assert!(!is_partial_name(b".lmpi-resume-0000000000000ABC.part"));
        assert!(!is_partial_name(b".lmpi-00000000000000ff-2-7.part"));
    }

    #[test]
    fn record_roundtrip_with_odd_names() {
        let s = stat();
        for name in [
            &b"plain"[..],
            b"sp ace",
            b"100%",
            b"nl\nx\xff\x01",
            b"=done=1",
        ] {
            let mut r = Record::new(&s, name, 1 << 20);
            r.done.insert(0);
            let back = Record::decode(&r.encode().unwrap()).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn a_scattered_record_is_cut_to_fit_and_stays_a_subset() {
        let s = stat();
        let mut r = Record::new(&s, b"f", 1);
        r.source.size = 1 << 20;
        for i in (0..20_000).step_by(2) {
            r.done.insert(i);
        }
        let line = r.encode().expect("fits once cut");
        assert!(line.len() <= MAX_RECORD);
        let back = Record::decode(&line).unwrap();
        assert!(!back.done.ranges().is_empty());
        assert!(back
            .done
            .ranges()
            .iter()
            .all(|&(a, z)| (a..z).all(|i| r.done.contains(i))));
    }

    #[test]
    fn foreign_or_damaged_records_are_refused() {
        let s = stat();
        let good = String::from_utf8(Record::new(&s, b"f", 4).encode().unwrap()).unwrap();
        assert!(Record::decode(good.as_bytes()).is_some());
        for bad in [
            good.replace("lmpi-resume-1", "lmpi-resume-2"),
            good.replace("chunk=4", "chunk=0"),
            good.replace("done=", "done=5-3"),
            good.replace("done=", "done=9"),
            good.replace(" name=f", ""),
            good.replace(" name=f", " name=a/f"),
            good.replace(" name=f", " name=a%2Ff"),
            good.replace(" name=f", " name=.."),
            good.replace("mtime=", "mtime=x"),
        ] {
            assert!(Record::decode(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn chunks_match_a_plain_set(ins in proptest::collection::vec(0u64..64, 0..80)) {
            let mut c = Chunks::default();
            let mut want = std::collections::BTreeSet::new();
            for i in ins {
                c.insert(i);
                want.insert(i);
            }
            for i in 0..70 {
                prop_assert_eq!(c.contains(i), want.contains(&i));
            }
            for w in c.ranges().windows(2) {
                prop_assert!(w[0].1 < w[1].0, "ranges touch or overlap: {:?}", c);
            }
            prop_assert_eq!(Chunks::parse(&c.to_text()), Some(c.clone()));
        }
    }
}
