//! Hardlinks: every name of an inode is sent to one owner rank (chosen by
//! inode), which copies the inode once and links the other names to it.

use super::*;

/// Hardlinked source files seen by this rank: (dev, ino) -> their names.
pub(super) type LinkGroups = HashMap<(u64, u64), Vec<LinkName>>;

/// Spread inodes evenly over ranks.
pub(crate) fn mix(dev: u64, ino: u64) -> u64 {
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
            .map(|((dev, ino), mut names)| {
                names.sort();
                names.dedup_by(|a, b| a.rel == b.rel);
                Item::LinkGroup { dev, ino, names }
            })
            .collect()
    }

    /// Copy a hardlink group once, then link every other name to it.
    pub(super) fn link_group(&self, dev: u64, ino: u64, names: &[LinkName]) {
        let Some(first) = names.first() else { return };
        let group = fsops::Ident { dev, ino };
        if self.ctx.dry_run {
            if let Err(f) = self.would_link_group(group, first, &names[1..]) {
                self.report(&first.rel, f);
            }
            return;
        }
        let (pdd, pname, pst) = match self.group_inode(group, first, &names[1..]) {
            Ok(v) => v,
            Err(f) => return self.report(&first.rel, f),
        };
        for other in &names[1..] {
            if let Err(f) = self.link_one((pdd.as_fd(), pname, &pst), &first.rel, other) {
                self.report(&other.rel, f);
            }
        }
    }

    /// The target inode of the group, holding the source's data: the first
    /// name's, settled in place, or a fresh copy. A target inode that also
    /// carries names from outside the group (a link split on the source) is
    /// never changed in place: the first name is broken out into a new inode.
    fn group_inode<'n>(
        &self,
        group: fsops::Ident,
        first: &'n LinkName,
        others: &[LinkName],
    ) -> Res<(OwnedFd, &'n [u8], Stat)> {
        let c = &self.ctx;
        let (pdir, pname) = fsops::parent_and_name(&first.rel);
        let (sd, _) = on_src(c.open_src_dir(pdir, first.ids.src))?;
        let (dd, _) = on_dst(c.open_dst_dir(pdir, first.ids.dst))?;
        let s = on_src(fsops::stat_at(sd.as_fd(), pname))?;
        if s.ident() != group {
            return Err(Fail::Os(Side::Source, fsops::changed("stat")));
        }
        let d = match fsops::stat_at(dd.as_fd(), pname) {
            Ok(d) => Some(d),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(Fail::Os(Side::Target, e)),
        };
        let (sdf, ddf) = (sd.as_fd(), dd.as_fd());
        let settled = match &d {
            Some(d)
                if same_data(&s, d)
                    && !self.shared_beyond(d, others)?
                    && self.same_content(sdf, ddf, (pname, &first.rel), (&s, d))? =>
            {
                self.settle_trusted(sdf, ddf, (pname, &first.rel), (&s, d), true)?
            }
            _ => false,
        };
        match &d {
            _ if settled => {}
            _ if c.dry_run => c.act(&first.rel, Action::copied(&s)),
            _ => {
                // A directory in the way goes; a file in the way is replaced atomically.
                let replace = match &d {
                    Some(d) if d.kind == Kind::Dir => {
                        on_dst(fsops::remove_tree_at(ddf, pname))?;
                        false
                    }
                    Some(_) => true,
                    None => false,
                };
                self.copy_file(
                    sdf,
                    ddf,
                    (&first.rel, pname),
                    (&s, None),
                    replace,
                    Landing::UNKNOWN,
                )?
            }
        }
        let d = on_dst(fsops::stat_at(dd.as_fd(), pname))?;
        Ok((dd, pname, d))
    }

    /// A dry run of a hardlink group: the first name would be copied
    /// unless the target holds its data already; every other name would be
    /// linked to it unless it is that target inode already. Nothing is
    /// opened on the target beyond what exists (a new target has nothing).
    fn would_link_group(
        &self,
        group: fsops::Ident,
        first: &LinkName,
        others: &[LinkName],
    ) -> Res<()> {
        let c = &self.ctx;
        let (pdir, pname) = fsops::parent_and_name(&first.rel);
        let (sd, _) = on_src(c.open_src_dir(pdir, first.ids.src))?;
        let s = on_src(fsops::stat_at(sd.as_fd(), pname))?;
        if s.ident() != group {
            return Err(Fail::Os(Side::Source, fsops::changed("stat")));
        }
        let on_target = |n: &LinkName| {
            let (dir, name) = fsops::parent_and_name(&n.rel);
            let (dd, _) = c.open_dst_dir(dir, n.ids.dst).ok()?;
            fsops::stat_at(dd.as_fd(), name).ok()
        };
        let d = on_target(first).filter(|d| same_data(&s, d));
        // Data there: what settling it would fix (the dry run only says).
        let settled = match (&d, c.open_dst_dir(pdir, first.ids.dst)) {
            (Some(d), Ok((dd, _))) => {
                let at = (pname, &first.rel[..]);
                self.settle_trusted(sd.as_fd(), dd.as_fd(), at, (&s, d), true)?
            }
            _ => false,
        };
        if !settled {
            self.would_write(&first.rel, &s);
        }
        let d = d.filter(|_| settled);
        for o in others {
            let same = d.is_some_and(|d| on_target(o).is_some_and(|od| od.ident() == d.ident()));
            if same {
                c.bump(&c.counters.uptodate, 1);
            } else {
                c.bump(&c.counters.files, 1);
                c.act(
                    &o.rel,
                    Action::Linked {
                        to: first.rel.clone(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Does target inode `d` have names beyond the group's (`others` plus
    /// the first)? Only asked when `d` has more links than the group has names.
    fn shared_beyond(&self, d: &Stat, others: &[LinkName]) -> Res<bool> {
        if d.nlink as usize <= others.len() + 1 {
            return Ok(false);
        }
        let mut members = 1usize;
        for o in others {
            let (odir, oname) = fsops::parent_and_name(&o.rel);
            let (dd, _) = on_dst(self.ctx.open_dst_dir(odir, o.ids.dst))?;
            if let Ok(od) = fsops::stat_at(dd.as_fd(), oname) {
                members += usize::from(od.ident() == d.ident());
            }
        }
        Ok(d.nlink as usize > members)
    }

    /// Make `other` a name of the group's target inode `pst` (`pname` in
    /// `pdd`), which is `first` (relative to the root).
    fn link_one(
        &self,
        (pdd, pname, pst): (BorrowedFd, &[u8], &Stat),
        first: &[u8],
        other: &LinkName,
    ) -> Res<()> {
        let c = &self.ctx;
        let linked = || Action::Linked { to: first.to_vec() };
        let (odir, oname) = fsops::parent_and_name(&other.rel);
        let (dd, _) = on_dst(c.open_dst_dir(odir, other.ids.dst))?;
        let dd = dd.as_fd();
        match fsops::stat_at(dd, oname) {
            Ok(d) if d.ident() == pst.ident() => {
                c.bump(&c.counters.uptodate, 1);
                return Ok(());
            }
            Ok(_) if c.dry_run => {
                c.act(&other.rel, linked());
                return Ok(());
            }
            Ok(d) if d.kind == Kind::Dir => on_dst(fsops::remove_tree_at(dd, oname).map(drop))?,
            Ok(_) => {
                // Link to a temp name, then rename over: the old file stays until the new link is in place.
                let tmp = self.temp_name();
                on_dst(fsops::link_at(pdd, pname, dd, &tmp))?;
                if let Err(e) = fsops::rename_at(dd, &tmp, oname) {
                    let _ = fsops::unlink_at(dd, &tmp);
                    return Err(Fail::Os(Side::Target, e));
                }
                c.bump(&c.counters.files, 1);
                c.act(&other.rel, linked());
                return Ok(());
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Fail::Os(Side::Target, e)),
        }
        if c.dry_run {
            c.act(&other.rel, linked());
            return Ok(());
        }
        on_dst(fsops::link_at(pdd, pname, dd, oname))?;
        c.bump(&c.counters.files, 1);
        c.act(&other.rel, linked());
        Ok(())
    }
}
