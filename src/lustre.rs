//! The Lustre layer: policy over `lustre-sys`. Detects Lustre per tree root,
//! reads and applies stripe layouts (PFL components, pools), places first-level
//! directories on MDTs. Paths handed to liblustreapi are `/proc/self/fd/N/name`,
//! so they stay short however deep the tree is.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use lustre_sys as sys;
use serde::{Deserialize, Serialize};

use crate::fsops::{self, OsError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Use Lustre features when both roots are Lustre and the library loads.
    #[default]
    Auto,
    Off,
    /// Fail early unless both roots are Lustre and the library loads.
    Require,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LustreConfig {
    pub mode: Mode,
    /// liblustreapi to load (else $LMPI_LUSTREAPI, else liblustreapi.so.1 / .so).
    pub library: Option<PathBuf>,
    /// Create first-level target directories round-robin on these MDTs (old MDS_IS_STRIPED).
    pub mdts: Vec<u32>,
    /// The old rule: a source stripe count of 16 or more becomes -1 (all OSTs).
    pub wide_striping_rule: bool,
    /// `lmpi track`: the changelog user registered on each MDT
    /// (`lctl --device <mdt> changelog_register`), e.g. "cl1".
    pub changelog_user: Option<String>,
    /// `lmpi track`: the MDTs whose changelogs are read, e.g. "fs-MDT0000".
    pub changelog_mdts: Vec<String>,
}

impl LustreConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.mdts.len() > 4096 {
            return Err(("mdts".into(), "at most 4096 entries".into()));
        }
        let name_ok =
            |n: &str| !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_graphic());
        if self.changelog_user.as_deref().is_some_and(|u| !name_ok(u)) {
            return Err((
                "changelog_user".into(),
                "1 to 64 printable characters, no spaces".into(),
            ));
        }
        if self.changelog_mdts.len() > 4096 || !self.changelog_mdts.iter().all(|m| name_ok(m)) {
            return Err((
                "changelog_mdts".into(),
                "at most 4096 names of 1 to 64 printable characters, no spaces".into(),
            ));
        }
        Ok(())
    }
}

/// One component of a (possibly PFL) layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub start: u64,
    pub end: u64,
    pub stripe_count: u64,
    pub stripe_size: u64,
    pub pattern: u64,
    pub pool: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub components: Vec<Component>,
}

/// `start-end count x size pattern pool` per component, `;` between them:
/// how verify names a layout that differs.
impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |v: u64| match v {
            sys::LLAPI_LAYOUT_DEFAULT => "default".to_string(),
            sys::LLAPI_LAYOUT_WIDE => "wide".to_string(),
            sys::LLAPI_LAYOUT_INVALID.. => "-".to_string(),
            v => v.to_string(),
        };
        for (i, c) in self.components.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            let end = if c.end == u64::MAX {
                "eof".to_string()
            } else {
                c.end.to_string()
            };
            write!(
                f,
                "{sep}{}-{end} {}x{}",
                c.start,
                v(c.stripe_count),
                v(c.stripe_size)
            )?;
            write!(f, " pattern {}", c.pattern)?;
            if !c.pool.is_empty() {
                write!(f, " pool {}", c.pool)?;
            }
        }
        Ok(())
    }
}

impl Layout {
    /// Nothing set: every value is the filesystem default (a directory without
    /// a default layout of its own). Copying that would pin today's defaults.
    pub fn is_unset(&self) -> bool {
        let d = |v: u64| v == sys::LLAPI_LAYOUT_DEFAULT || v == sys::LLAPI_LAYOUT_INVALID;
        self.components
            .iter()
            .all(|c| d(c.stripe_count) && d(c.stripe_size) && c.pool.is_empty())
    }

    /// Bytes per full stripe of the first component: chunk boundaries on it
    /// keep each chunk's writes on whole stripes.
    pub fn chunk_alignment(&self) -> u64 {
        let Some(c) = self.components.first() else {
            return 0;
        };
        let real = |v: u64| v != 0 && v < sys::LLAPI_LAYOUT_INVALID;
        if real(c.stripe_size) && real(c.stripe_count) {
            c.stripe_size.saturating_mul(c.stripe_count)
        } else {
            0
        }
    }
}

pub struct Lustre {
    api: sys::Api,
    pub mdts: Vec<u32>,
    wide_rule: bool,
}

/// statfs magic of a Lustre client mount.
pub fn statfs_is_lustre(fd: BorrowedFd) -> bool {
    // SAFETY: `libc::statfs` is integers only; all-zero is a valid value.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs fills one `struct statfs` through the pointer, and `s`
    // is a live, exclusively borrowed one; `fd` is borrowed, so open.
    let rc = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut s) };
    rc == 0 && s.f_type as i64 == sys::LL_SUPER_MAGIC
}

impl Lustre {
    /// Apply `mode`. Ok(None) with a one-line warning (auto, not both Lustre or
    /// no library) unless nothing hints at Lustre at all (neither root is
    /// Lustre, no library asked for); Err for `require` when that is not so.
    pub fn open(
        cfg: &LustreConfig,
        src: BorrowedFd,
        dst: BorrowedFd,
    ) -> Result<(Option<Lustre>, Option<String>), String> {
        if cfg.mode == Mode::Off {
            return Ok((None, None));
        }
        // A site that asked for nothing and copies between non-Lustre trees
        // should not be warned on every run.
        let asked = cfg.mode == Mode::Require
            || cfg.library.is_some()
            || std::env::var_os(sys::ENV_LIBRARY).is_some_and(|v| !v.is_empty())
            || statfs_is_lustre(src)
            || statfs_is_lustre(dst);
        let why_not = match sys::Api::load(cfg.library.as_deref()) {
            Err(_) if !asked => return Ok((None, None)),
            Err(e) => e.to_string(),
            Ok(api) => {
                let l = Lustre {
                    api,
                    mdts: cfg.mdts.clone(),
                    wide_rule: cfg.wide_striping_rule,
                };
                match (l.is_lustre(src), l.is_lustre(dst)) {
                    (true, true) => return Ok((Some(l), None)),
                    (false, false) if cfg.mode == Mode::Auto && !asked => return Ok((None, None)),
                    (s, _) => format!(
                        "the {} is not on Lustre",
                        if s { "target" } else { "source" }
                    ),
                }
            }
        };
        match cfg.mode {
            Mode::Require => Err(format!("lustre = \"require\": {why_not}")),
            _ => Ok((
                None,
                Some(format!(
                    "Lustre features off: {why_not}; copying without layouts"
                )),
            )),
        }
    }

    /// The library alone, whatever the roots (`lmpi track`, and a final
    /// pass resolving a changelog journal's FIDs).
    pub fn load(cfg: &LustreConfig) -> Result<Lustre, sys::LoadError> {
        Ok(Lustre {
            api: sys::Api::load(cfg.library.as_deref())?,
            mdts: cfg.mdts.clone(),
            wide_rule: cfg.wide_striping_rule,
        })
    }

    /// The raw entry points, for the changelog reader's safe wrappers.
    pub fn api(&self) -> &sys::Api {
        &self.api
    }

    /// Lustre if statfs says so, or if liblustreapi can tell which MDT holds it
    /// (which only succeeds on Lustre).
    pub fn is_lustre(&self, fd: BorrowedFd) -> bool {
        statfs_is_lustre(fd) || self.dir_mdt(fd).is_ok()
    }

    pub fn dir_mdt(&self, fd: BorrowedFd) -> Result<u32, OsError> {
        let mut idx: libc::c_int = 0;
        // SAFETY: llapi_file_fget_mdtidx(int fd, int *mdtidx) writes one int
        // through `&mut idx`, a live local; `fd` is borrowed, so open for the
        // call. `self.api` keeps the library loaded while we call into it.
        let rc = unsafe { (self.api.file_fget_mdtidx)(fd.as_raw_fd(), &mut idx) };
        if rc < 0 {
            return Err(OsError {
                op: "llapi_file_fget_mdtidx",
                errno: -rc,
            });
        }
        Ok(idx as u32)
    }

    fn path(dir: BorrowedFd, name: &[u8]) -> Result<CString, OsError> {
        if name.is_empty() {
            return CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd())).map_err(|_| {
                OsError {
                    op: "path",
                    errno: libc::EINVAL,
                }
            });
        }
        fsops::proc_path(dir, name)
    }

    /// Take ownership of a layout the library returned (NULL: its errno, as `op`).
    fn own(&self, l: *mut sys::llapi_layout, op: &'static str) -> Result<LlapiLayout<'_>, OsError> {
        if l.is_null() {
            return Err(OsError {
                op,
                errno: std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO),
            });
        }
        Ok(LlapiLayout {
            ptr: l,
            api: &self.api,
        })
    }

    fn read(&self, l: &LlapiLayout<'_>) -> Result<Layout, OsError> {
        let l = l.ptr;
        let err = |op| OsError {
            op,
            errno: std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        };
        let mut comps = Vec::new();
        // SAFETY: `l` is the non-NULL layout of the `LlapiLayout` borrowed for
        // this call, which frees it only when dropped; that type is neither
        // Send nor Sync (a raw pointer), so no other thread touches the layout
        // while comp_use moves its cursor. It borrows `self.api`, so the
        // library stays loaded. Each getter writes one u64 (two for the
        // extent) through pointers to the live locals `s`, `e`, `c`, `z` and
        // `p`. `pool` is LOV_MAXPOOLNAME + 1 bytes and that length is passed,
        // so the library writes no further (strncpy of at most n bytes); the
        // name is then read only up to its NUL or the buffer's end, so
        // nothing past `pool` is read even were the NUL missing.
        unsafe {
            if (self.api.layout_comp_use)(l, sys::LLAPI_LAYOUT_COMP_USE_FIRST) < 0 {
                return Err(err("llapi_layout_comp_use"));
            }
            loop {
                let (mut s, mut e, mut c, mut z, mut p) = (0u64, 0u64, 0u64, 0u64, 0u64);
                if (self.api.layout_comp_extent_get)(l, &mut s, &mut e) < 0 {
                    return Err(err("llapi_layout_comp_extent_get"));
                }
                if (self.api.layout_stripe_count_get)(l, &mut c) < 0
                    || (self.api.layout_stripe_size_get)(l, &mut z) < 0
                    || (self.api.layout_pattern_get)(l, &mut p) < 0
                {
                    return Err(err("llapi_layout_get"));
                }
                let mut pool = [0u8; sys::LOV_MAXPOOLNAME + 1];
                if (self.api.layout_pool_name_get)(l, pool.as_mut_ptr().cast(), pool.len()) < 0 {
                    return Err(err("llapi_layout_pool_name_get"));
                }
                let end = pool.iter().position(|&b| b == 0).unwrap_or(pool.len());
                let pool = String::from_utf8_lossy(&pool[..end]).into_owned();
                comps.push(Component {
                    start: s,
                    end: e,
                    stripe_count: c,
                    stripe_size: z,
                    pattern: p,
                    pool,
                });
                match (self.api.layout_comp_use)(l, sys::LLAPI_LAYOUT_COMP_USE_NEXT) {
                    0 => continue,
                    r if r > 0 => break,
                    _ => return Err(err("llapi_layout_comp_use")),
                }
            }
        }
        Ok(Layout { components: comps })
    }

    /// A freshly built llapi layout for `layout`, freed when dropped.
    fn build(&self, layout: &Layout) -> Result<LlapiLayout<'_>, OsError> {
        let err = |op| OsError {
            op,
            errno: std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL),
        };
        // SAFETY: llapi_layout_alloc takes nothing and returns a new layout
        // or NULL; `own` takes it at once (NULL becomes an error), and
        // `self.api` keeps the library loaded while it is called.
        let owned = self.own(unsafe { (self.api.layout_alloc)() }, "llapi_layout_alloc")?;
        let l = owned.ptr;
        for (i, c) in layout.components.iter().enumerate() {
            let many = layout.components.len() > 1;
            let pool = CString::new(c.pool.as_str()).ok();
            // SAFETY: every setter gets `l`, the non-NULL layout that `owned`
            // frees only when dropped (after the loop), plus plain u64s; the
            // pool name is a NUL-terminated CString in `pool`, which lives to
            // the end of this iteration, after the call that only reads
            // (copies) it. `&&` stops at the first failure.
            let ok = unsafe {
                (i == 0 || (self.api.layout_comp_add)(l) == 0)
                    && (!many || (self.api.layout_comp_extent_set)(l, c.start, c.end) == 0)
                    && (self.api.layout_stripe_count_set)(l, self.stripe_count(c.stripe_count)) == 0
                    && (self.api.layout_stripe_size_set)(l, c.stripe_size) == 0
                    && (self.api.layout_pattern_set)(l, c.pattern) == 0
                    && (c.pool.is_empty()
                        || pool
                            .as_ref()
                            .is_some_and(|p| (self.api.layout_pool_name_set)(l, p.as_ptr()) == 0))
            };
            if !ok {
                return Err(err("llapi_layout_set"));
            }
        }
        Ok(owned)
    }

    /// `l` as this run creates it on the target (the wide-striping rule
    /// applied): what a copied file's layout is compared with.
    pub fn as_created(&self, l: &Layout) -> Layout {
        let mut l = l.clone();
        for c in &mut l.components {
            c.stripe_count = self.stripe_count(c.stripe_count);
        }
        l
    }

    fn stripe_count(&self, c: u64) -> u64 {
        if self.wide_rule && (16..sys::LLAPI_LAYOUT_INVALID).contains(&c) {
            sys::LLAPI_LAYOUT_WIDE
        } else {
            c
        }
    }

    /// The layout of `name` in `dir` (a file's, or a directory's default).
    pub fn layout_of(&self, dir: BorrowedFd, name: &[u8]) -> Result<Layout, OsError> {
        let p = Self::path(dir, name)?;
        // SAFETY: `p` is a NUL-terminated CString alive past the call, which
        // only reads it; the layout returned (or NULL) is owned at once.
        let l = unsafe { (self.api.layout_get_by_path)(p.as_ptr(), 0) };
        self.read(&self.own(l, "llapi_layout_get_by_path")?)
    }

    /// The layout of the open file `fd` (checked by the caller to be the
    /// file the listing saw: a name could be a link by now).
    pub fn layout_of_fd(&self, fd: BorrowedFd) -> Result<Layout, OsError> {
        // SAFETY: `fd` is borrowed, so open for the call; the layout returned
        // (or NULL) is owned at once.
        let l = unsafe { (self.api.layout_get_by_fd)(fd.as_raw_fd(), 0) };
        self.read(&self.own(l, "llapi_layout_get_by_fd")?)
    }

    /// Create `name` in `dir` (O_EXCL, write-only) with `layout`.
    pub fn create_file(
        &self,
        dir: BorrowedFd,
        name: &[u8],
        perm: u32,
        layout: &Layout,
    ) -> Result<OwnedFd, OsError> {
        let p = Self::path(dir, name)?;
        let l = self.build(layout)?;
        // SAFETY: `p` is a NUL-terminated CString and `l.ptr` a non-NULL
        // layout held by `l`; both live past the call, which only reads them.
        // The fd returned is opened by the library for us and not kept.
        let fd = unsafe {
            (self.api.layout_file_create)(
                p.as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
                perm as libc::c_int,
                l.ptr,
            )
        };
        let e = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if fd < 0 {
            return Err(OsError {
                op: "llapi_layout_file_create",
                errno: e,
            });
        }
        // SAFETY: `fd` is non-negative, so it is the descriptor the library
        // just opened and returned to its caller (closing it is ours); nothing
        // else holds it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Set the default layout of directory `name` in `dir`.
    pub fn set_dir_layout(
        &self,
        dir: BorrowedFd,
        name: &[u8],
        layout: &Layout,
    ) -> Result<(), OsError> {
        let p = Self::path(dir, name)?;
        let l = self.build(layout)?;
        // SAFETY: `p` is a NUL-terminated CString and `l.ptr` a non-NULL
        // layout held by `l`; both live past the call, which only reads them.
        // The fd returned is opened by the library for us and not kept.
        let fd = unsafe {
            (self.api.layout_file_open)(p.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY, 0, l.ptr)
        };
        let e = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if fd < 0 {
            return Err(OsError {
                op: "llapi_layout_file_open",
                errno: e,
            });
        }
        // SAFETY: `fd` is non-negative, so it is the descriptor the library
        // just opened for us; nothing else holds it, so closing it here (by
        // dropping the OwnedFd) closes it exactly once.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(())
    }

    /// mkdir on a given MDT.
    pub fn mkdir_on_mdt(
        &self,
        dir: BorrowedFd,
        name: &[u8],
        perm: u32,
        mdt: u32,
    ) -> Result<(), OsError> {
        let p = Self::path(dir, name)?;
        // SAFETY: `p` is a NUL-terminated CString alive past the call, which
        // only reads it; the other arguments are ints, and the pool may be
        // NULL (llapi_dir_create_pool then sets none).
        let rc = unsafe {
            (self.api.dir_create_pool)(
                p.as_ptr(),
                perm as libc::c_int,
                mdt as libc::c_int,
                1,
                0,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            return Err(OsError {
                op: "llapi_dir_create_pool",
                errno: -rc,
            });
        }
        Ok(())
    }
}

/// A `struct llapi_layout` the library allocated, freed exactly once on drop.
struct LlapiLayout<'a> {
    ptr: *mut sys::llapi_layout,
    api: &'a sys::Api,
}

impl Drop for LlapiLayout<'_> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came non-NULL from the library (`Lustre::own`), no
        // other copy of it is kept, and it is freed only here, once; `api`
        // is borrowed for the layout's whole life, so the library that
        // allocated it is still loaded.
        unsafe { (self.api.layout_free)(self.ptr) };
    }
}
