//! Hardlinks: every name of an inode is sent to one owner rank (chosen by
//! inode), which copies the inode once and links the other names to it.

use super::*;

/// Hardlinked source files seen by this rank: (dev, ino) -> their rel paths.
pub(super) type LinkGroups = HashMap<(u64, u64), Vec<Vec<u8>>>;

/// Spread inodes evenly over ranks.
pub(super) fn mix(dev: u64, ino: u64) -> u64 {
    let mut x = dev.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ino;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

impl CopyPass {
    /// Phase 2 seeds: this rank's hardlink groups.
    pub fn take_link_groups(&self) -> Vec<Item> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .drain()
            .map(|(_, mut paths)| {
                paths.sort();
                paths.dedup();
                Item::LinkGroup { paths }
            })
            .collect()
    }

    /// Copy a hardlink group once, then link every other name to it.
    pub(super) fn link_group(&self, paths: &[Vec<u8>]) {
        let Some(first) = paths.first() else { return };
        let c = &self.ctx;
        let (pdir, pname) = fsops::parent_and_name(first);
        let r = (|| -> Res<(std::os::fd::OwnedFd, Stat)> {
            let sd = on_src(c.open_src_dir(pdir))?;
            let dd = on_dst(c.open_dst_dir(pdir))?;
            let s = on_src(fsops::stat_at(sd.as_fd(), pname))?;
            c.bump(&c.counters.scanned, 1);
            let d = match fsops::stat_at(dd.as_fd(), pname) {
                Ok(d) => Some(d),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(Fail::Os(Side::Target, e)),
            };
            match &d {
                Some(d) if same_data(&s, d) => {
                    self.settle_in_place(sd.as_fd(), dd.as_fd(), pname, first, &s, d)?
                }
                _ if c.dry_run => {
                    crate::report::say(&format!("would copy: {}", fsops::show(first)))
                }
                _ => {
                    // A directory in the way goes; a file in the way is replaced atomically.
                    let replace = match &d {
                        Some(d) if d.kind == Kind::Dir => {
                            on_dst(fsops::remove_tree_at(dd.as_fd(), pname))?;
                            false
                        }
                        Some(_) => true,
                        None => false,
                    };
                    let (sd, dd) = (sd.as_fd(), dd.as_fd());
                    self.copy_file(sd, dd, first, pname, &s, replace, Landing::UNKNOWN)?
                }
            }
            let d = on_dst(fsops::stat_at(dd.as_fd(), pname))?;
            Ok((dd, d))
        })();
        let (pdd, pst) = match r {
            Ok(v) => v,
            Err(_) if c.dry_run => return,
            Err(f) => return self.report(first, f),
        };
        for other in &paths[1..] {
            let (odir, oname) = fsops::parent_and_name(other);
            let r = (|| -> Res<()> {
                let dd = on_dst(c.open_dst_dir(odir))?;
                c.bump(&c.counters.scanned, 1);
                match fsops::stat_at(dd.as_fd(), oname) {
                    Ok(d) if d.dev == pst.dev && d.ino == pst.ino => {
                        c.bump(&c.counters.uptodate, 1);
                        return Ok(());
                    }
                    Ok(d) => {
                        if c.dry_run {
                            crate::report::say(&format!("would link: {}", fsops::show(other)));
                            return Ok(());
                        }
                        if d.kind == Kind::Dir {
                            on_dst(fsops::remove_tree_at(dd.as_fd(), oname))?;
                        } else {
                            // Link to a temp name, then rename over: the old file stays until the new link is in place.
                            let tmp = self.temp_name();
                            on_dst(fsops::link_at(pdd.as_fd(), pname, dd.as_fd(), &tmp))?;
                            if let Err(e) = fsops::rename_at(dd.as_fd(), &tmp, oname) {
                                let _ = fsops::unlink_at(dd.as_fd(), &tmp);
                                return Err(Fail::Os(Side::Target, e));
                            }
                            c.bump(&c.counters.files, 1);
                            return Ok(());
                        }
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(Fail::Os(Side::Target, e)),
                }
                if c.dry_run {
                    crate::report::say(&format!("would link: {}", fsops::show(other)));
                    return Ok(());
                }
                on_dst(fsops::link_at(pdd.as_fd(), pname, dd.as_fd(), oname))?;
                c.bump(&c.counters.files, 1);
                Ok(())
            })();
            if let Err(f) = r {
                self.report(other, f);
            }
        }
    }
}
