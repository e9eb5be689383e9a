//! lmpi's own temp files: `.lmpi-<job token>-<rank>-<n>.part`. A file is
//! written under such a name when it replaces something (and big files are
//! always), then renamed over the real name. A killed job leaves them
//! behind; the next copy removes those of other jobs in each directory it
//! visits, unless the source holds the same name.

use super::*;

impl CopyPass {
    pub(super) fn temp_name(&self) -> Vec<u8> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!(".lmpi-{:016x}-{}-{n}.part", self.opts.token, self.ctx.rank).into_bytes()
    }

    /// Remove stale temp files from target directory `dd` (source `sd`),
    /// found in its listing `names` (which then no longer holds them).
    pub(super) fn remove_stale_temps(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        rel: &[u8],
        names: &mut join::Names,
    ) {
        let c = &self.ctx;
        let token = self.opts.token;
        let stale: Vec<Vec<u8>> = names
            .iter()
            .filter(|(n, k)| is_stale_temp(n, token) && k.is_none_or(|k| k == Kind::File))
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            match fsops::stat_at(sd, &name) {
                Err(err) if err.is_not_found() => {}
                _ => continue, // the source has that name: it is data, not ours
            }
            names.remove(&name);
            if c.dry_run {
                continue;
            }
            let child = fsops::join(rel, &name);
            match fsops::unlink_at(dd, &name) {
                Ok(()) => c
                    .log
                    .note(Side::Target, &child, "removed a stale lmpi temp file"),
                Err(err) if err.is_not_found() => {}
                Err(err) => c.err(Side::Target, &child, err),
            }
        }
    }
}

/// Ours by pattern, and from another job than `token` (this job's are live).
fn is_stale_temp(name: &[u8], token: u64) -> bool {
    let Some(mid) = name
        .strip_prefix(b".lmpi-")
        .and_then(|n| n.strip_suffix(b".part"))
    else {
        return false;
    };
    let parts: Vec<&[u8]> = mid.split(|&b| b == b'-').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_hexdigit))
        && parts[0] != format!("{token:016x}").as_bytes()
}

#[cfg(test)]
mod tests {
    use super::is_stale_temp;

    #[test]
    fn stale_pattern() {
        let is = |n: &[u8]| is_stale_temp(n, 0xabc);
        assert!(is(b".lmpi-0-1234-5.part"), "the old rank-pid-n form");
        assert!(is(b".lmpi-00000000000000ff-2-7.part"));
        assert!(!is(b".lmpi-0000000000000abc-2-7.part"), "this job's");
        assert!(!is(b".lmpi-x-1-2.part"));
        assert!(!is(b".lmpi-1-2.part"));
        assert!(!is(b"lmpi-1-2-3.part"));
        assert!(!is(b".lmpi-1-2-3.partial"));
    }
}
