//! `--pass final --changes JOURNAL`: the downtime pass's work from an
//! `lmpi track` journal, or the one reason it walks everything instead.
//! If in doubt, walk: a journal with a loss or a gap, one its tracker did
//! not close, one that watches another tree, or one whose tracker started
//! after the last clean pass began cannot stand for every change.

use std::path::Path;

use super::final_pass::Item;
use super::{Ctx, DirIds};
use crate::fsops::{self, Ident};
use crate::track::{journal, resolve, synced};

pub enum Seeds {
    /// The journal's directories, and a line for the summary.
    Changes(Vec<Item>, String),
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
    if let Some(d) = &j.doubt {
        return Err(WalkWhy::Doubt(d.clone()));
    }
    let here = resolve::watched_fd(ctx.src()).map_err(WalkWhy::Root)?;
    if j.watched != here {
        return Err("it watches another tree than this source".into());
    }
    let last = synced::read(ctx.dst())
        .ok_or("the target records no clean final pass (one that ended with nothing failed; a copy pass leaves directory times, so only a final counts)")?;
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
    let entries: usize = plan.dirs.values().map(|w| w.names.len()).sum();
    let note = format!(
        "--changes: {entries} entries in {} directories from the journal ({} records gone or outside the tree)",
        plan.dirs.len(),
        plan.skipped
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
    let s = synced::Synced {
        started_ns,
        source_root: root,
    };
    if let Err(e) = synced::mark(ctx.dst(), s) {
        let msg = format!("the target root's record of this clean pass was not written ({e}): a later --changes pass walks everything");
        ctx.log.note(crate::errlog::Side::Target, b"", &msg);
    }
}
