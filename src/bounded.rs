//! Inputs read with bounds: files of a limited size that must be regular
//! (a config named /dev/zero or a FIFO is refused, not read forever), and
//! whole numbers in a range whose message names the setting. Shared by the
//! config file, the command line and `lmpi ctl`.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Config files are a few KiB: anything bigger is the wrong file.
pub const CONFIG_MAX_BYTES: u64 = 1 << 20;
/// The old `exceptions` file: a few thousand lines at most in practice.
pub const EXCLUDE_FILE_MAX_BYTES: u64 = 64 << 20;

/// Read a regular file of at most `limit` bytes. At most `limit + 1` bytes
/// are read, so a file growing meanwhile is caught as well.
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    let (f, _) = open_regular(path)?;
    let mut data = Vec::new();
    f.take(limit.saturating_add(1)).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {} bytes", limit),
        ));
    }
    Ok(data)
}

/// Open a file an admin named for reading, refusing anything but a regular
/// file. The type is checked before opening (opening a FIFO for reading
/// would wait for a writer; /dev/zero never ends) and again on the open
/// file, which O_NONBLOCK keeps from blocking if it was swapped for a FIFO
/// in between. Symlinks are followed: the admin's own path may be one.
pub fn open_regular(path: &Path) -> std::io::Result<(File, std::fs::Metadata)> {
    use std::io::{Error, ErrorKind};
    let regular = |m: &std::fs::Metadata| -> std::io::Result<()> {
        let ft = m.file_type();
        let what = if ft.is_file() {
            return Ok(());
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{what}, not a regular file"),
        ))
    };
    regular(&std::fs::metadata(path)?)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    let m = f.metadata()?;
    regular(&m)?;
    Ok((f, m))
}

/// A parser for a whole number in `range` whose message names the config key
/// the flag overrides (clap adds the flag and the value).
pub fn ranged<T: TryFrom<u64> + Clone + Send + Sync + 'static>(
    key: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let (lo, hi) = (*range.start(), *range.end());
        let bad = || format!("`{key}` must be a whole number between {lo} and {hi}");
        let v: u64 = s.trim().parse().map_err(|_| bad())?;
        if !(lo..=hi).contains(&v) {
            return Err(bad());
        }
        T::try_from(v).map_err(|_| bad())
    }
}
