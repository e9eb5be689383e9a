//! Hardlink grouping: every name of one source inode must name one target
//! inode. Each hardlinked file's pair of inodes goes to an owner rank chosen
//! by the source inode (as the copy pass groups links), which remembers the
//! first target inode seen for it and names any name that lands elsewhere.
//! After a whole-tree walk, the owner also checks that the target inode has
//! as many names as the source inode has in the tree: a source file may have
//! names outside the tree, which no copy of the tree can have, so the two
//! link counts themselves are not compared. A split group is found by the
//! first check, a group joined with another by the second.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Item, VerifyPass};
use crate::engine::Emitter;
use crate::fsops::{self, Ident, Stat};

/// One name of a hardlinked source file and the inodes it names.
#[derive(Debug, Serialize, Deserialize)]
pub struct LinkName {
    pub rel: Vec<u8>,
    pub src: Ident,
    pub dst: Ident,
    /// The target inode's link count.
    pub dst_links: u32,
}

/// One source inode's names as seen by its owner.
struct Group {
    /// The target inode its first name seen names, and that name.
    dst: Ident,
    first: Vec<u8>,
    dst_links: u32,
    /// Names of the source inode seen in the walk (that named `dst`).
    names: u32,
}

/// Hardlink groups of the source inodes this rank owns.
#[derive(Default)]
pub struct LinkGroups(Mutex<HashMap<Ident, Group>>);

impl VerifyPass {
    /// A hardlinked file compared by this rank: its pair goes to the owner.
    pub(super) fn link_name(&self, rel: &[u8], s: &Stat, d: &Stat, out: &mut Emitter<'_, Item>) {
        let owner = crate::passes::copy::mix(s.dev, s.ino) % self.ctx.size.max(1) as u64;
        let name = LinkName {
            rel: rel.to_vec(),
            src: s.ident(),
            dst: d.ident(),
            dst_links: d.nlink,
        };
        out.send_to(owner as usize, Item::Link(name));
    }

    /// On the owner: the same source inode must always name the same target inode.
    pub(super) fn link_check(&self, n: LinkName) {
        let first = {
            let mut g = self.links.0.lock().unwrap_or_else(|p| p.into_inner());
            match g.get_mut(&n.src) {
                Some(grp) if grp.dst == n.dst => {
                    grp.names += 1;
                    return;
                }
                Some(grp) => grp.first.clone(),
                None => {
                    let grp = Group {
                        dst: n.dst,
                        first: n.rel,
                        dst_links: n.dst_links,
                        names: 1,
                    };
                    g.insert(n.src, grp);
                    return;
                }
            }
        };
        let what = format!(
            "differs: hard link group: linked to {} on the source, not on the target",
            fsops::show(&first)
        );
        self.differs(&n.rel, &what);
    }

    /// After a whole-tree walk: each target inode of a group this rank owns
    /// must have exactly the names its source inode has in the tree.
    pub fn check_link_counts(&self) {
        let g = self.links.0.lock().unwrap_or_else(|p| p.into_inner());
        for grp in g.values().filter(|grp| grp.dst_links != grp.names) {
            let what = format!(
                "differs: hard links: {} names of this file in the source tree, {} on the target",
                grp.names, grp.dst_links
            );
            self.differs(&grp.first, &what);
        }
    }
}
