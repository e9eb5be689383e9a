//! `--pass final --changes JOURNAL`: the downtime pass's work from an
//! `lmpi track` journal, or the one reason it walks everything instead.
//! If in doubt, walk: a journal with a loss or a gap, one its tracker did
//! not close, one that watches another tree, or one whose tracker started
//! after the last clean pass began cannot stand for every change.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;

use super::final_pass::Item;
use super::{copy, Ctx, DirIds};
use crate::fsops::{self, Ident, Kind};
use crate::track::{journal, resolve, synced};

pub enum Seeds<I = Item> {
    /// The journal's (or manifests') directories, and a line for the summary.
    Changes(Vec<I>, String),
    /// Why the whole tree is walked.
    Walk(WalkWhy),
}

/// Why a journal cannot stand for every change.
#[derive(Debug, thiserror::Error)]
pub enum WalkWhy {
    #[error(transparent)]
    Journal(#[from] crate::track::TrackError),
    #[error("source root: {0}")]
    Root(fsops::OsError),
    #[error("{0}")]
    Doubt(String),
}

impl From<&str> for WalkWhy {
    fn from(s: &str) -> WalkWhy {
        WalkWhy::Doubt(s.to_string())
    }
}

/// Rank 0's seeds for a final pass with `--changes journal` (`lustre`:
/// where liblustreapi is, for a changelog journal's FIDs).
pub fn seeds(ctx: &Ctx, path: &Path, lustre: &crate::lustre::LustreConfig) -> Seeds {
    match plan(ctx, path, lustre) {
        Ok((items, note)) => Seeds::Changes(items, note),
        Err(why) => Seeds::Walk(why),
    }
}

fn plan(
    ctx: &Ctx,
    path: &Path,
    lustre: &crate::lustre::LustreConfig,
) -> Result<(Vec<Item>, String), WalkWhy> {
    let j = journal::read(path)?;
    trusted(ctx, &j)?;
    let has_fids = j.changes.iter().any(|c| match c {
        crate::track::Change::Entry { dir: h, .. } | crate::track::Change::Itself(h) => {
            h.as_fid().is_some()
        }
        crate::track::Change::Loss(_) => false,
    });
    let fids = match has_fids {
        true => Some(crate::track::changelog::FidPaths::new(lustre, ctx.src())?),
        false => None,
    };
    let plan = resolve::plan(&j, ctx.src(), fids.as_ref())?;
    let renamed = follow_renames(ctx, &plan);
    let entries: usize = plan.dirs.values().map(|w| w.names.len()).sum();
    let note = format!(
        "--changes: {entries} entries in {} directories from the journal ({} records gone or outside the tree); {renamed} directories renamed on the target as on the source; {} filesystems mounted inside the source walked whole",
        plan.dirs.len(),
        plan.skipped,
        plan.mounts
    );
    let items = plan
        .dirs
        .into_iter()
        .filter(|(rel, _)| !(ctx.filter.has_excludes() && ctx.filter.excluded(rel)))
        .map(|(rel, w)| Item::Names {
            ids: DirIds {
                src: w.id,
                dst: None,
            },
            names: w.names.into_iter().collect(),
            subdirs: w.subdirs.into_iter().collect(),
            itself: w.itself,
            rel,
        })
        .collect();
    Ok((items, note))
}

/// Whether journal `j` can stand for every change since the target's last
/// clean final pass; Err: why not (the pass walks everything).
fn trusted(ctx: &Ctx, j: &journal::Journal) -> Result<(), WalkWhy> {
    if let Some(d) = &j.doubt {
        return Err(WalkWhy::Doubt(d.clone()));
    }
    let here = resolve::watched_fd(ctx.src()).map_err(WalkWhy::Root)?;
    if j.watched != here {
        return Err("it watches another tree than this source".into());
    }
    let record = synced::read(ctx.dst())
        .ok_or("the target records no clean final pass (one that ended with nothing failed; a copy pass leaves directory times, so only a final counts)")?;
    match ctx.filter.fingerprint() {
        Some(f) if f == record.filter => {}
        Some(_) => {
            return Err(
                "the last clean final pass left out other paths (--exclude) than this one".into(),
            )
        }
        None => {
            return Err(
                "an age filter (oldest_date/newest_date) leaves out what moves with the clock"
                    .into(),
            )
        }
    }
    let last = record.synced;
    let root = Ident {
        dev: here.root_dev,
        ino: here.root_ino,
    };
    if last.source_root != root {
        return Err("the target's last clean pass copied another source".into());
    }
    let since = j.since_ns.ok_or("it has no start")?;
    if since + synced::CLOCK_SKEW_NS > last.started_ns {
        return Err("its tracker started after the last clean pass began (or within the 2 s allowed for clock skew)".into());
    }
    // A pass after the tracker stopped (this journal used once already)
    // starts from a time the journal does not cover.
    if j.stop_ns.is_some_and(|stop| last.started_ns > stop) {
        return Err("it ended before the last clean pass began (it was used already)".into());
    }
    Ok(())
}

/// Where a directory was renamed on the source (its old name went, a
/// directory with its identity appeared under a new one), rename its copy
/// on the target (found by `trusted.lmpi.src`), so the walk of the new name
/// that follows finds the data in place instead of copying it again. Only
/// where the new name is free on the target; anything unclear is left to
/// the walk (remove and copy). Returns how many were renamed.
fn follow_renames(ctx: &Ctx, plan: &resolve::Plan) -> usize {
    if ctx.dry_run || !ctx.is_root {
        return 0;
    }
    let mut gone: HashMap<Vec<u8>, (Vec<u8>, Vec<u8>)> = HashMap::new();
    let mut appeared: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = Vec::new();
    for (rel, w) in &plan.dirs {
        if w.moved.is_empty() {
            continue;
        }
        let (Ok((sd, _)), Ok((dd, _))) = (ctx.open_src_dir(rel, w.id), ctx.open_dst_dir(rel, None))
        else {
            continue;
        };
        let excluded =
            |n: &[u8]| ctx.filter.has_excludes() && ctx.filter.excluded(&fsops::join(rel, n));
        for name in w.moved.iter().filter(|n| !excluded(n)) {
            let there = fsops::stat_at(dd.as_fd(), name);
            match (fsops::stat_at(sd.as_fd(), name), there) {
                (Ok(s), Err(e)) if s.kind == Kind::Dir && e.is_not_found() => {
                    appeared.push((rel.clone(), name.clone(), copy::dir_source_mark(&s)));
                }
                (Err(e), Ok(d)) if e.is_not_found() && d.kind == Kind::Dir => {
                    if let Ok(m) = fsops::get_xattr(None, dd.as_fd(), name, copy::DIR_SOURCE_KEY) {
                        gone.insert(m, (rel.clone(), name.clone()));
                    }
                }
                _ => {}
            }
        }
    }
    // Shallow first: a parent moved before its child is looked for.
    appeared.sort_by_key(|(rel, _, _)| rel.iter().filter(|&&b| b == b'/').count());
    let mut renamed = 0;
    for (rel, name, mark) in appeared {
        let Some((from_rel, from_name)) = gone.remove(&mark) else {
            continue;
        };
        let moved = ctx.open_dst_dir(&from_rel, None).and_then(|(from, _)| {
            let (to, _) = ctx.open_dst_dir(&rel, None)?;
            fsops::rename_noreplace(from.as_fd(), &from_name, to.as_fd(), &name)
        });
        if moved.is_ok() {
            renamed += 1;
        }
    }
    renamed
}

/// Record on the target root that this final pass, begun at `started_ns`,
/// ended clean: every entry and every directory time as the source's when
/// it looked (rank 0, as root; a dry run records nothing).
pub fn mark_synced(ctx: &Ctx, started_ns: u128) {
    if ctx.rank != 0 || ctx.dry_run || !ctx.is_root {
        return;
    }
    let root = match fsops::fstat(ctx.src()) {
        Ok(st) => st.ident(),
        Err(_) => return,
    };
    let Some(filter) = ctx.filter.fingerprint() else {
        return; // under an age filter no pass is a sync to start from
    };
    let synced = synced::Synced {
        started_ns,
        source_root: root,
    };
    if let Err(e) = synced::mark(ctx.dst(), &synced::Record { synced, filter }) {
        let msg = format!("the target root's record of this clean pass was not written ({e}): a later --changes pass walks everything");
        ctx.log.note(crate::errlog::Side::Target, b"", &msg);
    }
}
