//! fanotify as a change source for any local filesystem (tmpfs, ext4, XFS):
//! one mark on the whole filesystem (`FAN_MARK_FILESYSTEM`), reported by
//! identity (`FAN_REPORT_DFID_NAME | FAN_REPORT_FID`), so every event names
//! the directory handle and the entry name it happened under.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::handle::{last_errno, Handle};
use super::{Change, TrackError};

/// What the tracker asks to hear about: entries created, removed and
/// renamed (hardlinks made and removed included), data written or
/// truncated, and attribute changes (mode, owner, times, xattrs, ACLs),
/// on files and directories alike.
const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_ATTRIB
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ONDIR;

/// Events that change a directory's entries.
const DIRENT: u64 = libc::FAN_CREATE | libc::FAN_DELETE | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO;

/// fanotify_event_metadata's size (event_len u32, vers u8, reserved u8,
/// metadata_len u16, mask u64, fd i32, pid i32).
const META_LEN: usize = 24;

pub struct Fanotify {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Fanotify {
    /// Watch the whole filesystem `root` is on (as root: CAP_SYS_ADMIN).
    pub fn watch(root: &Path) -> Result<Fanotify, TrackError> {
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_REPORT_DFID_NAME
            | libc::FAN_REPORT_FID;
        // SAFETY: fanotify_init takes two integers and touches no memory of ours.
        let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as u32) };
        if fd < 0 {
            return Err(TrackError::os(root, "fanotify_init", last_errno()));
        }
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c_root =
            std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(root.as_os_str()))
                .map_err(|_| TrackError::os(root, "fanotify_mark", libc::EINVAL))?;
        // SAFETY: `fd` is our fanotify fd and `c_root` a NUL-terminated
        // string that lives across the call; the kernel only reads it.
        let r = unsafe {
            libc::fanotify_mark(
                fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                MASK,
                libc::AT_FDCWD,
                c_root.as_ptr(),
            )
        };
        if r < 0 {
            return Err(TrackError::os(root, "fanotify_mark", last_errno()));
        }
        Ok(Fanotify {
            fd,
            buf: vec![0; 256 << 10],
        })
    }

    /// Wait up to `timeout_ms` for events, then take every one queued.
    pub fn read(&mut self, timeout_ms: i32, out: &mut Vec<Change>) -> Result<(), TrackError> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, alive across the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if n < 0 && last_errno() != libc::EINTR {
            return Err(TrackError::os(Path::new("fanotify"), "poll", last_errno()));
        }
        loop {
            // SAFETY: `buf` is ours and writable for its whole length.
            let got = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                )
            };
            if got < 0 {
                return match last_errno() {
                    libc::EAGAIN | libc::EINTR => Ok(()),
                    e => Err(TrackError::os(Path::new("fanotify"), "read", e)),
                };
            }
            if got == 0 {
                return Ok(());
            }
            parse_events(&self.buf[..got as usize], out);
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Every event in one read's bytes. An event the parser does not
/// understand is a loss, never a silent skip: the final pass then walks.
pub(super) fn parse_events(mut b: &[u8], out: &mut Vec<Change>) {
    while b.len() >= META_LEN {
        let len = u32_at(b, 0).unwrap_or(0) as usize;
        let meta_len = u16_at(b, 6).unwrap_or(0) as usize;
        if len < META_LEN || len > b.len() || meta_len < META_LEN || meta_len > len {
            out.push(Change::Loss("an event the parser cannot read".into()));
            return;
        }
        let mask = u64_at(b, 8).unwrap_or(0);
        let fd = u32_at(b, 16).unwrap_or(0) as i32;
        if fd >= 0 {
            // SAFETY: an event fd the kernel gave us (none in FID mode, but
            // closing it is ours if one comes).
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        out.push(match mask & libc::FAN_Q_OVERFLOW {
            0 => event(&b[meta_len..len], mask),
            _ => Change::Loss("the kernel's event queue overflowed".into()),
        });
        b = &b[len..];
    }
}

/// One event's info records: its directory and name, or (an event on a
/// directory itself, or one without a name) the object alone.
fn event(mut info: &[u8], mask: u64) -> Change {
    let (dirent, ondir) = (mask & DIRENT != 0, mask & libc::FAN_ONDIR != 0);
    let mut object = None;
    while info.len() >= 4 {
        let kind = info[0];
        let len = u16_at(info, 2).unwrap_or(0) as usize;
        if len < 4 || len > info.len() {
            break;
        }
        let rec = &info[4..len];
        match kind {
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME => {
                if let Some((dir, name)) = fid_and_name(rec) {
                    if name.is_empty() || name == b"." {
                        return Change::Itself(dir);
                    }
                    return Change::Entry {
                        dir,
                        name,
                        dirent,
                        ondir,
                    };
                }
            }
            libc::FAN_EVENT_INFO_TYPE_FID | libc::FAN_EVENT_INFO_TYPE_DFID => {
                object = fid_and_name(rec).map(|(h, _)| h);
            }
            _ => {}
        }
        info = &info[len..];
    }
    match object {
        Some(h) => Change::Itself(h),
        None => Change::Loss("an event without a handle".into()),
    }
}

/// fsid (2 x i32), struct file_handle, then an optional NUL-ended name.
fn fid_and_name(rec: &[u8]) -> Option<(Handle, Vec<u8>)> {
    let fsid = u64_at(rec, 0)?;
    let hb = u32_at(rec, 8)? as usize;
    let kind = u32_at(rec, 12)? as i32;
    let bytes = rec.get(16..16 + hb)?.to_vec();
    let rest = &rec[16 + hb..];
    let name = rest.split(|&c| c == 0).next().unwrap_or_default().to_vec();
    Some((Handle { fsid, kind, bytes }, name))
}
