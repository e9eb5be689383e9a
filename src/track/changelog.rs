//! Lustre changelogs as a change source: one reader per MDT, as a
//! registered changelog user, records turned into journal changes by FID
//! (parent FID + name for namespace records, the target FID for data and
//! attribute records), and cleared on the MDT only once the journal has
//! them on disk. A FID is resolved at the final pass with `llapi_fid2path`.
//! The FFI pointers (a reader, a record) are owned by types with Drop.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::raw::{c_int, c_longlong, c_void};
use std::path::Path;

use lustre_sys as sys;

use super::handle::Handle;
use super::journal::Writer;
use super::source::ChangeSource;
use super::{Change, TrackError};
use crate::lustre::{Lustre, LustreConfig};

/// Records taken from one MDT per `read`: memory stays flat however far
/// behind the tracker is.
const BATCH: usize = 65_536;

/// `[0xseq:0xoid:0xver]`, as `lfs fid2path` and `llapi_fid2path` take it.
pub fn fid_text(f: &sys::lu_fid) -> String {
    format!("[{:#x}:{:#x}:{:#x}]", f.f_seq, f.f_oid, f.f_ver)
}

fn is_zero(f: &sys::lu_fid) -> bool {
    *f == sys::lu_fid::default()
}

/// One changelog record, copied out of the library's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub index: u64,
    pub kind: u32,
    pub tfid: sys::lu_fid,
    pub pfid: sys::lu_fid,
    pub name: Vec<u8>,
    /// The rename extension: the renamed object, its old parent and name.
    pub source: Option<(sys::lu_fid, sys::lu_fid, Vec<u8>)>,
}

impl Record {
    /// A record from its bytes: the head, the extensions `cr_flags` names,
    /// then the name(s). None if the bytes are too short for what they say.
    pub fn parse(b: &[u8]) -> Option<Record> {
        let head = std::mem::size_of::<sys::changelog_rec>();
        if b.len() < head {
            return None;
        }
        // SAFETY: `b` holds at least size_of::<changelog_rec>() bytes, and
        // changelog_rec is plain integers (any bit pattern is valid);
        // read_unaligned copies it out whatever the buffer's alignment.
        let r: sys::changelog_rec = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
        let extra = if r.cr_flags & sys::CLF_EXTRA_FLAGS != 0 {
            let at = sys::changelog_rec_offset(r.cr_flags & !sys::CLF_EXTRA_FLAGS, 0);
            u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?)
        } else {
            0
        };
        let at = sys::changelog_rec_offset(r.cr_flags, extra);
        let names = b.get(at..at + r.cr_namelen as usize)?;
        let mut parts = names.splitn(2, |&c| c == 0);
        let name = parts.next().unwrap_or_default().to_vec();
        let source = if r.cr_flags & sys::CLF_RENAME != 0 {
            let ext = b.get(head..head + sys::CHANGELOG_EXT_RENAME_SIZE)?;
            // SAFETY: `ext` is exactly one changelog_ext_rename's bytes
            // (two lu_fids, plain integers); copied out unaligned.
            let e: sys::changelog_ext_rename =
                unsafe { std::ptr::read_unaligned(ext.as_ptr().cast()) };
            let sname = parts.next().unwrap_or_default();
            let sname = sname.split(|&c| c == 0).next().unwrap_or_default().to_vec();
            Some((e.cr_sfid, e.cr_spfid, sname)).filter(|(s, p, _)| !is_zero(s) || !is_zero(p))
        } else {
            None
        };
        Some(Record {
            index: r.cr_index,
            kind: r.cr_type,
            tfid: r.cr_tfid,
            pfid: r.cr_pfid,
            name,
            source,
        })
    }

    /// What the record means for the journal, by identity.
    pub fn changes(&self, fsid: u64) -> Vec<Change> {
        let h = |f: sys::lu_fid| Handle::from_fid(fsid, f);
        let entry = |dir: sys::lu_fid, name: &[u8], ondir: bool| Change::Entry {
            dir: h(dir),
            name: name.to_vec(),
            dirent: true,
            ondir,
        };
        match self.kind {
            sys::CL_CREATE
            | sys::CL_HARDLINK
            | sys::CL_SOFTLINK
            | sys::CL_MKNOD
            | sys::CL_UNLINK
            | sys::CL_EXT => vec![entry(self.pfid, &self.name, false)],
            sys::CL_MKDIR | sys::CL_RMDIR => vec![entry(self.pfid, &self.name, true)],
            // A rename (and a migration, which gives the object a new FID)
            // changes the name it leaves and the name it takes.
            sys::CL_RENAME | sys::CL_MIGRATE => {
                let mut v = Vec::new();
                if !self.name.is_empty() {
                    v.push(entry(self.pfid, &self.name, false));
                }
                if let Some((_, spfid, sname)) = &self.source {
                    v.push(entry(*spfid, sname, false));
                }
                if v.is_empty() {
                    v.push(Change::Itself(h(self.tfid)));
                }
                v
            }
            sys::CL_CLOSE
            | sys::CL_LAYOUT
            | sys::CL_TRUNC
            | sys::CL_SETATTR
            | sys::CL_SETXATTR
            | sys::CL_MTIME
            | sys::CL_CTIME
            | sys::CL_FLRW
            | sys::CL_RESYNC => {
                vec![Change::Itself(h(self.tfid))]
            }
            // Nothing a copy keeps: markers, opens, reads, atime, HSM state.
            sys::CL_MARK
            | sys::CL_OPEN
            | sys::CL_ATIME
            | sys::CL_HSM
            | sys::CL_GETXATTR
            | sys::CL_DN_OPEN => Vec::new(),
            t => vec![Change::Loss(format!(
                "changelog record {} has a type this lmpi does not know ({t})",
                self.index
            ))],
        }
    }
}

/// A changelog reader the library started, ended exactly once on drop.
struct Reader<'a> {
    ptr: *mut c_void,
    api: &'a sys::Api,
}

impl<'a> Reader<'a> {
    /// Read `mdt`'s changelog from record `start` on, without blocking.
    fn start(api: &'a sys::Api, mdt: &CStr, start: u64) -> Result<Reader<'a>, i32> {
        let mut ptr: *mut c_void = std::ptr::null_mut();
        let from = c_longlong::try_from(start).unwrap_or(c_longlong::MAX);
        // SAFETY: `ptr` is a live local the library writes one pointer to;
        // `mdt` is NUL-terminated and outlives the call. On success the
        // reader is owned at once by the returned `Reader`.
        let rc = unsafe { (api.changelog_start)(&mut ptr, 0, mdt.as_ptr(), from) };
        if rc < 0 || ptr.is_null() {
            return Err(if rc < 0 { -rc } else { libc::EIO });
        }
        Ok(Reader { ptr, api })
    }

    /// The next record, None at the end of the log.
    fn next(&mut self) -> Result<Option<Record>, i32> {
        let mut rec: *mut sys::changelog_rec = std::ptr::null_mut();
        // SAFETY: `self.ptr` is the live reader this `Reader` owns; `rec`
        // is a live local the library writes one pointer to.
        let rc = unsafe { (self.api.changelog_recv)(self.ptr, &mut rec) };
        if rc == 1 {
            return Ok(None);
        }
        if rc < 0 || rec.is_null() {
            return Err(if rc < 0 { -rc } else { libc::EIO });
        }
        let owned = RecordPtr {
            ptr: rec,
            api: self.api,
        };
        owned.parse().map(Some).ok_or(libc::EPROTO)
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came non-NULL from changelog_start, is ended only
        // here, once; `api` is borrowed for the reader's whole life.
        unsafe { (self.api.changelog_fini)(&mut self.ptr) };
    }
}

/// A record the library allocated, freed exactly once on drop.
struct RecordPtr<'a> {
    ptr: *mut sys::changelog_rec,
    api: &'a sys::Api,
}

impl RecordPtr<'_> {
    fn parse(&self) -> Option<Record> {
        // SAFETY: `ptr` is a live record from changelog_recv, at least a
        // head long; its length is the offset its own flags give plus
        // cr_namelen (lustre_user.h's changelog_rec_size + namelen), which
        // is what the slice covers. The extra-flags word is read only when
        // CLF_EXTRA_FLAGS says it is there, and it lies before the name.
        let bytes = unsafe {
            let r = std::ptr::read_unaligned(self.ptr);
            let extra = if r.cr_flags & sys::CLF_EXTRA_FLAGS != 0 {
                let at = sys::changelog_rec_offset(r.cr_flags & !sys::CLF_EXTRA_FLAGS, 0);
                std::ptr::read_unaligned(self.ptr.cast::<u8>().add(at).cast::<u64>())
            } else {
                0
            };
            let len = sys::changelog_rec_offset(r.cr_flags, extra) + r.cr_namelen as usize;
            std::slice::from_raw_parts(self.ptr.cast::<u8>(), len)
        };
        Record::parse(bytes)
    }
}

impl Drop for RecordPtr<'_> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came non-NULL from changelog_recv, no copy of it is
        // kept (`parse` copies the bytes out), and it is freed only here.
        unsafe { (self.api.changelog_free)(&mut self.ptr) };
    }
}

fn c_string(what: &str, s: &str) -> Result<CString, TrackError> {
    CString::new(s).map_err(|_| TrackError::Other(format!("{what} {s:?}: contains a NUL")))
}

/// One MDT's changelog, and how far it has been read, journaled, cleared.
struct Mdt {
    name: String,
    c_name: CString,
    /// The index the next record must have (None: not known yet).
    next: Option<u64>,
    read: Option<u64>,
    noted: Option<u64>,
    cleared: Option<u64>,
    last_error: Option<String>,
}

pub struct Changelog {
    lustre: Lustre,
    user: CString,
    fsid: u64,
    mdts: Vec<Mdt>,
}

impl Changelog {
    /// Readers for `mdts` as changelog user `user`; each MDT's changelog
    /// is opened once now, so a wrong name fails before the journal starts.
    pub fn open(
        lustre: Lustre,
        user: &str,
        mdts: &[String],
        fsid: u64,
    ) -> Result<Changelog, TrackError> {
        if mdts.is_empty() {
            return Err(TrackError::Other(
                "a changelog user is set but no MDT is named (--mdt or [lustre] changelog_mdts)"
                    .into(),
            ));
        }
        let mut v = Vec::new();
        for name in mdts {
            let c_name = c_string("MDT", name)?;
            Reader::start(lustre.api(), &c_name, 0)
                .map_err(|e| TrackError::os(Path::new(name), "llapi_changelog_start", e))?;
            v.push(Mdt {
                name: name.clone(),
                c_name,
                next: None,
                read: None,
                noted: None,
                cleared: None,
                last_error: None,
            });
        }
        Ok(Changelog {
            user: c_string("changelog user", user)?,
            lustre,
            fsid,
            mdts: v,
        })
    }

    /// Go on from where journal `j` says each MDT was read up to. An
    /// existing journal that does not say is a loss: what came between
    /// cannot be known.
    pub fn resume(&mut self, j: &Writer) -> Vec<Change> {
        let Some(upto) = j.resumed() else {
            return Vec::new();
        };
        let mut lost = Vec::new();
        for m in &mut self.mdts {
            match upto.get(&m.name) {
                Some(&i) => {
                    (m.next, m.read, m.noted, m.cleared) = (Some(i + 1), Some(i), Some(i), None);
                }
                None => lost.push(Change::Loss(format!(
                    "the journal does not say how far {}'s changelog was read",
                    m.name
                ))),
            }
        }
        lost
    }

    /// Up to BATCH records of one MDT. Errors are reported (once each) and
    /// retried at the next read: nothing is skipped, as `next` stays.
    fn read_mdt(api: &sys::Api, fsid: u64, m: &mut Mdt, out: &mut Vec<Change>) -> usize {
        let mut n = 0;
        let r = Reader::start(api, &m.c_name, m.next.unwrap_or(0)).and_then(|mut r| {
            while n < BATCH {
                let Some(rec) = r.next()? else { break };
                n += 1;
                match m.next {
                    Some(want) if rec.index < want => continue,
                    Some(want) if rec.index > want => out.push(Change::Loss(format!(
                        "{}'s changelog skips records {want} to {} (cleared by another, or the user was deregistered)",
                        m.name,
                        rec.index - 1
                    ))),
                    _ => {}
                }
                m.next = Some(rec.index + 1);
                m.read = Some(rec.index);
                out.extend(rec.changes(fsid));
            }
            Ok(())
        });
        match r {
            Ok(()) => m.last_error = None,
            Err(e) => {
                let msg = format!(
                    "{}: reading the changelog: {}",
                    m.name,
                    crate::fsops::strerror(e)
                );
                if m.last_error.as_ref() != Some(&msg) {
                    eprintln!("lmpi track: {msg} (retrying)");
                }
                m.last_error = Some(msg);
            }
        }
        n
    }
}

impl ChangeSource for Changelog {
    fn describe(&self) -> String {
        let names: Vec<&str> = self.mdts.iter().map(|m| m.name.as_str()).collect();
        format!(
            "Lustre changelogs of {} as user {}",
            names.join(", "),
            self.user.to_string_lossy()
        )
    }

    fn read(&mut self, timeout_ms: i32, out: &mut Vec<Change>) -> Result<(), TrackError> {
        let mut got = 0;
        for m in &mut self.mdts {
            got += Self::read_mdt(self.lustre.api(), self.fsid, m, out);
        }
        // A changelog cannot be polled without blocking in the library:
        // an idle one is looked at again after the timeout.
        if got == 0 && timeout_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(timeout_ms as u64));
        }
        Ok(())
    }

    /// The records read are in the journal, synced; only then cleared.
    fn checkpoint(&mut self, journal: &mut Writer) -> Result<(), TrackError> {
        for m in &mut self.mdts {
            if let Some(i) = m.read.filter(|&i| Some(i) != m.noted) {
                journal.note_upto(&m.name, i);
                m.noted = Some(i);
            }
        }
        journal.flush()?;
        for m in &mut self.mdts {
            let Some(i) = m.noted.filter(|&i| Some(i) != m.cleared) else {
                continue;
            };
            let end = c_longlong::try_from(i).unwrap_or(c_longlong::MAX);
            let api = self.lustre.api();
            // SAFETY: both strings are NUL-terminated CStrings that outlive
            // the call, which only reads them.
            let rc = unsafe { (api.changelog_clear)(m.c_name.as_ptr(), self.user.as_ptr(), end) };
            if rc < 0 {
                // Kept on the MDT, cleared with the next checkpoint.
                eprintln!(
                    "lmpi track: {}: llapi_changelog_clear up to {i}: {}",
                    m.name,
                    crate::fsops::strerror(-rc)
                );
            } else {
                m.cleared = Some(i);
            }
        }
        Ok(())
    }
}

/// The changelog backend if `source` is on Lustre (as the copy passes
/// decide it) and a changelog user is configured; None: use fanotify.
pub fn choose(
    cfg: &LustreConfig,
    source: BorrowedFd,
) -> Result<Option<(Lustre, String)>, TrackError> {
    let Some(user) = cfg.changelog_user.clone() else {
        return Ok(None);
    };
    if cfg.mode == crate::lustre::Mode::Off {
        return Ok(None);
    }
    match Lustre::load(cfg) {
        Ok(l) if l.is_lustre(source) => Ok(Some((l, user))),
        Ok(_) => {
            eprintln!(
                "lmpi track: changelog_user is set but the source is not on Lustre: using fanotify"
            );
            Ok(None)
        }
        // Not Lustre by its statfs either: nothing to read changelogs of.
        Err(_) if !crate::lustre::statfs_is_lustre(source) => Ok(None),
        Err(e) => Err(TrackError::Other(format!(
            "changelog_user is set and the source is on Lustre: {e}"
        ))),
    }
}

/// FIDs to paths in the source tree, through `llapi_fid2path`.
pub struct FidPaths {
    lustre: Lustre,
    /// The source root's path: which mount fid2path asks.
    device: CString,
    /// The source root relative to its mount ("" if it is the mount root).
    prefix: Vec<u8>,
}

impl FidPaths {
    pub fn new(cfg: &LustreConfig, root: BorrowedFd) -> Result<FidPaths, TrackError> {
        let lustre = Lustre::load(cfg).map_err(|e| TrackError::Other(e.to_string()))?;
        let link = format!("/proc/self/fd/{}", root.as_raw_fd());
        let p = std::fs::read_link(&link).map_err(|e| TrackError::io(Path::new(&link), e))?;
        let device = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
            .map_err(|_| TrackError::Other("source root: a path with a NUL".into()))?;
        let mut fid = sys::lu_fid::default();
        // SAFETY: `root` is borrowed, so open; `fid` is a live local the
        // library writes one lu_fid to.
        let rc = unsafe { (lustre.api().fd2fid)(root.as_raw_fd(), &mut fid) };
        if rc < 0 {
            return Err(TrackError::os(&p, "llapi_fd2fid", -rc));
        }
        let mut f = FidPaths {
            lustre,
            device,
            prefix: Vec::new(),
        };
        f.prefix = f
            .fid2path(&fid)?
            .ok_or_else(|| TrackError::os(&p, "llapi_fid2path", libc::ENOENT))?;
        Ok(f)
    }

    /// Where `fid` is now, relative to its mount; None if it is gone.
    fn fid2path(&self, fid: &sys::lu_fid) -> Result<Option<Vec<u8>>, TrackError> {
        let text = fid_text(fid);
        let c_fid = c_string("FID", &text)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        let (mut recno, mut linkno): (c_longlong, c_int) = (-1, 0);
        // SAFETY: the two strings are NUL-terminated CStrings alive across
        // the call; `buf` is writable for the length passed; `recno` and
        // `linkno` are live locals.
        let rc = unsafe {
            (self.lustre.api().fid2path)(
                self.device.as_ptr(),
                c_fid.as_ptr(),
                buf.as_mut_ptr().cast(),
                (buf.len() - 1) as c_int,
                &mut recno,
                &mut linkno,
            )
        };
        match -rc {
            0 => {}
            libc::ENOENT | libc::ESTALE => return Ok(None),
            e => return Err(TrackError::os(Path::new(&text), "llapi_fid2path", e)),
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let p = &buf[..end];
        let start = p.iter().position(|&b| b != b'/').unwrap_or(p.len());
        Ok(Some(p[start..].to_vec()))
    }

    /// Where `fid` is now, relative to the source root; None if it is gone
    /// or outside the tree.
    pub fn path(&self, fid: &sys::lu_fid) -> Result<Option<Vec<u8>>, TrackError> {
        let Some(p) = self.fid2path(fid)? else {
            return Ok(None);
        };
        if self.prefix.is_empty() || p == self.prefix {
            return Ok(Some(if p == self.prefix { Vec::new() } else { p }));
        }
        Ok(p.strip_prefix(self.prefix.as_slice())
            .and_then(|r| r.strip_prefix(b"/"))
            .map(<[u8]>::to_vec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fid(oid: u32) -> sys::lu_fid {
        sys::lu_fid {
            f_seq: 0x2_0000_0401,
            f_oid: oid,
            f_ver: 0,
        }
    }

    /// A record's bytes as the library hands it out (CLF_VERSION|CLF_RENAME).
    fn raw(
        index: u64,
        kind: u32,
        t: u32,
        p: u32,
        name: &[u8],
        src: Option<(u32, u32, &[u8])>,
    ) -> Vec<u8> {
        let mut names = name.to_vec();
        if let Some((_, _, s)) = src {
            names.push(0);
            names.extend_from_slice(s);
        }
        let head = sys::changelog_rec {
            cr_namelen: names.len() as u16,
            cr_flags: sys::CLF_VERSION | sys::CLF_RENAME,
            cr_type: kind,
            cr_index: index,
            cr_prev: 0,
            cr_time: 0,
            cr_tfid: fid(t),
            cr_pfid: fid(p),
        };
        let ext = sys::changelog_ext_rename {
            cr_sfid: src.map_or_else(Default::default, |s| fid(s.0)),
            cr_spfid: src.map_or_else(Default::default, |s| fid(s.1)),
        };
        let mut b = Vec::new();
        // SAFETY: both are repr(C) plain integers without padding; their
        // bytes are read for the struct's size only.
        unsafe {
            b.extend_from_slice(std::slice::from_raw_parts(
                (&head as *const sys::changelog_rec).cast::<u8>(),
                64,
            ));
            b.extend_from_slice(std::slice::from_raw_parts(
                (&ext as *const sys::changelog_ext_rename).cast::<u8>(),
                32,
            ));
        }
        b.extend_from_slice(&names);
        b
    }

    fn entry(dir: u32, name: &[u8], ondir: bool) -> Change {
        Change::Entry {
            dir: Handle::from_fid(9, fid(dir)),
            name: name.to_vec(),
            dirent: true,
            ondir,
        }
    }

    #[test]
    fn every_record_type_maps_by_identity() {
        let itself = |t| vec![Change::Itself(Handle::from_fid(9, fid(t)))];
        let cases: Vec<(u32, Vec<Change>)> = vec![
            (sys::CL_CREATE, vec![entry(1, b"n", false)]),
            (sys::CL_MKDIR, vec![entry(1, b"n", true)]),
            (sys::CL_HARDLINK, vec![entry(1, b"n", false)]),
            (sys::CL_SOFTLINK, vec![entry(1, b"n", false)]),
            (sys::CL_MKNOD, vec![entry(1, b"n", false)]),
            (sys::CL_UNLINK, vec![entry(1, b"n", false)]),
            (sys::CL_RMDIR, vec![entry(1, b"n", true)]),
            (sys::CL_EXT, vec![entry(1, b"n", false)]),
            (sys::CL_SETATTR, itself(5)),
            (sys::CL_SETXATTR, itself(5)),
            (sys::CL_MTIME, itself(5)),
            (sys::CL_CTIME, itself(5)),
            (sys::CL_TRUNC, itself(5)),
            (sys::CL_CLOSE, itself(5)),
            (sys::CL_LAYOUT, itself(5)),
            (sys::CL_ATIME, vec![]),
            (sys::CL_MARK, vec![]),
        ];
        for (kind, want) in cases {
            let r = Record::parse(&raw(3, kind, 5, 1, b"n", None)).expect("parses");
            assert_eq!((r.index, r.changes(9)), (3, want), "type {kind}");
        }
        let r = Record::parse(&raw(4, sys::CL_RENAME, 0, 1, b"new", Some((5, 2, b"old"))))
            .expect("parses");
        assert_eq!(
            r.changes(9),
            vec![entry(1, b"new", false), entry(2, b"old", false)]
        );
        let r = Record::parse(&raw(5, 99, 5, 1, b"", None)).expect("parses");
        assert!(matches!(r.changes(9)[..], [Change::Loss(_)]));
        // Shorter than its head or its name says: not a record.
        let b = raw(6, sys::CL_CREATE, 5, 1, b"name", None);
        assert_eq!(Record::parse(&b[..b.len() - 1]), None);
        assert_eq!(fid_text(&fid(5)), "[0x200000401:0x5:0x0]");
    }
}
