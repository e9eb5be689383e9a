//! `--from-manifest` for copy and final: exactly the entries the manifests
//! name (a verify's differences, a pass's `failed` records) are looked at
//! again and fixed, nothing else walked: the repair after a verify.
//!
//! Rank 0 reads the manifests (each bounded by `from_manifest_max_bytes`,
//! records by `manifest::LINE_MAX`) and groups the names by directory: the
//! memory is the number of names, which for a repair is the differences
//! found, not the tree (verify streams instead, docs/manifest.md).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::PathBuf;

use super::{copy, final_pass, Batch, Ctx, DirIds};
use crate::errlog::Side;
use crate::fsops::{self, Kind};
use crate::manifest;

type Names = BTreeSet<Vec<u8>>;

/// Named entries by directory: names to compare (and, for a final pass,
/// remove when the source lacks them), and subdirectories both sides have,
/// whose own metadata only is looked at.
#[derive(Default)]
pub struct Named {
    dirs: BTreeMap<Vec<u8>, (Names, Names)>,
    /// The root itself was named.
    root: bool,
    pub records: u64,
}

/// Read the manifests; a bad record or an unreadable manifest is one error
/// line (naming file and line), and reading goes on.
pub fn read(ctx: &Ctx, files: &[PathBuf], max_bytes: u64) -> Named {
    let mut n = Named::default();
    for path in files {
        let records = match manifest::read_at(path, Default::default(), max_bytes) {
            Ok((r, _)) => r,
            Err(e) => {
                ctx.log
                    .error_msg(Side::Source, b"", &format!("--from-manifest: {e}"));
                continue;
            }
        };
        for r in records {
            match r {
                Ok((_, rel)) => n.add(rel),
                Err(e) => ctx
                    .log
                    .error_msg(Side::Source, b"", &format!("--from-manifest: {e}")),
            }
        }
    }
    n
}

impl Named {
    fn add(&mut self, rel: Vec<u8>) {
        self.records += 1;
        if rel.is_empty() {
            self.root = true;
            return;
        }
        let (dir, name) = fsops::parent_and_name(&rel);
        let slot = self.dirs.entry(dir.to_vec()).or_default();
        slot.0.insert(name.to_vec());
    }

    /// A named directory that both sides have is settled, not walked whole
    /// (its entries, if they differ, are named themselves).
    fn split_dirs(&mut self, ctx: &Ctx) {
        for (dir, (names, subdirs)) in self.dirs.iter_mut() {
            let (Ok((sd, _)), Ok((dd, _))) =
                (ctx.open_src_dir(dir, None), ctx.open_dst_dir(dir, None))
            else {
                continue;
            };
            let both_dirs = |n: &Vec<u8>| {
                let is_dir = |fd, n| fsops::stat_at(fd, n).is_ok_and(|s| s.kind == Kind::Dir);
                is_dir(sd.as_fd(), n) && is_dir(dd.as_fd(), n)
            };
            let moved: Vec<Vec<u8>> = names.iter().filter(|n| both_dirs(n)).cloned().collect();
            for m in moved {
                names.remove(&m);
                subdirs.insert(m);
            }
        }
    }

    /// The final pass's work: each name compared, copied or (gone from the
    /// source: ENOENT only) removed; named directories settled.
    pub fn final_items(mut self, ctx: &Ctx) -> Vec<final_pass::Item> {
        self.split_dirs(ctx);
        let root = self.root;
        let mut items: Vec<final_pass::Item> = self
            .dirs
            .into_iter()
            .map(|(rel, (names, subdirs))| final_pass::Item::Names {
                itself: root && rel.is_empty(),
                ids: DirIds::default(),
                names: names.into_iter().map(|n| (n, true)).collect(),
                subdirs: subdirs.into_iter().collect(),
                rel,
            })
            .collect();
        let root_listed = items
            .iter()
            .any(|i| matches!(i, final_pass::Item::Names { rel, .. } if rel.is_empty()));
        if root && !root_listed {
            items.push(final_pass::Item::Names {
                rel: Vec::new(),
                ids: DirIds::default(),
                names: Vec::new(),
                subdirs: Vec::new(),
                itself: true,
            });
        }
        items
    }

    /// The copy pass's work: each name compared and copied (a named
    /// directory is walked whole: the copy has no lighter look at one).
    pub fn copy_items(self, batch: usize) -> Vec<copy::Item> {
        let mut items = Vec::new();
        for (dir, (names, subdirs)) in self.dirs {
            let all: Vec<Vec<u8>> = names.into_iter().chain(subdirs).collect();
            for part in all.chunks(batch.max(1)) {
                items.push(copy::Item::Batch(Batch {
                    dir: dir.clone(),
                    ids: DirIds::default(),
                    names: part.to_vec(),
                    absent: false,
                    inos: Vec::new(),
                }));
            }
        }
        items
    }
}
