//! `--from-manifest`: the entries the manifests name, streamed through the
//! engine. A manifest is read a piece at a time by whichever rank runs the
//! piece's item; the piece's entries become `Named` items and the rest of the
//! file one more piece item, queued before them, which the rank runs after
//! them (leaves run newest first). So a rank holds a few pieces' entries,
//! whatever the number of records (figures in docs/manifest.md).
//!
//! A path named by several records of one piece is compared once, by its
//! last record; one named in several pieces (or manifests) is compared once
//! per piece.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

use super::{Item, VerifyPass};
use crate::engine::Emitter;
use crate::errlog::Side;
use crate::manifest::{self, Action, Position};

/// Records per piece, and bytes: a piece of long lines stops early.
const PIECE_RECORDS: usize = 1024;
const PIECE_BYTES: u64 = 4 << 20;

/// The rest of one manifest, from `at` on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Piece {
    /// Which of the `--from-manifest` files (every rank has the same list).
    pub file: usize,
    /// The file as its first piece saw it: a later piece refuses a file
    /// replaced or rewritten meanwhile rather than read a stranger's offsets.
    pub stamp: Option<Stamp>,
    pub at: Position,
}

/// A manifest's inode number and mtime: what another node sees the same (a
/// device number may differ between the nodes mounting one filesystem).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    ino: u64,
    mtime: (i64, i64),
}

/// The first piece of each manifest, for rank 0 to start with.
pub fn first_pieces(files: usize) -> Vec<Item> {
    (0..files)
        .map(|file| {
            Item::Manifest(Piece {
                file,
                stamp: None,
                at: Position::default(),
            })
        })
        .collect()
}

impl VerifyPass {
    fn manifest_error(&self, e: &dyn std::fmt::Display) {
        let msg = format!("--from-manifest: {e}");
        self.ctx.log.error_msg(Side::Source, b"", &msg);
    }

    /// Read one piece: its entries as items, then the rest of the file as
    /// the next piece. A bad record is one line naming the file and line;
    /// reading goes on with the next.
    pub(super) fn piece(&self, p: Piece, out: &mut Emitter<'_, Item>) {
        let Some(path) = self.from.get(p.file) else {
            return;
        };
        let max = self.opts.manifest_max_bytes;
        let (mut records, meta) = match manifest::read_at(path, p.at, max) {
            Ok(v) => v,
            Err(e) => return self.manifest_error(&e),
        };
        let stamp = Stamp {
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        };
        if p.stamp.is_some_and(|s| s != stamp) {
            let e = format!("{}: replaced or changed while it was read", path.display());
            return self.manifest_error(&e);
        }
        let (named, more) = self.read_piece(&mut records, p.at);
        // First, so the oldest of the leaves it makes: the rank runs its
        // leaves newest first, so the next piece waits for these entries.
        // (Not a branch: an I/O thread runs the branch an item made itself,
        // next, and the reading would outrun the comparing.)
        if more && !out.stopping() {
            out.push(Item::Manifest(Piece {
                file: p.file,
                stamp: Some(stamp),
                at: records.at(),
            }));
        }
        for (rel, removed) in named {
            out.push(Item::Named { rel, removed });
        }
    }

    /// One piece's entries, each with whether its last record removed it;
    /// true if the file goes on.
    fn read_piece(
        &self,
        records: &mut manifest::Records,
        from: Position,
    ) -> (HashMap<Vec<u8>, bool>, bool) {
        let mut named = HashMap::new();
        let mut n = 0;
        while let Some(r) = records.next() {
            match r {
                Ok((Action::Skipped(_), _)) => {}
                Ok((action, rel)) => {
                    named.insert(rel, matches!(action, Action::Removed { .. }));
                }
                Err(e) => self.manifest_error(&e),
            }
            n += 1;
            let read = records.at().offset - from.offset;
            if n >= PIECE_RECORDS || read >= PIECE_BYTES {
                return (named, true);
            }
        }
        (named, false)
    }
}
