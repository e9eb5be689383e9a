//! Raw FFI to the parts of liblustreapi that lmpi uses, resolved at run time
//! so one binary runs on hosts with and without Lustre. No policy here: the
//! safe wrapper is `lmpi::lustre`. Signatures follow lustre/include/lustre/lustreapi.h.
#![allow(non_camel_case_types)]

use std::ffi::{OsStr, OsString};
use std::os::raw::{c_char, c_int, c_longlong, c_void};
use std::path::{Path, PathBuf};

/// Opaque `struct llapi_layout`.
#[repr(C)]
pub struct llapi_layout {
    _private: [u8; 0],
}

/// Not a valid stripe size, offset, or RAID pattern.
pub const LLAPI_LAYOUT_INVALID: u64 = 0x1000_0000_0000_0001;
/// The filesystem-wide default applies.
pub const LLAPI_LAYOUT_DEFAULT: u64 = LLAPI_LAYOUT_INVALID + 1;
/// Stripe count: all available OSTs.
pub const LLAPI_LAYOUT_WIDE: u64 = LLAPI_LAYOUT_INVALID + 2;
pub const LLAPI_LAYOUT_RAID0: u64 = 0;
pub const LLAPI_LAYOUT_MDT: u64 = 2;
/// `llapi_layout_comp_use` positions.
pub const LLAPI_LAYOUT_COMP_USE_FIRST: u32 = 1;
pub const LLAPI_LAYOUT_COMP_USE_LAST: u32 = 2;
pub const LLAPI_LAYOUT_COMP_USE_NEXT: u32 = 3;
pub const LLAPI_LAYOUT_COMP_USE_PREV: u32 = 4;
/// Extent end meaning "to the end of the file".
pub const LUSTRE_EOF: u64 = u64::MAX;
/// Pool names are at most this long (LOV_MAXPOOLNAME), plus the NUL.
pub const LOV_MAXPOOLNAME: usize = 15;
/// statfs f_type of a Lustre client mount.
pub const LL_SUPER_MAGIC: i64 = 0x0BD0_0BD0;

/// `struct lu_fid`: a Lustre file identifier (sequence, object id, version).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct lu_fid {
    pub f_seq: u64,
    pub f_oid: u32,
    pub f_ver: u32,
}

/// `struct changelog_rec` (lustre_user.h): the fixed head of a changelog
/// record. Extensions follow it as `cr_flags` says (see
/// [`changelog_rec_offset`]), then `cr_namelen` bytes of name: the target
/// name, and for a rename with `CLF_RENAME` a NUL and the source name.
/// For `CL_MARK` the target FID's first word is `cr_markerflags`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct changelog_rec {
    pub cr_namelen: u16,
    pub cr_flags: u16,
    pub cr_type: u32,
    pub cr_index: u64,
    pub cr_prev: u64,
    pub cr_time: u64,
    pub cr_tfid: lu_fid,
    pub cr_pfid: lu_fid,
}

/// `struct changelog_ext_rename`: the renamed object and its old parent.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct changelog_ext_rename {
    pub cr_sfid: lu_fid,
    pub cr_spfid: lu_fid,
}

/// `enum changelog_rec_type`.
pub const CL_MARK: u32 = 0;
pub const CL_CREATE: u32 = 1;
pub const CL_MKDIR: u32 = 2;
pub const CL_HARDLINK: u32 = 3;
pub const CL_SOFTLINK: u32 = 4;
pub const CL_MKNOD: u32 = 5;
pub const CL_UNLINK: u32 = 6;
pub const CL_RMDIR: u32 = 7;
pub const CL_RENAME: u32 = 8;
/// The second half of an old-style rename (RNMTO).
pub const CL_EXT: u32 = 9;
pub const CL_OPEN: u32 = 10;
pub const CL_CLOSE: u32 = 11;
pub const CL_LAYOUT: u32 = 12;
pub const CL_TRUNC: u32 = 13;
pub const CL_SETATTR: u32 = 14;
pub const CL_SETXATTR: u32 = 15;
pub const CL_HSM: u32 = 16;
pub const CL_MTIME: u32 = 17;
pub const CL_CTIME: u32 = 18;
pub const CL_ATIME: u32 = 19;
pub const CL_MIGRATE: u32 = 20;
pub const CL_FLRW: u32 = 21;
pub const CL_RESYNC: u32 = 22;
pub const CL_GETXATTR: u32 = 23;
pub const CL_DN_OPEN: u32 = 24;
pub const CL_LAST: u32 = 25;

/// `enum changelog_rec_flags`: which extensions follow the head.
pub const CLF_VERSION: u16 = 0x1000;
pub const CLF_RENAME: u16 = 0x2000;
pub const CLF_JOBID: u16 = 0x4000;
pub const CLF_EXTRA_FLAGS: u16 = 0x8000;
/// `enum changelog_rec_extra_flags`: which extra extensions follow.
pub const CLFE_UIDGID: u64 = 0x0001;
pub const CLFE_NID: u64 = 0x0002;
pub const CLFE_OPEN: u64 = 0x0004;
pub const CLFE_XATTR: u64 = 0x0008;
/// `enum changelog_send_flag` (for `changelog_start`).
pub const CHANGELOG_FLAG_FOLLOW: c_int = 0x01;
pub const CHANGELOG_FLAG_BLOCK: c_int = 0x02;
pub const CHANGELOG_FLAG_JOBID: c_int = 0x04;
pub const CHANGELOG_FLAG_EXTRA_FLAGS: c_int = 0x08;
/// Sizes of the extensions (sizeof in lustre_user.h, with C's padding).
pub const CHANGELOG_EXT_RENAME_SIZE: usize = std::mem::size_of::<changelog_ext_rename>();
pub const CHANGELOG_EXT_JOBID_SIZE: usize = 32;
pub const CHANGELOG_EXT_EXTRA_FLAGS_SIZE: usize = 8;
pub const CHANGELOG_EXT_UIDGID_SIZE: usize = 16;
pub const CHANGELOG_EXT_NID_SIZE: usize = 24;
pub const CHANGELOG_EXT_OPENMODE_SIZE: usize = 4;
pub const CHANGELOG_EXT_XATTR_SIZE: usize = 256;

/// `changelog_rec_offset()` of lustre_user.h: where the name starts for
/// a record with flags `crf` and extra flags `cref` (its static inline
/// function, which no library exports).
pub fn changelog_rec_offset(crf: u16, cref: u64) -> usize {
    let mut size = std::mem::size_of::<changelog_rec>();
    let has = |f: u16| crf & f != 0;
    let extra = |f: u64| has(CLF_EXTRA_FLAGS) && cref & f != 0;
    size += if has(CLF_RENAME) {
        CHANGELOG_EXT_RENAME_SIZE
    } else {
        0
    };
    size += if has(CLF_JOBID) {
        CHANGELOG_EXT_JOBID_SIZE
    } else {
        0
    };
    size += if has(CLF_EXTRA_FLAGS) {
        CHANGELOG_EXT_EXTRA_FLAGS_SIZE
    } else {
        0
    };
    size += if extra(CLFE_UIDGID) {
        CHANGELOG_EXT_UIDGID_SIZE
    } else {
        0
    };
    size += if extra(CLFE_NID) {
        CHANGELOG_EXT_NID_SIZE
    } else {
        0
    };
    size += if extra(CLFE_OPEN) {
        CHANGELOG_EXT_OPENMODE_SIZE
    } else {
        0
    };
    size += if extra(CLFE_XATTR) {
        CHANGELOG_EXT_XATTR_SIZE
    } else {
        0
    };
    size
}

// Each alias is the C prototype of one entry point (enums are 32-bit ints).
// Besides what each alias's safety section says, every call needs the `Api`
// the pointer was read from to be alive: dropping it unloads the library. A
// "live layout" below is a non-NULL `llapi_layout` this library returned
// (`layout_alloc`, `layout_get_by_*`), not yet freed, and not in use by
// another thread during the call.

/// `struct llapi_layout *llapi_layout_alloc(void)`.
///
/// # Safety
/// Only the `Api` must be alive. The result, NULL with errno set on failure,
/// is the caller's to free once with `layout_free`.
pub type LayoutAllocFn = unsafe extern "C" fn() -> *mut llapi_layout;
/// `void llapi_layout_free(struct llapi_layout *layout)`.
///
/// # Safety
/// `layout` must be NULL or a live layout; it is dangling afterwards.
pub type LayoutFreeFn = unsafe extern "C" fn(*mut llapi_layout);
/// `struct llapi_layout *llapi_layout_get_by_fd(int fd, uint32_t flags)`.
///
/// # Safety
/// `fd` must be open for the call. The result is as for [`LayoutAllocFn`].
pub type LayoutGetByFdFn = unsafe extern "C" fn(c_int, u32) -> *mut llapi_layout;
/// `struct llapi_layout *llapi_layout_get_by_path(const char *path, uint32_t flags)`.
///
/// # Safety
/// `path` must be a NUL-terminated string, valid for the call (only read).
/// The result is as for [`LayoutAllocFn`].
pub type LayoutGetByPathFn = unsafe extern "C" fn(*const c_char, u32) -> *mut llapi_layout;
/// `int llapi_layout_{stripe_count,stripe_size,pattern}_get(const struct
/// llapi_layout *layout, uint64_t *value)`: 0, or -1 with errno.
///
/// # Safety
/// `layout` must be live and `value` valid for writing one u64.
pub type LayoutGetU64Fn = unsafe extern "C" fn(*const llapi_layout, *mut u64) -> c_int;
/// `int llapi_layout_{stripe_count,stripe_size,pattern}_set(struct
/// llapi_layout *layout, uint64_t value)`: 0, or -1 with errno.
///
/// # Safety
/// `layout` must be live.
pub type LayoutSetU64Fn = unsafe extern "C" fn(*mut llapi_layout, u64) -> c_int;
/// `int llapi_layout_pool_name_get(const struct llapi_layout *layout, char
/// *dest, size_t n)`: 0, or -1 with errno.
///
/// # Safety
/// `layout` must be live and `dest` valid for writing `n` bytes. The name
/// is copied with strncpy, so no NUL is written if it fills all `n` bytes:
/// pass `LOV_MAXPOOLNAME + 1` and read no further than `n` bytes.
pub type PoolNameGetFn = unsafe extern "C" fn(*const llapi_layout, *mut c_char, usize) -> c_int;
/// `int llapi_layout_pool_name_set(struct llapi_layout *layout, const char
/// *pool_name)`: 0, or -1 with errno (EINVAL past `LOV_MAXPOOLNAME`).
///
/// # Safety
/// `layout` must be live and `pool_name` a NUL-terminated string valid for
/// the call; the library copies it.
pub type PoolNameSetFn = unsafe extern "C" fn(*mut llapi_layout, *const c_char) -> c_int;
/// `int llapi_layout_comp_extent_get(const struct llapi_layout *layout,
/// uint64_t *start, uint64_t *end)`: 0, or -1 with errno.
///
/// # Safety
/// `layout` must be live; `start` and `end` valid for writing one u64 each.
pub type CompExtentGetFn = unsafe extern "C" fn(*const llapi_layout, *mut u64, *mut u64) -> c_int;
/// `int llapi_layout_comp_extent_set(struct llapi_layout *layout, uint64_t
/// start, uint64_t end)`: 0, or -1 with errno.
///
/// # Safety
/// `layout` must be live.
pub type CompExtentSetFn = unsafe extern "C" fn(*mut llapi_layout, u64, u64) -> c_int;
/// `int llapi_layout_comp_add(struct llapi_layout *layout)`: 0, or -1 with errno.
///
/// # Safety
/// `layout` must be live.
pub type CompAddFn = unsafe extern "C" fn(*mut llapi_layout) -> c_int;
/// `int llapi_layout_comp_use(struct llapi_layout *layout, uint32_t pos)`:
/// 0, 1 when there is no such component, or -1 with errno.
///
/// # Safety
/// `layout` must be live; the call moves its current-component cursor.
pub type CompUseFn = unsafe extern "C" fn(*mut llapi_layout, u32) -> c_int;
/// `int llapi_layout_file_open(const char *path, int open_flags, mode_t
/// mode, const struct llapi_layout *layout)`: an fd, or -1 with errno.
///
/// # Safety
/// `path` must be a NUL-terminated string valid for the call, and `layout`
/// NULL or live; both are only read. A returned fd is the caller's to close.
pub type FileOpenFn =
    unsafe extern "C" fn(*const c_char, c_int, libc::mode_t, *const llapi_layout) -> c_int;
/// `int llapi_layout_file_create(const char *path, int open_flags, int mode,
/// const struct llapi_layout *layout)`: `layout_file_open` with O_CREAT|O_EXCL.
///
/// # Safety
/// As for [`FileOpenFn`].
pub type FileCreateFn =
    unsafe extern "C" fn(*const c_char, c_int, c_int, *const llapi_layout) -> c_int;
/// `int llapi_dir_create_pool(const char *name, int mode, int stripe_offset,
/// int stripe_count, int stripe_pattern, const char *pool_name)`: 0 or -errno.
///
/// # Safety
/// `name` must be a NUL-terminated string valid for the call, and
/// `pool_name` NULL or one; both are only read.
pub type DirCreatePoolFn =
    unsafe extern "C" fn(*const c_char, c_int, c_int, c_int, c_int, *const c_char) -> c_int;
/// `int llapi_file_fget_mdtidx(int fd, int *mdtidx)`: 0 or -errno.
///
/// # Safety
/// `fd` must be open for the call and `mdtidx` valid for writing one int.
pub type FileFgetMdtidxFn = unsafe extern "C" fn(c_int, *mut c_int) -> c_int;

/// `int llapi_changelog_start(void **priv, enum changelog_send_flag flags,
/// const char *mdtname, long long startrec)`: 0 or -errno.
///
/// # Safety
/// `priv` must be valid for writing one pointer and `mdtname` a
/// NUL-terminated string valid for the call. On success `*priv` is the
/// caller's to end once with `changelog_fini`.
pub type ChangelogStartFn =
    unsafe extern "C" fn(*mut *mut c_void, c_int, *const c_char, c_longlong) -> c_int;
/// `int llapi_changelog_fini(void **priv)`: 0 or -errno.
///
/// # Safety
/// `*priv` must come from `changelog_start` and not be ended yet; it is
/// dangling afterwards.
pub type ChangelogFiniFn = unsafe extern "C" fn(*mut *mut c_void) -> c_int;
/// `int llapi_changelog_recv(void *priv, struct changelog_rec **rech)`: 0
/// with a record in `*rech`, 1 at the end of the log, or -errno.
///
/// # Safety
/// `priv` must be a live reader and `rech` valid for writing one pointer.
/// A record returned is the caller's to free once with `changelog_free`;
/// it is `changelog_rec_offset(...) + cr_namelen` bytes long.
pub type ChangelogRecvFn = unsafe extern "C" fn(*mut c_void, *mut *mut changelog_rec) -> c_int;
/// `int llapi_changelog_free(struct changelog_rec **rech)`: 0.
///
/// # Safety
/// `*rech` must be a record `changelog_recv` returned, not yet freed.
pub type ChangelogFreeFn = unsafe extern "C" fn(*mut *mut changelog_rec) -> c_int;
/// `int llapi_changelog_clear(const char *mdtname, const char *idstr, long
/// long endrec)`: 0 or -errno. Purges, for user `idstr`, every record up
/// to `endrec`.
///
/// # Safety
/// Both strings must be NUL-terminated and valid for the call.
pub type ChangelogClearFn = unsafe extern "C" fn(*const c_char, *const c_char, c_longlong) -> c_int;
/// `int llapi_fid2path(const char *path_or_device, const char *fidstr, char
/// *path, int pathlen, long long *recno, int *linkno)`: 0 or -errno
/// (-ENOENT: no such FID). The path is relative to the mount's root.
///
/// # Safety
/// Both strings must be NUL-terminated and valid for the call; `path`
/// valid for writing `pathlen` bytes; `recno` and `linkno` valid for
/// reading and writing one value each.
pub type Fid2pathFn = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *mut c_char,
    c_int,
    *mut c_longlong,
    *mut c_int,
) -> c_int;
/// `int llapi_fd2fid(int fd, struct lu_fid *fid)`: 0 or -errno.
///
/// # Safety
/// `fd` must be open for the call and `fid` valid for writing one `lu_fid`.
pub type Fd2fidFn = unsafe extern "C" fn(c_int, *mut lu_fid) -> c_int;

/// The resolved entry points. The library stays loaded as long as this lives.
pub struct Api {
    pub layout_alloc: LayoutAllocFn,
    pub layout_free: LayoutFreeFn,
    pub layout_get_by_fd: LayoutGetByFdFn,
    pub layout_get_by_path: LayoutGetByPathFn,
    pub layout_stripe_count_get: LayoutGetU64Fn,
    pub layout_stripe_count_set: LayoutSetU64Fn,
    pub layout_stripe_size_get: LayoutGetU64Fn,
    pub layout_stripe_size_set: LayoutSetU64Fn,
    pub layout_pattern_get: LayoutGetU64Fn,
    pub layout_pattern_set: LayoutSetU64Fn,
    pub layout_pool_name_get: PoolNameGetFn,
    pub layout_pool_name_set: PoolNameSetFn,
    pub layout_comp_extent_get: CompExtentGetFn,
    pub layout_comp_extent_set: CompExtentSetFn,
    pub layout_comp_add: CompAddFn,
    pub layout_comp_use: CompUseFn,
    pub layout_file_open: FileOpenFn,
    pub layout_file_create: FileCreateFn,
    pub dir_create_pool: DirCreatePoolFn,
    pub file_fget_mdtidx: FileFgetMdtidxFn,
    pub changelog_start: ChangelogStartFn,
    pub changelog_fini: ChangelogFiniFn,
    pub changelog_recv: ChangelogRecvFn,
    pub changelog_free: ChangelogFreeFn,
    pub changelog_clear: ChangelogClearFn,
    pub fid2path: Fid2pathFn,
    pub fd2fid: Fd2fidFn,
    /// Where the library was found.
    pub path: PathBuf,
    _lib: libloading::Library,
}

#[derive(Debug)]
pub enum LoadError {
    /// No candidate could be opened: (candidate, dlopen message) for each.
    NotFound(Vec<(OsString, String)>),
    /// The library opened but lacks a symbol lmpi needs.
    MissingSymbol { path: PathBuf, symbol: &'static str },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::NotFound(tried) => {
                let names: Vec<String> = tried
                    .iter()
                    .map(|(n, _)| n.to_string_lossy().into_owned())
                    .collect();
                write!(f, "liblustreapi not found (tried {})", names.join(", "))
            }
            LoadError::MissingSymbol { path, symbol } => {
                write!(f, "{}: lacks symbol {symbol}", path.display())
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// Environment variable naming the library to load.
pub const ENV_LIBRARY: &str = "LMPI_LUSTREAPI";

impl Api {
    /// Load from `explicit`, else `$LMPI_LUSTREAPI`, else `liblustreapi.so.1`, else `liblustreapi.so`.
    pub fn load(explicit: Option<&Path>) -> Result<Api, LoadError> {
        let mut candidates: Vec<OsString> = Vec::new();
        if let Some(p) = explicit {
            candidates.push(p.as_os_str().to_owned());
        } else if let Some(p) = std::env::var_os(ENV_LIBRARY).filter(|p| !p.is_empty()) {
            candidates.push(p);
        } else {
            candidates.push(OsStr::new("liblustreapi.so.1").to_owned());
            candidates.push(OsStr::new("liblustreapi.so").to_owned());
        }
        let mut tried = Vec::new();
        for c in candidates {
            // SAFETY: dlopen runs the library's initialisers now (and its
            // finalisers when the `Api` drops it). The candidates are
            // liblustreapi, whose initialisers set up only its own state, or a
            // stand-in the user named (`explicit`, $LMPI_LUSTREAPI), trusted as
            // LD_PRELOAD would be. glibc's dlopen is safe with other threads
            // running.
            match unsafe { libloading::Library::new(&c) } {
                Ok(lib) => return Self::resolve(lib, PathBuf::from(&c)),
                Err(e) => tried.push((c, e.to_string())),
            }
        }
        Err(LoadError::NotFound(tried))
    }

    fn resolve(lib: libloading::Library, path: PathBuf) -> Result<Api, LoadError> {
        macro_rules! sym {
            ($name:literal) => {{
                // SAFETY: the symbol's type is the `Api` field it is stored in,
                // whose alias above is the C prototype of this symbol in
                // lustreapi.h. `*s` copies the fn pointer out of the borrow of
                // `lib`; it stays valid because `lib` moves into `_lib` of the
                // same `Api`, so the library stays loaded as long as the
                // pointers can be reached through it.
                match unsafe { lib.get(concat!($name, "\0").as_bytes()) } {
                    Ok(s) => *s,
                    Err(_) => {
                        return Err(LoadError::MissingSymbol {
                            path,
                            symbol: $name,
                        })
                    }
                }
            }};
        }
        Ok(Api {
            layout_alloc: sym!("llapi_layout_alloc"),
            layout_free: sym!("llapi_layout_free"),
            layout_get_by_fd: sym!("llapi_layout_get_by_fd"),
            layout_get_by_path: sym!("llapi_layout_get_by_path"),
            layout_stripe_count_get: sym!("llapi_layout_stripe_count_get"),
            layout_stripe_count_set: sym!("llapi_layout_stripe_count_set"),
            layout_stripe_size_get: sym!("llapi_layout_stripe_size_get"),
            layout_stripe_size_set: sym!("llapi_layout_stripe_size_set"),
            layout_pattern_get: sym!("llapi_layout_pattern_get"),
            layout_pattern_set: sym!("llapi_layout_pattern_set"),
            layout_pool_name_get: sym!("llapi_layout_pool_name_get"),
            layout_pool_name_set: sym!("llapi_layout_pool_name_set"),
            layout_comp_extent_get: sym!("llapi_layout_comp_extent_get"),
            layout_comp_extent_set: sym!("llapi_layout_comp_extent_set"),
            layout_comp_add: sym!("llapi_layout_comp_add"),
            layout_comp_use: sym!("llapi_layout_comp_use"),
            layout_file_open: sym!("llapi_layout_file_open"),
            layout_file_create: sym!("llapi_layout_file_create"),
            dir_create_pool: sym!("llapi_dir_create_pool"),
            file_fget_mdtidx: sym!("llapi_file_fget_mdtidx"),
            changelog_start: sym!("llapi_changelog_start"),
            changelog_fini: sym!("llapi_changelog_fini"),
            changelog_recv: sym!("llapi_changelog_recv"),
            changelog_free: sym!("llapi_changelog_free"),
            changelog_clear: sym!("llapi_changelog_clear"),
            fid2path: sym!("llapi_fid2path"),
            fd2fid: sym!("llapi_fd2fid"),
            path,
            _lib: lib,
        })
    }
}

// SAFETY: these claim nothing the fields do not already give: fn pointers,
// a PathBuf and a libloading::Library are each Send and Sync, so the
// compiler derives both for `Api` anyway. Every call through the pointers
// is justified where it is made, and whether liblustreapi allows concurrent
// calls is for those call sites (lmpi's I/O threads share one `Api`, with
// every layout private to one thread).
unsafe impl Send for Api {}
// SAFETY: as for `Send` just above.
unsafe impl Sync for Api {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_lustre_user_h() {
        assert_eq!(std::mem::size_of::<lu_fid>(), 16);
        assert_eq!(std::mem::size_of::<changelog_rec>(), 64);
        assert_eq!(CHANGELOG_EXT_RENAME_SIZE, 32);
        assert_eq!(changelog_rec_offset(CLF_VERSION | CLF_RENAME, 0), 96);
        let all = CLF_VERSION | CLF_RENAME | CLF_JOBID | CLF_EXTRA_FLAGS;
        assert_eq!(
            changelog_rec_offset(all, 0xf),
            96 + 32 + 8 + 16 + 24 + 4 + 256
        );
        // Extra flags count only with CLF_EXTRA_FLAGS.
        assert_eq!(changelog_rec_offset(CLF_VERSION, 0xf), 64);
    }
}
