//! An inode by identity: a filesystem id and the kernel's file handle for
//! it (what fanotify reports), opened again later with
//! `open_by_handle_at`, so a change is never tied to a path resolved when
//! it happened. A Lustre FID (from a changelog) is a handle of its own
//! kind, resolved with `llapi_fid2path` instead.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::fsops::OsError;

/// Longest handle the kernel makes (MAX_HANDLE_SZ).
pub const MAX_HANDLE: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Handle {
    /// The filesystem's id (statfs f_fsid) as fanotify reports it.
    pub fsid: u64,
    pub kind: i32,
    pub bytes: Vec<u8>,
}

/// `kind` of a handle that is a Lustre FID: no kernel handle type is
/// negative, so the two never meet.
pub const FID_KIND: i32 = -1;

impl Handle {
    /// FID `fid` of the filesystem `fsid`: seq, oid, ver big-endian, so the
    /// journal's hex reads as the FID does.
    pub fn from_fid(fsid: u64, fid: lustre_sys::lu_fid) -> Handle {
        let mut bytes = fid.f_seq.to_be_bytes().to_vec();
        bytes.extend_from_slice(&fid.f_oid.to_be_bytes());
        bytes.extend_from_slice(&fid.f_ver.to_be_bytes());
        Handle {
            fsid,
            kind: FID_KIND,
            bytes,
        }
    }

    /// The FID, if this handle is one.
    pub fn as_fid(&self) -> Option<lustre_sys::lu_fid> {
        if self.kind != FID_KIND || self.bytes.len() != 16 {
            return None;
        }
        let b = &self.bytes;
        Some(lustre_sys::lu_fid {
            f_seq: u64::from_be_bytes(b[..8].try_into().ok()?),
            f_oid: u32::from_be_bytes(b[8..12].try_into().ok()?),
            f_ver: u32::from_be_bytes(b[12..].try_into().ok()?),
        })
    }

    /// `fsid.kind.hex` — one journal field, printable ASCII.
    pub fn encode(&self) -> String {
        let hex: String = self.bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{:016x}.{}.{hex}", self.fsid, self.kind)
    }

    pub fn decode(field: &str) -> Option<Handle> {
        let mut parts = field.split('.');
        let fsid = u64::from_str_radix(parts.next()?, 16).ok()?;
        let kind = parts.next()?.parse().ok()?;
        let hex = parts.next()?;
        if parts.next().is_some() || hex.len() % 2 != 0 || hex.len() > 2 * MAX_HANDLE {
            return None;
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Some(Handle { fsid, kind, bytes })
    }

    /// Open the inode as an `O_PATH` fd through any fd `mount` on its
    /// filesystem (needs CAP_DAC_READ_SEARCH). ESTALE: it is gone.
    pub fn open(&self, mount: BorrowedFd) -> Result<OwnedFd, OsError> {
        if self.bytes.len() > MAX_HANDLE {
            return Err(OsError {
                op: "open_by_handle_at",
                errno: libc::EINVAL,
            });
        }
        // struct file_handle: u32 handle_bytes, i32 handle_type, then the bytes.
        let mut raw = vec![0u8; 8 + MAX_HANDLE];
        raw[..4].copy_from_slice(&(self.bytes.len() as u32).to_ne_bytes());
        raw[4..8].copy_from_slice(&self.kind.to_ne_bytes());
        raw[8..8 + self.bytes.len()].copy_from_slice(&self.bytes);
        let flags = libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        // SAFETY: `raw` is a live, writable buffer laid out as struct
        // file_handle with room for MAX_HANDLE bytes (the kernel reads
        // handle_bytes from it and never more); `mount` is an open fd. The
        // kernel may read only, and the buffer outlives the call.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount.as_raw_fd(),
                raw.as_mut_ptr().cast::<libc::file_handle>(),
                flags,
            )
        };
        if fd < 0 {
            return Err(OsError {
                op: "open_by_handle_at",
                errno: last_errno(),
            });
        }
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// errno of the libc call just made.
pub(super) fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trips_and_refuses_garbage() {
        let h = Handle {
            fsid: 0xdead_beef_0000_0001,
            kind: -3,
            bytes: vec![0, 1, 0xff, 0x7f],
        };
        assert_eq!(Handle::decode(&h.encode()), Some(h));
        for bad in ["", "x.1.00", "1.1.0", "1.1.zz", "1.1.00.00", "1..00"] {
            assert_eq!(Handle::decode(bad), None, "{bad}");
        }
        let fid = lustre_sys::lu_fid {
            f_seq: 0x2_0000_0401,
            f_oid: 5,
            f_ver: 0,
        };
        let h = Handle::from_fid(7, fid);
        assert_eq!(
            Handle::decode(&h.encode()).and_then(|h| h.as_fid()),
            Some(fid)
        );
        assert_eq!(
            h.encode(),
            "0000000000000007.-1.00000002000004010000000500000000"
        );
        let long = format!("1.1.{}", "00".repeat(MAX_HANDLE + 1));
        assert_eq!(Handle::decode(&long), None);
    }
}
