//! The action sink: every pass hands each action it takes (or, in a dry
//! run, would take) to `Ctx::act`, and only here is it said and recorded.
//! A dry run prints the "would ..." line, one write per line so lines from
//! I/O threads (and ranks sharing a terminal) never mix; with `--manifest`
//! every action also goes to this rank's part of the manifest.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::manifest::{self, Action, ManifestError};

/// This rank's part of the manifest: buffered; the first write error sticks.
struct Part {
    path: PathBuf,
    /// Its inode, which the merge checks (a part swapped meanwhile is refused).
    ino: u64,
    w: BufWriter<File>,
    failed: Option<std::io::Error>,
}

pub struct Sink {
    dry_run: bool,
    part: Option<Mutex<Part>>,
}

/// 1 MiB: a few thousand records between writes.
const BUF: usize = 1 << 20;

impl Sink {
    /// A sink without a manifest.
    pub fn new(dry_run: bool) -> Sink {
        Sink {
            dry_run,
            part: None,
        }
    }

    /// A sink recording into `part` (created or truncated now, so a
    /// manifest that cannot be written is known before the pass starts).
    pub fn with_manifest(dry_run: bool, part: &Path) -> Result<Sink, ManifestError> {
        let (fd, st, _) = crate::fsops::open_own_output_path(
            part,
            crate::fsops::Existing::Truncate,
            manifest::MODE,
        )?;
        let f = File::from(fd);
        Ok(Sink {
            dry_run,
            part: Some(Mutex::new(Part {
                path: part.to_path_buf(),
                ino: st.ino,
                w: BufWriter::with_capacity(BUF, f),
                failed: None,
            })),
        })
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub fn records(&self) -> bool {
        self.part.is_some()
    }

    /// The inode of this rank's part (0: no manifest), for the merge.
    pub fn part_ino(&self) -> u64 {
        self.part
            .as_ref()
            .map(|p| p.lock().unwrap_or_else(|p| p.into_inner()).ino)
            .unwrap_or(0)
    }

    /// Say (in a dry run) and record one action on `rel`.
    pub fn act(&self, rel: &[u8], a: &Action) {
        if self.dry_run {
            if let Some(line) = a.would(rel) {
                say(line);
            }
        }
        let Some(part) = &self.part else { return };
        let rec = manifest::record(a, rel);
        let mut p = part.lock().unwrap_or_else(|p| p.into_inner());
        if p.failed.is_none() {
            // One write_all per record: the buffer only ever holds whole
            // records, so what reaches the file is whole lines.
            if let Err(e) = p.w.write_all(&rec) {
                p.failed = Some(e);
            }
        }
    }

    /// Flush the part to the file; the first write error of the pass, if any.
    pub fn finish(&self) -> Result<(), ManifestError> {
        let Some(part) = &self.part else {
            return Ok(());
        };
        let mut p = part.lock().unwrap_or_else(|p| p.into_inner());
        let r = match p.failed.take() {
            Some(e) => Err(e),
            None => p.w.flush().and_then(|()| p.w.get_ref().sync_data()),
        };
        r.map_err(|e| ManifestError::io(&p.path, e))
    }

    /// Last words before a hard exit (the stop watchdog): flush what the
    /// buffer holds unless an I/O thread holds it (then never wait).
    pub fn flush_now(&self) {
        if let Some(Ok(mut p)) = self.part.as_ref().map(Mutex::try_lock) {
            let _ = p.w.flush();
        }
    }
}

/// One line to stdout as one write.
fn say(mut line: String) {
    line.push('\n');
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_reach_the_part_whole() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let part = dir.path().join("m.rank0");
        let s = std::sync::Arc::new(Sink::with_manifest(false, &part)?);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let name = format!("t{t}/f{i}\n");
                        s.act(name.as_bytes(), &Action::Removed { dir: false });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().map_err(|_| "thread panicked")?;
        }
        s.finish()?;
        let n = manifest::read(&part)?.collect::<Result<Vec<_>, _>>()?.len();
        assert_eq!(n, 8000);
        Ok(())
    }
}
