//! Every file-system syscall lmpi makes. Calls take a directory fd and a name
//! (bytes), so depth is unlimited and no path is ever re-resolved from `/`.
//! Errors are `OsError { op, errno }`; callers add the path with `.at(path)`.
//!
//! The calls are rustix's, built with its `use-libc` feature: rustix then
//! calls glibc's functions instead of making system calls itself with
//! inline assembly, so the tests' fault shim (`tests/faults/shim.c`, built
//! by `tests/common` as `lmpi-fault-shim.so` and loaded with LD_PRELOAD;
//! `bench/latency.sh` uses it for Lustre-like latency) still sees them. The
//! glibc symbol is not always the one a C program would call, and the shim
//! defines the ones lmpi reaches: `openat64` (rustix's `openat` on glibc),
//! `statx` (looked up with dlsym, so the preloaded one wins), and
//! `syscall` for `openat2` and `copy_file_range` (rustix makes those with
//! syscall(2), not a glibc wrapper; getdents64, fchown and fchmod pass
//! through it too, untouched by the shim as before). `mkdirat`, `unlinkat`, `fchownat`, `utimensat`, `readlinkat`,
//! `mknodat` and `pwrite64` are called by their own names.
//!
//! Left on `libc`: constants only (errno values, `S_IF*`, the FUSE-sized
//! `c_int` buffers and `libc::FS_IOC_*FLAGS` in a test). The ioctls
//! (FS_IOC_GETFLAGS/SETFLAGS, FS_IOC_FSGETXATTR/FSSETXATTR) go through
//! rustix's `ioctl` with `Updater`/`Setter`, still `unsafe`: rustix cannot
//! check that a buffer fits an opcode.

use rustix::fs::{Advice, AtFlags, Gid, Mode, OFlags, StatxFlags, Uid};
use rustix::ioctl::{ioctl, opcode, Opcode, Setter, Updater};
use std::ffi::CString;
use std::num::NonZeroU64;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A failed syscall, before the caller names the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {}", strerror(*.errno))]
pub struct OsError {
    pub op: &'static str,
    pub errno: i32,
}

/// A failed operation on a named path: what the error log prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {op}: {}", show(path), explain(*errno))]
pub struct FsError {
    pub path: Vec<u8>,
    pub op: &'static str,
    pub errno: i32,
}

impl OsError {
    pub fn at(self, path: &[u8]) -> FsError {
        FsError {
            path: path.to_vec(),
            op: self.op,
            errno: self.errno,
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.errno == libc::ENOENT
    }
}

pub type Res<T> = Result<T, OsError>;

/// Not a kernel errno (those stay below 4096): an entry or directory is not
/// the inode its parent's listing saw, so someone changed it during the pass.
pub const ECHANGED: i32 = 4096;

pub fn changed(op: &'static str) -> OsError {
    OsError {
        op,
        errno: ECHANGED,
    }
}

/// The errno's text and number, for the error log; ECHANGED in words only.
fn explain(errno: i32) -> String {
    match errno {
        ECHANGED => strerror(errno),
        _ => format!("{} (errno {errno})", strerror(errno)),
    }
}

pub fn strerror(errno: i32) -> String {
    if errno == ECHANGED {
        return "changed during the pass (not what its parent's listing saw); left alone".into();
    }
    std::io::Error::from_raw_os_error(errno)
        .to_string()
        .split(" (os error")
        .next()
        .unwrap_or("")
        .to_string()
}

/// rustix's errno as an `OsError` for `op`: `.map_err(err("open"))`.
fn err(op: &'static str) -> impl Fn(rustix::io::Errno) -> OsError {
    move |e| OsError {
        op,
        errno: e.raw_os_error(),
    }
}

fn cstr(op: &'static str, name: &[u8]) -> Res<CString> {
    CString::new(name).map_err(|_| OsError {
        op,
        errno: libc::EINVAL,
    })
}

/// A path for humans: one line, any byte shown (non-UTF-8 and control bytes as \xNN).
pub fn show(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                if c == '\\' {
                    out.push_str("\\\\");
                } else {
                    for b in c.to_string().bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Join a relative path and a name with '/', as bytes.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + name.len() + 1);
    if !dir.is_empty() {
        p.extend_from_slice(dir);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

pub fn parent_and_name(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Char,
    Block,
}

impl Kind {
    /// One word per type, as manifests and verify's lines write it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::Char => "char",
            Kind::Block => "block",
        }
    }

    fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            _ => Kind::File,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

impl Time {
    fn ts(self) -> rustix::fs::Timespec {
        rustix::fs::Timespec {
            tv_sec: self.sec,
            tv_nsec: self.nsec.into(),
        }
    }
}

fn timestamps(atime: Time, mtime: Time) -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: atime.ts(),
        last_modification: mtime.ts(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (07777).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub nlink: u32,
    pub dev: u64,
    pub ino: u64,
    pub rdev: u64,
    pub atime: Time,
    pub mtime: Time,
    /// Status change time: moves on any write or attribute change, and
    /// cannot be set back by users (a resumed partial copy checks it).
    pub ctime: Time,
    /// Inode flags lmpi copies, as statx reports them for free: immutable,
    /// append-only, no-dump (`FLAGS_COPIED`; the same bits as FS_*_FL).
    pub flags: u32,
}

/// Inode flags a target should have when the source has them. Their
/// statx attribute bits are the FS_IOC_GETFLAGS bits.
pub const FLAG_IMMUTABLE: u32 = 0x10;
pub const FLAG_APPEND: u32 = 0x20;
pub const FLAG_NODUMP: u32 = 0x40;
pub const FLAGS_COPIED: u32 = FLAG_IMMUTABLE | FLAG_APPEND | FLAG_NODUMP;

/// Which inode an entry is: what a listing saw, checked again after every
/// open so a rename race cannot substitute another directory or file.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Ident {
    pub dev: u64,
    pub ino: u64,
}

impl Stat {
    pub fn ident(&self) -> Ident {
        Ident {
            dev: self.dev,
            ino: self.ino,
        }
    }

    /// Might the file have holes? Cheap test that saves two lseeks on dense files.
    pub fn maybe_sparse(&self) -> bool {
        self.blocks.saturating_mul(512) < self.size
    }
}

fn from_statx(s: &rustix::fs::Statx) -> Stat {
    use rustix::fs::makedev;
    let mode = u32::from(s.stx_mode);
    Stat {
        kind: Kind::from_mode(mode),
        perm: mode & 0o7777,
        uid: s.stx_uid,
        gid: s.stx_gid,
        size: s.stx_size,
        blocks: s.stx_blocks,
        nlink: s.stx_nlink,
        dev: makedev(s.stx_dev_major, s.stx_dev_minor),
        ino: s.stx_ino,
        rdev: makedev(s.stx_rdev_major, s.stx_rdev_minor),
        atime: Time {
            sec: s.stx_atime.tv_sec,
            nsec: s.stx_atime.tv_nsec,
        },
        mtime: Time {
            sec: s.stx_mtime.tv_sec,
            nsec: s.stx_mtime.tv_nsec,
        },
        ctime: Time {
            sec: s.stx_ctime.tv_sec,
            nsec: s.stx_ctime.tv_nsec,
        },
        flags: (s.stx_attributes.bits() as u32) & FLAGS_COPIED,
    }
}

/// statx through glibc's `statx` (rustix finds it with dlsym, so the
/// preloaded shim's comes first).
fn statx_at(dir: BorrowedFd, name: impl rustix::path::Arg, flags: AtFlags) -> Res<Stat> {
    let sx = rustix::fs::statx(dir, name, flags, StatxFlags::BASIC_STATS).map_err(err("statx"))?;
    Ok(from_statx(&sx))
}

/// lstat of `name` in `dir`.
pub fn stat_at(dir: BorrowedFd, name: &[u8]) -> Res<Stat> {
    statx_at(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

pub fn fstat(fd: BorrowedFd) -> Res<Stat> {
    statx_at(fd, c"", AtFlags::EMPTY_PATH)
}

/// openat (glibc's `openat64`) with O_CLOEXEC always added.
fn open_raw(dir: BorrowedFd, name: &[u8], flags: OFlags, mode: Mode) -> Res<OwnedFd> {
    use rustix::fs::openat;
    let flags = flags | OFlags::CLOEXEC;
    match openat(dir, name, flags, mode) {
        // O_NOATIME needs ownership or CAP_FOWNER; without it, reading updates atime.
        Err(rustix::io::Errno::PERM) if flags.contains(OFlags::NOATIME) => {
            openat(dir, name, flags - OFlags::NOATIME, mode)
        }
        r => r,
    }
    .map_err(err("open"))
}

/// Open a tree root given on the command line.
pub fn open_root(path: &Path) -> Res<OwnedFd> {
    open_raw(
        rustix::fs::CWD,
        path.as_os_str().as_bytes(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOATIME,
        Mode::empty(),
    )
}

pub fn open_dir_at(dir: BorrowedFd, name: &[u8]) -> Res<OwnedFd> {
    open_raw(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::NOATIME,
        Mode::empty(),
    )
}

/// How multi-component paths below a root are resolved.
const RESOLVE_UNKNOWN: u8 = 0;
const RESOLVE_OPENAT2: u8 = 1;
const RESOLVE_WALK: u8 = 2;
static RESOLVER: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(RESOLVE_UNKNOWN);

/// openat2 (Linux 5.6+) where the kernel has it; else one `openat` per
/// component (RHEL 8's 4.18). `LMPI_RESOLVE=walk` forces the second, so
/// tests cover it on new kernels too.
fn resolver() -> u8 {
    use std::sync::atomic::Ordering;
    match RESOLVER.load(Ordering::Relaxed) {
        RESOLVE_UNKNOWN => {
            let r = match std::env::var_os("LMPI_RESOLVE") {
                Some(v) if v == "walk" => RESOLVE_WALK,
                _ => RESOLVE_OPENAT2,
            };
            RESOLVER.store(r, Ordering::Relaxed);
            r
        }
        r => r,
    }
}

/// Open directory `rel` below `root` without following a symlink in ANY
/// component and without leaving `root` (no `..`, no absolute path). Users
/// own parts of both trees and can swap a directory for a symlink at any
/// moment; `O_NOFOLLOW` alone guards only the last component.
pub fn open_dir_beneath(root: BorrowedFd, rel: &[u8]) -> Res<OwnedFd> {
    if rel.is_empty() {
        return open_dir_at(root, b".");
    }
    if rel.starts_with(b"/")
        || rel
            .split(|&b| b == b'/')
            .any(|c| c == b".." || c.is_empty())
    {
        return Err(OsError {
            op: "open",
            errno: libc::EINVAL,
        });
    }
    // openat2 takes at most PATH_MAX; deeper trees are opened in pieces.
    const STEP: usize = 3000;
    let mut cur: Option<OwnedFd> = None;
    let mut rest = rel;
    while !rest.is_empty() {
        let cut = if rest.len() <= STEP {
            rest.len()
        } else {
            rest[..STEP]
                .iter()
                .rposition(|&b| b == b'/')
                .ok_or(OsError {
                    op: "open",
                    errno: libc::ENAMETOOLONG,
                })?
        };
        let base = cur.as_ref().map(|f| f.as_fd_b()).unwrap_or(root);
        // Work items name only directories: a symlink (ELOOP) or a way out
        // of the root (EXDEV) on the path means someone swapped a component.
        cur = Some(
            open_dir_piece(base, &rest[..cut]).map_err(|e| match e.errno {
                libc::ELOOP | libc::EXDEV => changed("open"),
                _ => e,
            })?,
        );
        rest = rest.get(cut + 1..).unwrap_or(&[]);
    }
    cur.ok_or(OsError {
        op: "open",
        errno: libc::EINVAL,
    })
}

fn open_dir_piece(base: BorrowedFd, piece: &[u8]) -> Res<OwnedFd> {
    use std::sync::atomic::Ordering;
    if resolver() == RESOLVE_OPENAT2 {
        match openat2_dir(base, piece) {
            // ENOSYS: before 5.6; EPERM: a seccomp filter that refuses unknown calls.
            Err(e) if e.errno == libc::ENOSYS || e.errno == libc::EPERM => {
                RESOLVER.store(RESOLVE_WALK, Ordering::Relaxed)
            }
            r => return r,
        }
    }
    let mut cur: Option<OwnedFd> = None;
    for comp in piece.split(|&b| b == b'/') {
        let at = cur.as_ref().map(|f| f.as_fd_b()).unwrap_or(base);
        cur = Some(open_dir_at(at, comp)?);
    }
    cur.ok_or(OsError {
        op: "open",
        errno: libc::EINVAL,
    })
}

/// openat2 as rustix's libc backend makes it, through glibc's `syscall`
/// (glibc has no wrapper), which the tests' LD_PRELOAD shim (faults,
/// Lustre-like latency in `bench/latency.sh`) catches for `SYS_openat2`.
fn openat2_dir(base: BorrowedFd, path: &[u8]) -> Res<OwnedFd> {
    use rustix::fs::{openat2, ResolveFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let call = |flags| openat2(base, path, flags, Mode::empty(), resolve);
    match call(flags | OFlags::NOATIME) {
        // O_NOATIME needs ownership or CAP_FOWNER, as in `open_raw`.
        Err(rustix::io::Errno::PERM) => call(flags),
        r => r,
    }
    .map_err(err("open"))
}

/// `open_dir_beneath`, then check that the directory is still the inode
/// the parent's listing saw (`want`; None: the root itself, or not known).
pub fn open_dir_checked(root: BorrowedFd, rel: &[u8], want: Option<Ident>) -> Res<(OwnedFd, Stat)> {
    let fd = open_dir_beneath(root, rel)?;
    let st = fstat(fd.as_fd_b())?;
    match want {
        Some(w) if w != st.ident() => Err(changed("open")),
        _ => Ok((fd, st)),
    }
}

trait AsFdB {
    fn as_fd_b(&self) -> BorrowedFd<'_>;
}
impl AsFdB for OwnedFd {
    fn as_fd_b(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}

/// Open regular file `name` for reading and check it is the file `want`
/// (from an lstat or a listing). O_NONBLOCK: a FIFO swapped in for a file
/// must fail the check, not block the open forever.
pub fn open_read_checked(dir: BorrowedFd, name: &[u8], want: Ident) -> Res<(OwnedFd, Stat)> {
    let (fd, st) = open_and_fstat(dir, name)?;
    if st.kind != Kind::File || st.ident() != want {
        return Err(changed("open"));
    }
    Ok((fd, st))
}

/// Open `name` for reading without following a link or blocking on a FIFO,
/// and fstat what was opened.
fn open_and_fstat(dir: BorrowedFd, name: &[u8]) -> Res<(OwnedFd, Stat)> {
    let fd = open_read_at(dir, name)?;
    let st = fstat(fd.as_fd_b())?;
    Ok((fd, st))
}

/// Open `name`, which the directory listing said is regular file `ino`,
/// without an lstat first: Some((fd, fstat)) if it is that file, None if
/// it is something else now (the caller then takes the lstat way).
pub fn open_listed_file(dir: BorrowedFd, name: &[u8], ino: u64) -> Res<Option<(OwnedFd, Stat)>> {
    let (fd, st) = open_and_fstat(dir, name)?;
    Ok((st.kind == Kind::File && st.ino == ino).then_some((fd, st)))
}

/// Open our own temp file `name` for writing and check it is still the file
/// we created (`want`): the target directory may belong to a user, who can
/// swap in a file of their own, even one that got the freed inode number,
/// but not one owned by us.
pub fn open_write_checked(dir: BorrowedFd, name: &[u8], want: Ident) -> Res<OwnedFd> {
    let (fd, st) = open_own_file(dir, name)?;
    if st.ident() != want || st.uid != rustix::process::geteuid().as_raw() {
        return Err(changed("open"));
    }
    Ok(fd)
}

/// Open existing regular file `name` for writing without following a link
/// or blocking on a FIFO, and fstat it: for lmpi's own partial copies, which
/// the caller then checks (owner, links, size) before trusting.
pub fn open_own_file(dir: BorrowedFd, name: &[u8]) -> Res<(OwnedFd, Stat)> {
    let fd = open_raw(
        dir,
        name,
        OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let st = fstat(fd.as_fd_b())?;
    if st.kind != Kind::File {
        return Err(changed("open"));
    }
    Ok((fd, st))
}

/// Data (and the metadata needed to read it back) on stable storage.
pub fn fdatasync(fd: BorrowedFd) -> Res<()> {
    rustix::fs::fdatasync(fd).map_err(err("fdatasync"))
}

/// An entry held by an `O_PATH` fd and checked to be the inode an lstat
/// saw: owner and mode changes land on that inode, never on whatever the
/// name points to a moment later (a symlink to /etc, a hardlink).
pub struct Pinned {
    fd: OwnedFd,
    pub st: Stat,
}

/// Pin `name` in `dir`; with `want`, it must be that inode (else ECHANGED).
pub fn pin_at(dir: BorrowedFd, name: &[u8], want: Option<Ident>) -> Res<Pinned> {
    let fd = open_raw(dir, name, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?;
    let st = fstat(fd.as_fd_b())?;
    if want.is_some_and(|w| w != st.ident()) {
        return Err(changed("open"));
    }
    Ok(Pinned { fd, st })
}

impl Pinned {
    pub fn chown(&self, uid: u32, gid: u32) -> Res<()> {
        let (u, g) = owner(uid, gid);
        // AT_EMPTY_PATH: the fd's own inode, which the pin checked.
        rustix::fs::chownat(&self.fd, c"", u, g, AtFlags::EMPTY_PATH).map_err(err("chown"))
    }

    /// Symlinks have no mode of their own on Linux: refused, never followed.
    pub fn chmod(&self, perm: u32) -> Res<()> {
        if self.st.kind == Kind::Symlink {
            return Err(OsError {
                op: "chmod",
                errno: libc::EOPNOTSUPP,
            });
        }
        // fchmod refuses O_PATH fds; the fd's /proc link reaches exactly its inode.
        let p = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        rustix::fs::chmod(p.as_bytes(), mode(perm)).map_err(err("chmod"))
    }
}

/// A mode as rustix takes it, every bit kept (setuid, setgid, sticky too).
fn mode(perm: u32) -> Mode {
    Mode::from_bits_retain(perm)
}

/// An owner and group as rustix takes them; -1 stays "leave unchanged",
/// as it was for libc's chown calls.
fn owner(uid: u32, gid: u32) -> (Option<Uid>, Option<Gid>) {
    (
        (uid != u32::MAX).then(|| Uid::from_raw(uid)),
        (gid != u32::MAX).then(|| Gid::from_raw(gid)),
    )
}

/// Create a new file; fails if `name` exists (never truncates something else).
pub fn create_at(dir: BorrowedFd, name: &[u8], perm: u32) -> Res<OwnedFd> {
    open_raw(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
        mode(perm),
    )
    .map_err(|e| OsError { op: "create", ..e })
}

/// Open `name` for reading without following a symlink or blocking on a
/// FIFO. Callers that move data use `open_read_checked`.
pub fn open_read_at(dir: BorrowedFd, name: &[u8]) -> Res<OwnedFd> {
    open_raw(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOATIME | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )
}

pub fn mkdir_at(dir: BorrowedFd, name: &[u8], perm: u32) -> Res<()> {
    rustix::fs::mkdirat(dir, name, mode(perm)).map_err(err("mkdir"))
}

pub fn unlink_at(dir: BorrowedFd, name: &[u8]) -> Res<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(err("unlink"))
}

pub fn rmdir_at(dir: BorrowedFd, name: &[u8]) -> Res<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(err("rmdir"))
}

pub fn rename_at(dir: BorrowedFd, from: &[u8], to: &[u8]) -> Res<()> {
    rustix::fs::renameat(dir, from, dir, to).map_err(err("rename"))
}

/// Move `from` in `from_dir` to `to` in `to_dir`, never over an existing
/// `to` (RENAME_NOREPLACE): EEXIST instead.
pub fn rename_noreplace(
    from_dir: BorrowedFd,
    from: &[u8],
    to_dir: BorrowedFd,
    to: &[u8],
) -> Res<()> {
    use rustix::fs::RenameFlags;
    rustix::fs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE)
        .map_err(err("rename"))
}

pub fn link_at(from_dir: BorrowedFd, from: &[u8], to_dir: BorrowedFd, to: &[u8]) -> Res<()> {
    rustix::fs::linkat(from_dir, from, to_dir, to, AtFlags::empty()).map_err(err("link"))
}

pub fn readlink_at(dir: BorrowedFd, name: &[u8]) -> Res<Vec<u8>> {
    rustix::fs::readlinkat(dir, name, Vec::with_capacity(4096))
        .map(CString::into_bytes)
        .map_err(err("readlink"))
}

pub fn symlink_at(target: &[u8], dir: BorrowedFd, name: &[u8]) -> Res<()> {
    // The target is stored as given, never resolved.
    rustix::fs::symlinkat(target, dir, name).map_err(err("symlink"))
}

/// Make a node of `st`'s kind and device numbers with no permission bits:
/// in a directory a user owns (setgid, or with a default ACL) a device
/// node would otherwise be open to them between its creation and the
/// chown and chmod that follow (a disk's node is root).
pub fn mknod_at(dir: BorrowedFd, name: &[u8], st: &Stat) -> Res<()> {
    use rustix::fs::FileType;
    let fmt = match st.kind {
        Kind::Fifo => FileType::Fifo,
        Kind::Socket => FileType::Socket,
        Kind::Char => FileType::CharacterDevice,
        Kind::Block => FileType::BlockDevice,
        _ => {
            return Err(OsError {
                op: "mknod",
                errno: libc::EINVAL,
            })
        }
    };
    rustix::fs::mknodat(dir, name, fmt, mode(0), st.rdev).map_err(err("mknod"))
}

/// chown without following symlinks.
pub fn chown_at(dir: BorrowedFd, name: &[u8], uid: u32, gid: u32) -> Res<()> {
    let (u, g) = owner(uid, gid);
    rustix::fs::chownat(dir, name, u, g, AtFlags::SYMLINK_NOFOLLOW).map_err(err("chown"))
}

pub fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> Res<()> {
    let (u, g) = owner(uid, gid);
    rustix::fs::fchown(fd, u, g).map_err(err("chown"))
}

pub fn fchmod(fd: BorrowedFd, perm: u32) -> Res<()> {
    rustix::fs::fchmod(fd, mode(perm)).map_err(err("chmod"))
}

pub fn futimes(fd: BorrowedFd, atime: Time, mtime: Time) -> Res<()> {
    rustix::fs::futimens(fd, &timestamps(atime, mtime)).map_err(err("utimens"))
}

/// Set times without following symlinks.
pub fn utimes_at(dir: BorrowedFd, name: &[u8], atime: Time, mtime: Time) -> Res<()> {
    let ts = timestamps(atime, mtime);
    rustix::fs::utimensat(dir, name, &ts, AtFlags::SYMLINK_NOFOLLOW).map_err(err("utimens"))
}

pub fn ftruncate(fd: BorrowedFd, size: u64) -> Res<()> {
    rustix::fs::ftruncate(fd, size).map_err(err("truncate"))
}

/// Tell the kernel we read once, front to back (as the old tool did).
pub fn advise_sequential(fd: BorrowedFd) {
    // Advice only: a filesystem without it copies as well.
    let _ = rustix::fs::fadvise(fd, 0, None, Advice::Sequential);
}

/// Drop the copied range from the page cache: a migration reads everything once.
pub fn advise_dontneed(fd: BorrowedFd, off: u64, len: u64) {
    // Advice only. A zero length (None) means "to the end", as in posix_fadvise.
    let _ = rustix::fs::fadvise(fd, off, NonZeroU64::new(len), Advice::DontNeed);
}

/// Data segments of [off, end): holes are skipped so they stay holes.
pub fn data_segments(
    fd: BorrowedFd,
    off: u64,
    end: u64,
    maybe_sparse: bool,
) -> Res<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    if !maybe_sparse {
        return Ok(vec![(off, end)]);
    }
    let mut segs = Vec::new();
    let mut pos = off;
    while pos < end {
        let d = match seek(fd, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(e) => {
                let e = err("seek_data")(e);
                if e.errno == libc::ENXIO {
                    break; // only a hole remains
                }
                if e.errno == libc::EINVAL {
                    return Ok(vec![(off, end)]); // no SEEK_DATA support: copy it all
                }
                return Err(e);
            }
        };
        if d >= end {
            break;
        }
        let h = seek(fd, SeekFrom::Hole(d)).map_err(err("seek_hole"))?;
        let h = h.min(end);
        segs.push((d, h));
        pos = h;
    }
    Ok(segs)
}

/// Copy bytes [off, off+len) from `src` to the same offsets in `dst`.
/// copy_file_range first (server-side on many filesystems); a plain
/// pread/pwrite loop where the kernel or filesystem cannot.
pub fn copy_range(
    src: BorrowedFd,
    dst: BorrowedFd,
    off: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> Res<u64> {
    let mut done = 0u64;
    let mut use_cfr = true;
    while done < len {
        let want = (len - done).min(1 << 30) as usize;
        let at = off + done;
        let n = match use_cfr {
            true => match copy_file_range_at(src, dst, at, want)? {
                Some(n) => n,
                None => {
                    use_cfr = false;
                    continue;
                }
            },
            false => read_write_at(src, dst, at, want, buf)?,
        };
        if n == 0 {
            break; // source shrank under us; the caller's re-stat notices
        }
        done += n;
    }
    Ok(done)
}

/// One `copy_file_range` at `at` on both sides: bytes copied (0 at the
/// source's end), or None where the kernel cannot do it for these files.
/// rustix makes it as `syscall(SYS_copy_file_range, ...)`, which the
/// tests' shim slows as it does glibc's `copy_file_range`.
fn copy_file_range_at(src: BorrowedFd, dst: BorrowedFd, at: u64, want: usize) -> Res<Option<u64>> {
    loop {
        let (mut so, mut doff) = (at, at);
        match rustix::fs::copy_file_range(src, Some(&mut so), dst, Some(&mut doff), want) {
            Ok(n) => return Ok(Some(n as u64)),
            Err(e) => match e.raw_os_error() {
                libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL | libc::EBADF => {
                    return Ok(None)
                }
                libc::EINTR => continue,
                _ => return Err(err("copy_file_range")(e)),
            },
        }
    }
}

/// Read up to `want` bytes at `at` into `buf` (4 MiB, allocated on first
/// use) and write them all at the same offset: bytes copied, 0 at the end.
fn read_write_at(
    src: BorrowedFd,
    dst: BorrowedFd,
    at: u64,
    want: usize,
    buf: &mut Vec<u8>,
) -> Res<u64> {
    use rustix::io::{pread, pwrite, Errno};
    if buf.is_empty() {
        buf.resize(4 << 20, 0);
    }
    let chunk = want.min(buf.len());
    let n = loop {
        match pread(src, &mut buf[..chunk], at) {
            Ok(n) => break n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(err("read")(e)),
        }
    };
    let mut w = 0usize;
    while w < n {
        match pwrite(dst, &buf[w..n], at + w as u64) {
            Ok(m) => w += m,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(err("write")(e)),
        }
    }
    Ok(n as u64)
}

/// Read up to `buf.len()` bytes at `off` (fewer only at the end of the file).
pub fn read_at(fd: BorrowedFd, buf: &mut [u8], off: u64) -> Res<usize> {
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::pread(fd, &mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(err("read")(e)),
        }
    }
    Ok(got)
}

/// Where an xattr call goes: the open file, or a `/proc/self/fd` path to
/// a name, used with the `l*` calls so a symlink is never followed.
enum XattrOn<'a> {
    Fd(BorrowedFd<'a>),
    Path(CString),
}

fn xattr_on<'a>(fd: Option<BorrowedFd<'a>>, dir: BorrowedFd, name: &[u8]) -> Res<XattrOn<'a>> {
    Ok(match fd {
        Some(fd) => XattrOn::Fd(fd),
        None => XattrOn::Path(proc_path(dir, name)?),
    })
}

/// The most bytes of names listxattr returns (the kernel's XATTR_LIST_MAX):
/// a longer list fails with E2BIG whatever the buffer.
pub const XATTR_LIST_MAX: usize = 64 << 10;

/// Names of a file's extended attributes (`fd`), or of `name` in `dir` without
/// following a symlink when `fd` is None. E2BIG: more names than the kernel
/// lists (a user can set 100,000 on tmpfs or XFS).
pub fn list_xattrs(fd: Option<BorrowedFd>, dir: BorrowedFd, name: &[u8]) -> Res<Vec<Vec<u8>>> {
    use rustix::fs::{flistxattr, llistxattr};
    let on = xattr_on(fd, dir, name)?;
    let mut buf = vec![0u8; 1024];
    loop {
        let r = match &on {
            XattrOn::Fd(fd) => flistxattr(fd, &mut buf[..]),
            XattrOn::Path(p) => llistxattr(p.as_c_str(), &mut buf[..]),
        };
        let n = match r.map_err(err("listxattr")) {
            Ok(n) => n,
            // Growing between our calls: a bigger buffer, up to the most
            // the kernel ever fills (past it the kernel says E2BIG itself).
            Err(e) if e.errno == libc::ERANGE && buf.len() < XATTR_LIST_MAX => {
                buf.resize((buf.len() * 4).min(XATTR_LIST_MAX), 0);
                continue;
            }
            Err(e) if e.errno == libc::ERANGE => {
                return Err(OsError {
                    op: "listxattr",
                    errno: libc::E2BIG,
                })
            }
            Err(e) if e.errno == libc::ENOTSUP => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        buf.truncate(n);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(<[u8]>::to_vec)
            .collect());
    }
}

/// `/proc/self/fd/N/name`: a short path to anything below an open directory.
pub fn proc_path(dir: BorrowedFd, name: &[u8]) -> Res<CString> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    cstr("path", &p)
}

pub fn get_xattr(fd: Option<BorrowedFd>, dir: BorrowedFd, name: &[u8], key: &[u8]) -> Res<Vec<u8>> {
    use rustix::fs::{fgetxattr, lgetxattr};
    let k = cstr("getxattr", key)?;
    let on = xattr_on(fd, dir, name)?;
    let mut buf = vec![0u8; 256];
    loop {
        let r = match &on {
            XattrOn::Fd(fd) => fgetxattr(fd, k.as_c_str(), &mut buf[..]),
            XattrOn::Path(p) => lgetxattr(p.as_c_str(), k.as_c_str(), &mut buf[..]),
        };
        match r.map_err(err("getxattr")) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.errno == libc::ERANGE && buf.len() < (1 << 20) => {
                buf.resize(buf.len() * 8, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

pub fn set_xattr(
    fd: Option<BorrowedFd>,
    dir: BorrowedFd,
    name: &[u8],
    key: &[u8],
    value: &[u8],
) -> Res<()> {
    use rustix::fs::{fsetxattr, lsetxattr, XattrFlags};
    let k = cstr("setxattr", key)?;
    match xattr_on(fd, dir, name)? {
        XattrOn::Fd(fd) => fsetxattr(fd, k.as_c_str(), value, XattrFlags::empty()),
        XattrOn::Path(p) => lsetxattr(p.as_c_str(), k.as_c_str(), value, XattrFlags::empty()),
    }
    .map_err(err("setxattr"))
}

/// Remove an xattr from a file (`fd`), or from `name` in `dir` without
/// following a symlink when `fd` is None.
pub fn remove_xattr(fd: Option<BorrowedFd>, dir: BorrowedFd, name: &[u8], key: &[u8]) -> Res<()> {
    use rustix::fs::{fremovexattr, lremovexattr};
    let k = cstr("removexattr", key)?;
    match xattr_on(fd, dir, name)? {
        XattrOn::Fd(fd) => fremovexattr(fd, k.as_c_str()),
        XattrOn::Path(p) => lremovexattr(p.as_c_str(), k.as_c_str()),
    }
    .map_err(err("removexattr"))
}

/// One directory entry: name, the type readdir reported (None: unknown),
/// and its inode number as listed.
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: Option<Kind>,
    pub ino: u64,
}

/// Streams a directory one getdents64 buffer at a time (rustix's RawDir):
/// no `DIR*` to manage, and memory bounded by the buffer, not the directory.
pub struct DirReader {
    fd: OwnedFd,
    buf: Vec<std::mem::MaybeUninit<u8>>,
    page: std::collections::VecDeque<Entry>,
    done: bool,
}

impl DirReader {
    pub fn new(fd: OwnedFd) -> DirReader {
        DirReader {
            fd,
            buf: vec![std::mem::MaybeUninit::uninit(); 64 * 1024],
            page: std::collections::VecDeque::new(),
            done: false,
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd_b()
    }

    /// The directory fd back, for `*at` calls after the listing.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The entry's type: from readdir when the filesystem says, else by lstat.
    pub fn kind(&self, e: &Entry) -> Res<Kind> {
        match e.kind {
            Some(k) => Ok(k),
            None => stat_at(self.fd(), &e.name).map(|s| s.kind),
        }
    }

    pub fn next_entry(&mut self) -> Option<Res<Entry>> {
        loop {
            if let Some(e) = self.page.pop_front() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }

    /// One getdents64 call's worth of entries; `done` at the end. Stopping
    /// exactly where the buffer ends loses nothing: the kernel's offset is
    /// just past the last entry it gave.
    fn fill(&mut self) -> Res<()> {
        use rustix::fs::{FileType, RawDir};
        let mut rd = RawDir::new(&self.fd, &mut self.buf);
        loop {
            let e = match rd.next() {
                None => {
                    self.done = true;
                    return Ok(());
                }
                Some(Err(e)) => {
                    return Err(OsError {
                        op: "readdir",
                        errno: e.raw_os_error(),
                    })
                }
                Some(Ok(e)) => e,
            };
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                let kind = match e.file_type() {
                    FileType::Directory => Some(Kind::Dir),
                    FileType::RegularFile => Some(Kind::File),
                    FileType::Symlink => Some(Kind::Symlink),
                    FileType::Fifo => Some(Kind::Fifo),
                    FileType::Socket => Some(Kind::Socket),
                    FileType::CharacterDevice => Some(Kind::Char),
                    FileType::BlockDevice => Some(Kind::Block),
                    _ => None,
                };
                self.page.push_back(Entry {
                    name: name.to_vec(),
                    kind,
                    ino: e.ino(),
                });
            }
            if rd.is_buffer_empty() {
                return Ok(());
            }
        }
    }
}

/// Remove `name` in `dir` and everything below it (used when a target directory
/// must become a file; the delete pass removes big trees in parallel instead).
pub fn remove_tree_at(dir: BorrowedFd, name: &[u8]) -> Res<u64> {
    let st = stat_at(dir, name)?;
    if st.kind != Kind::Dir {
        unlink_at(dir, name)?;
        return Ok(1);
    }
    let sub = open_dir_at(dir, name)?;
    let mut rd = DirReader::new(sub);
    let mut n = 0;
    let mut names = Vec::new();
    while let Some(e) = rd.next_entry() {
        names.push(e?.name);
    }
    for child in names {
        n += remove_tree_at(rd.fd(), &child)?;
    }
    rmdir_at(dir, name)?;
    Ok(n + 1)
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Files we create must carry exactly the source's mode bits.
pub fn clear_umask() {
    rustix::process::umask(Mode::empty());
}

// ---------- run-level safety: mount points and the job lock ----------

/// Whether directory `dir` is the root of a mount. statx's
/// STATX_ATTR_MOUNT_ROOT (Linux 5.8+) also sees a bind mount of a directory
/// of the same filesystem; where the kernel does not report it, the device
/// and inode are compared with those of `..` (a different device, or `/`
/// being its own parent).
pub fn is_mount_root(dir: BorrowedFd) -> Res<bool> {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags};
    let sx = statx(dir, c"", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS).map_err(err("statx"))?;
    if sx.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        return Ok(sx.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
    }
    let (me, up) = (fstat(dir)?, stat_at(dir, b"..")?);
    Ok(me.dev != up.dev || me.ino == up.ino)
}

/// Take an exclusive flock on `fd` without waiting: false if another open
/// file (another job) holds it. It goes with the last descriptor of this
/// open file, so a killed job frees it.
pub fn try_lock(fd: BorrowedFd) -> Res<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(err("flock")(e)),
    }
}

/// The first `max` bytes of an open file.
pub fn read_head(fd: BorrowedFd, max: usize) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; max];
    let n = rustix::io::pread(fd, &mut buf, 0).map_err(err("read"))?;
    buf.truncate(n);
    Ok(buf)
}

/// Make an open file hold exactly `data`.
pub fn replace_contents(fd: BorrowedFd, data: &[u8]) -> Res<()> {
    ftruncate(fd, 0)?;
    let n = rustix::io::pwrite(fd, data, 0).map_err(err("write"))?;
    if n != data.len() {
        return Err(OsError {
            op: "write",
            errno: libc::EIO,
        });
    }
    Ok(())
}

/// Pseudo filesystems a root must never be: their files lie about their
/// size, never end, or are the kernel's own knobs (a source of `/proc/self`
/// kept a pass busy for 30 minutes after SIGTERM).
const PSEUDO_FS: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x1cd1, "devpts"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7365_6375, "securityfs"),
    (0xcafe_4a11, "bpf"),
    (0x6165_676c, "pstore"),
    (0x6265_6570, "configfs"),
    (0xde5e_81e4, "efivarfs"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x1995_1020, "hugetlbfs"),
    (0x7363_6673, "nsfs"),
    (0x5046_5342, "pipefs"),
    (0x5346_4e4f, "sockfs"),
];

/// The name of the pseudo filesystem `fd` is on, if it is one.
pub fn pseudo_fs(fd: BorrowedFd) -> Res<Option<&'static str>> {
    let st = rustix::fs::fstatfs(fd).map_err(err("statfs"))?;
    let magic = st.f_type as i64;
    Ok(PSEUDO_FS.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n))
}

// linux/fs.h: _IOR('f', 1, long) and _IOW('f', 2, long). The flags are an
// int, but the numbers encode a long, and FUSE without the 2020 fix "fuse:
// Fix parameter for FS_IOC_{GET,SET}FLAGS" copies sizeof(long) bytes each
// way: the buffers below have room for that, the int first.
const FS_IOC_GETFLAGS: Opcode = opcode::read::<libc::c_long>(b'f', 1);
const FS_IOC_SETFLAGS: Opcode = opcode::write::<libc::c_long>(b'f', 2);

/// Set the copied inode flags of `fd` to exactly `want` (others untouched).
/// Immutable and append-only forbid later changes: set them last.
pub fn set_inode_flags(fd: BorrowedFd, want: u32) -> Res<()> {
    let mut got: [libc::c_int; 2] = [0; 2];
    // SAFETY: FS_IOC_GETFLAGS writes an int (a long through an unfixed FUSE)
    // through the pointer: `got` is an initialised local of 8 bytes (the
    // Updater's type), so a short write leaves no byte uninitialised. `fd`
    // is borrowed, so open.
    unsafe { ioctl(fd, Updater::<FS_IOC_GETFLAGS, _>::new(&mut got)) }.map_err(err("getflags"))?;
    let flags = got[0];
    let new = (flags & !(FLAGS_COPIED as libc::c_int)) | want as libc::c_int;
    if new == flags {
        return Ok(());
    }
    // SAFETY: FS_IOC_SETFLAGS reads an int (a long through an unfixed FUSE)
    // through the pointer, to the Setter's own initialised 8 bytes. `fd` is
    // borrowed, so open.
    unsafe { ioctl(fd, Setter::<FS_IOC_SETFLAGS, _>::new([new, 0])) }.map_err(err("setflags"))
}

/// The kernel's `struct fsxattr` (linux/fs.h), read and written by
/// FS_IOC_FSGETXATTR/FS_IOC_FSSETXATTR: XFS-style flags, extent size
/// hints and the project ID (XFS, ext4 with the project feature, Lustre).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsXattr {
    pub fsx_xflags: u32,
    pub fsx_extsize: u32,
    pub fsx_nextents: u32,
    pub fsx_projid: u32,
    pub fsx_cowextsize: u32,
    pub fsx_pad: [u8; 8],
}

/// `fsx_xflags` bit: new entries of this directory take its project ID.
pub const XFLAG_PROJINHERIT: u32 = 0x200;

// linux/fs.h: _IOR('X', 31, struct fsxattr) and _IOW('X', 32, struct
// fsxattr); rustix's `opcode` knows each architecture's encoding (0x801c581f
// and 0x401c5820 on x86_64 and aarch64).
const FS_IOC_FSGETXATTR: Opcode = opcode::read::<FsXattr>(b'X', 31);
const FS_IOC_FSSETXATTR: Opcode = opcode::write::<FsXattr>(b'X', 32);

/// The fsxattr of open file or directory `fd`. ENOTTY, EOPNOTSUPP or
/// EINVAL: its filesystem has none.
pub fn get_fsxattr(fd: BorrowedFd) -> Res<FsXattr> {
    let mut x = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR writes one `struct fsxattr` (28 bytes)
    // through the pointer; `x` is an initialised local of exactly that
    // `repr(C)` layout (its size is encoded in the opcode), mutably
    // borrowed for the call. `fd` is borrowed, so open.
    unsafe { ioctl(fd, Updater::<FS_IOC_FSGETXATTR, _>::new(&mut x)) }
        .map_err(err("fsgetxattr"))?;
    Ok(x)
}

/// Give `fd` project ID `projid` and, with `inherit` (directories), set or
/// clear its project-inherit flag; every other field and flag is read first
/// and written back as it was. Nothing is written when all already match;
/// true if something was changed.
pub fn set_project(fd: BorrowedFd, projid: u32, inherit: Option<bool>) -> Res<bool> {
    let mut x = get_fsxattr(fd)?;
    let xflags = match inherit {
        Some(true) => x.fsx_xflags | XFLAG_PROJINHERIT,
        Some(false) => x.fsx_xflags & !XFLAG_PROJINHERIT,
        None => x.fsx_xflags,
    };
    if x.fsx_projid == projid && x.fsx_xflags == xflags {
        return Ok(false);
    }
    x.fsx_projid = projid;
    x.fsx_xflags = xflags;
    // SAFETY: FS_IOC_FSSETXATTR reads one `struct fsxattr` (28 bytes)
    // through the pointer, to the Setter's own copy of `x`, initialised and
    // of exactly that `repr(C)` layout. `fd` is borrowed, so open.
    unsafe { ioctl(fd, Setter::<FS_IOC_FSSETXATTR, _>::new(x)) }.map_err(err("fssetxattr"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_escapes_everything_odd() {
        assert_eq!(show(b"a b/c"), "a b/c");
        assert_eq!(show(b"x\ny"), "x\\x0ay");
        assert_eq!(show(b"\xff\xfe"), "\\xff\\xfe");
        assert_eq!(show("é".as_bytes()), "é");
    }

    /// What a user could plant at an output's name is refused without
    /// writing through it or blocking; our own old file is reused, emptied
    /// and given the mode asked for.
    #[test]
    fn own_outputs_refuse_plants() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir()?;
        let dir = open_root(t.path())?;
        let d = dir.as_fd_b();
        let open = |name: &[u8]| open_own_output(d, name, Existing::Truncate, 0o644);
        let (_, st, created) = open(b"new")?;
        assert!(created && st.perm == 0o644 && st.kind == Kind::File);
        std::fs::write(t.path().join("old"), b"stale")?;
        std::fs::set_permissions(t.path().join("old"), std::fs::Permissions::from_mode(0o666))?;
        let (_, _, created) = open(b"old")?;
        let m = std::fs::metadata(t.path().join("old"))?;
        assert!(!created && m.len() == 0 && m.permissions().mode() & 0o7777 == 0o644);
        std::fs::write(t.path().join("victim"), b"keep")?;
        std::os::unix::fs::symlink(t.path().join("victim"), t.path().join("link"))?;
        assert!(matches!(open(b"link"), Err(OutputError::Symlink { .. })));
        rustix::fs::mkfifoat(d, "fifo", Mode::from_bits_retain(0o666))?;
        assert!(matches!(
            open(b"fifo"),
            Err(OutputError::NotRegular {
                kind: Kind::Fifo,
                ..
            })
        ));
        std::fs::hard_link(t.path().join("victim"), t.path().join("second"))?;
        assert!(matches!(
            open(b"second"),
            Err(OutputError::Links { nlink: 2 })
        ));
        assert_eq!(std::fs::read(t.path().join("victim"))?, b"keep");
        if is_root() {
            std::os::unix::fs::chown(t.path().join("old"), Some(65534), None)?;
            assert!(matches!(
                open(b"old"),
                Err(OutputError::Foreign { uid: 65534, .. })
            ));
        }
        Ok(())
    }

    #[test]
    fn own_dir_must_be_ours_and_closed() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir()?;
        let d = t.path().join("logs");
        own_dir(&d, 0o700)?;
        assert_eq!(std::fs::metadata(&d)?.permissions().mode() & 0o7777, 0o700);
        own_dir(&d, 0o700)?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777))?;
        assert!(matches!(own_dir(&d, 0o700), Err(OutputError::Dir(_))));
        if is_root() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
            std::os::unix::fs::chown(&d, Some(65534), None)?;
            assert!(matches!(
                own_dir(&d, 0o700),
                Err(OutputError::Foreign { .. })
            ));
        }
        Ok(())
    }

    #[test]
    fn flags_ioctl_numbers_match_libc() {
        assert_eq!(FS_IOC_GETFLAGS, libc::FS_IOC_GETFLAGS);
        assert_eq!(FS_IOC_SETFLAGS, libc::FS_IOC_SETFLAGS);
    }

    #[test]
    fn fsxattr_ioctl_numbers_match_linux() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        assert_eq!(
            (FS_IOC_FSGETXATTR as u32, FS_IOC_FSSETXATTR as u32),
            (0x801c_581f, 0x401c_5820)
        );
    }

    #[test]
    fn join_and_split() {
        assert_eq!(join(b"", b"a"), b"a");
        assert_eq!(join(b"a/b", b"c"), b"a/b/c");
        assert_eq!(parent_and_name(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(parent_and_name(b"c"), (&b""[..], &b"c"[..]));
    }
}

// ---------- lmpi's own outputs: report, manifest, error log, job lock ----------

/// How `open_own_output` treats a file already at the name (it is only
/// ever used when it is lmpi's own: see `OutputError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Emptied: a report, a manifest part, the merge's temp file.
    Truncate,
    /// Appended to: the error log the job's ranks share.
    Append,
    /// Kept as it is, opened for reading too: the job lock.
    Keep,
}

/// Why lmpi will not write to the file at an output's name: anything but
/// a regular file with one link owned by lmpi's own euid could be a user's
/// plant (a link to a root-only file, a FIFO that blocks, a file the user
/// reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    Os(#[from] OsError),
    #[error("is a symlink: refused (lmpi never writes through a link)")]
    Symlink { uid: u32 },
    #[error("is a {}, not a regular file: refused", .kind.name())]
    NotRegular { kind: Kind, uid: u32 },
    #[error("is owned by uid {uid}, not by uid {me} that runs lmpi: refused")]
    Foreign { uid: u32, me: u32 },
    #[error("has {nlink} hard links: refused (writing would change the other names too)")]
    Links { nlink: u32 },
    /// lmpi's own directory is not one only lmpi can write.
    #[error("{0}: refused")]
    Dir(&'static str),
}

impl OutputError {
    /// The owner of what is at the name, when lmpi refused it for what it is.
    pub fn owner(&self) -> Option<u32> {
        match *self {
            OutputError::Symlink { uid } | OutputError::NotRegular { uid, .. } => Some(uid),
            OutputError::Foreign { uid, .. } => Some(uid),
            OutputError::Os(_) | OutputError::Links { .. } | OutputError::Dir(_) => None,
        }
    }
}

/// An output lmpi refused or could not open, with its path: one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {err}", show(path))]
pub struct OutputFailure {
    pub path: Vec<u8>,
    pub err: OutputError,
}

impl OutputError {
    pub fn at(self, path: &[u8]) -> OutputFailure {
        OutputFailure {
            path: path.to_vec(),
            err: self,
        }
    }
}

pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether `st` may be written as lmpi's own output: a regular file with
/// one link whose owner is our euid.
pub fn check_own_output(st: &Stat) -> Result<(), OutputError> {
    let me = euid();
    match st.kind {
        Kind::File => {}
        Kind::Symlink => return Err(OutputError::Symlink { uid: st.uid }),
        kind => return Err(OutputError::NotRegular { kind, uid: st.uid }),
    }
    if st.uid != me {
        return Err(OutputError::Foreign { uid: st.uid, me });
    }
    if st.nlink != 1 {
        return Err(OutputError::Links { nlink: st.nlink });
    }
    Ok(())
}

/// Open (creating it with exactly `perm`: lmpi clears its umask, so the
/// mode given is the mode it gets) one of lmpi's own output files, `name`
/// in `dir`: never through a symlink, never blocking on a FIFO, never
/// writing to a file a user planted. A new file is made with O_EXCL; one
/// already there is used only if `check_own_output` passes both on an
/// lstat and on the opened file, and they are the same inode; its mode is
/// then set back to `perm` (an older lmpi left some 0666). The bool: this
/// call created the file.
pub fn open_own_output(
    dir: BorrowedFd,
    name: &[u8],
    how: Existing,
    perm: u32,
) -> Result<(OwnedFd, Stat, bool), OutputError> {
    let access = match how {
        Existing::Truncate => OFlags::WRONLY,
        Existing::Append => OFlags::WRONLY | OFlags::APPEND,
        Existing::Keep => OFlags::RDWR,
    };
    let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let excl = OFlags::CREATE | OFlags::EXCL;
    match open_raw(dir, name, flags | excl, mode(perm)) {
        Ok(fd) => {
            let st = fstat(fd.as_fd_b())?;
            return Ok((fd, st, true));
        }
        Err(e) if e.errno == libc::EEXIST => {}
        Err(e) => return Err(e.into()),
    }
    // Refused before opening: opening a FIFO or device can have effects.
    let before = stat_at(dir, name)?;
    check_own_output(&before)?;
    let fd = open_raw(dir, name, flags, Mode::empty())?;
    let st = fstat(fd.as_fd_b())?;
    check_own_output(&st)?;
    if st.ident() != before.ident() {
        return Err(changed("open").into());
    }
    if st.perm != perm {
        fchmod(fd.as_fd_b(), perm)?;
    }
    if how == Existing::Truncate {
        ftruncate(fd.as_fd_b(), 0)?;
    }
    Ok((fd, st, false))
}

/// Open a file lmpi wrote itself (a rank's part of the manifest) for
/// reading, and check it is still that file: our own regular file with one
/// link and inode `ino`, never a link or FIFO put in its place.
pub fn open_own_input(dir: BorrowedFd, name: &[u8], ino: u64) -> Result<OwnedFd, OutputError> {
    let fd = open_read_at(dir, name)?;
    let st = fstat(fd.as_fd_b())?;
    check_own_output(&st)?;
    if st.ino != ino {
        return Err(changed("open").into());
    }
    Ok(fd)
}

/// Open the directory an output path names (`.` for a bare name) and
/// split off the file's name. Links in the directory part are followed
/// (the admin chose that path); the last name never is (`open_own_output`).
pub fn open_output_dir(path: &Path) -> Result<(OwnedFd, Vec<u8>), OsError> {
    let bytes = path.as_os_str().as_bytes();
    let (parent, name) = match bytes.iter().rposition(|&b| b == b'/') {
        Some(0) => (&b"/"[..], &bytes[1..]),
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&b"."[..], bytes),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return Err(OsError {
            op: "open",
            errno: libc::EISDIR,
        });
    }
    let fd = open_raw(
        rustix::fs::CWD,
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )?;
    Ok((fd, name.to_vec()))
}

/// lmpi's own directory for error logs (`/var/log/lmpi` for root): created
/// with mode `perm` if missing; refused unless it is a directory owned by
/// our euid that no group or other user can write (a user who could write
/// it could plant files at the log's name or swap it for a link).
pub fn own_dir(path: &Path, perm: u32) -> Result<(), OutputError> {
    let (parent, name) = open_output_dir(path)?;
    match rustix::fs::mkdirat(&parent, name.as_slice(), mode(perm)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(err("mkdir")(e).into()),
    }
    let st = stat_at(parent.as_fd_b(), &name)?;
    let me = euid();
    match st.kind {
        Kind::Dir => {}
        Kind::Symlink => return Err(OutputError::Symlink { uid: st.uid }),
        _ => return Err(OutputError::Dir("is not a directory")),
    }
    if st.uid != me {
        return Err(OutputError::Foreign { uid: st.uid, me });
    }
    if st.perm & 0o022 != 0 {
        return Err(OutputError::Dir("is writable by group or others"));
    }
    Ok(())
}

/// Make `path` and its missing parents, 0700 (a user's own state
/// directory, e.g. `~/.local/state`, on first use).
pub fn make_private_dirs(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// `open_own_output` for an output the admin gave as a path.
pub fn open_own_output_path(
    path: &Path,
    how: Existing,
    perm: u32,
) -> Result<(OwnedFd, Stat, bool), OutputFailure> {
    let at = |e: OutputError| e.at(path.as_os_str().as_bytes());
    let (dir, name) = open_output_dir(path).map_err(|e| at(e.into()))?;
    open_own_output(dir.as_fd_b(), &name, how, perm).map_err(at)
}

/// Whether an output path may be written at the end of the pass: nothing
/// at its name yet, or lmpi's own file (`check_own_output`). Said before a
/// long pass starts, rather than after it.
pub fn check_output_path(path: &Path) -> Result<(), OutputFailure> {
    let at = |e: OutputError| e.at(path.as_os_str().as_bytes());
    let (dir, name) = open_output_dir(path).map_err(|e| at(e.into()))?;
    match stat_at(dir.as_fd_b(), &name) {
        Ok(st) => check_own_output(&st).map_err(at),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(at(e.into())),
    }
}
