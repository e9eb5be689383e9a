//! Hardlink grouping: every name of one source inode must name one target
//! inode. Each hardlinked file's pair of inodes goes to an owner rank chosen
//! by the source inode (as the copy pass groups links), which remembers the
//! first target inode seen for it and names any name that lands elsewhere.
//! With the link counts compared per entry, a target that splits a group or
//! joins two is found.

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
}

/// Per source inode (owned by this rank): the target inode its first name
/// seen names, and that name.
#[derive(Default)]
pub struct LinkGroups(Mutex<HashMap<Ident, (Ident, Vec<u8>)>>);

impl VerifyPass {
    /// A hardlinked file compared by this rank: its pair goes to the owner.
    pub(super) fn link_name(&self, rel: &[u8], s: &Stat, d: &Stat, out: &mut Emitter<'_, Item>) {
        let owner = crate::passes::copy::mix(s.dev, s.ino) % self.ctx.size.max(1) as u64;
        let name = LinkName {
            rel: rel.to_vec(),
            src: s.ident(),
            dst: d.ident(),
        };
        out.send_to(owner as usize, Item::Link(name));
    }

    /// On the owner: the same source inode must always name the same target inode.
    pub(super) fn link_check(&self, n: LinkName) {
        let first = {
            let mut g = self.links.0.lock().unwrap_or_else(|p| p.into_inner());
            match g.get(&n.src) {
                Some((dst, _)) if *dst == n.dst => return,
                Some((_, first)) => first.clone(),
                None => {
                    g.insert(n.src, (n.dst, n.rel));
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
}
