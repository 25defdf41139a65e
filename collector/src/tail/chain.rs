//! A log file's rotation chain (`x.log.N` .. `x.log.1`, `x.log`), listed or opened oldest
//! first, in the right order while the writer rotates it.
//!
//! Docker's json-file driver rotates by deleting the oldest file, renaming each rotated file
//! one number up from the oldest end (`x.log.1` to `x.log.2`), then `x.log` to `x.log.1`, and
//! creating a new `x.log` (moby `daemon/logger/loggerutils/logfile.go`). Names are all there
//! is to order files by (inode numbers are not ordered; timestamps are coarser than a fast
//! writer's rotations), and a walk over the names races the renames: a file can move from a
//! name not yet visited to one already visited, or be seen twice, so a walk during two
//! rotations can return a newer file before an older one, or an older and a newer one
//! without the file between them. A tailer that queued files in such an order would read
//! lines out of order.
//!
//! So the walk goes newest first and checks that `x.log` is still the file it started with.
//! If so, no rotation finished during the walk, and at most one was in flight: its renames
//! run from the oldest name towards the newest, the walk from the newest towards the oldest,
//! so they cross once and the walk sees each file in order (one of them perhaps twice, or the
//! deleted one not at all). Otherwise it walks again.

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Highest rotated suffix looked at (`path.1` .. `path.N`).
const MAX_ROTATED_SIBLINGS: u32 = 64;

/// `path.i`.
pub fn rotated_name(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// Walks made at most before a listing taken during rotations is returned as it is (a host
/// so loaded that every walk spans a rotation; the rotation guard's counts still hold).
const MAX_WALKS: usize = 8;

/// Visits `path`, `path.1`, `path.2`, ... newest first, then `path` again; `visit` returns
/// the file's `(dev, ino)` and what to keep, or `None` when there is no regular file at the
/// name. Walks again while `path` changed in the meantime (see the module doc). Returns what
/// was kept, oldest first, each file once.
fn walk<T>(path: &Path, mut visit: impl FnMut(&Path) -> Option<((u64, u64), T)>) -> Vec<T> {
    let mut newest_first: Vec<((u64, u64), T)> = Vec::new();
    for _ in 0..MAX_WALKS {
        newest_first.clear();
        newest_first.extend(visit(path));
        let first = newest_first.first().map(|(id, _)| *id);
        let mut missing = 0;
        for i in 1..=MAX_ROTATED_SIBLINGS {
            match visit(&rotated_name(path, i)) {
                Some(found) => {
                    newest_first.push(found);
                    missing = 0;
                }
                None => {
                    // Docker numbers its rotated files without gaps; tolerate one for the
                    // rename in flight.
                    missing += 1;
                    if missing >= 2 {
                        break;
                    }
                }
            }
        }
        if visit(path).map(|(id, _)| id) == first {
            break;
        }
    }
    let mut seen: Vec<(u64, u64)> = Vec::with_capacity(newest_first.len());
    let mut oldest_first = Vec::with_capacity(newest_first.len());
    for (id, kept) in newest_first.into_iter().rev() {
        if !seen.contains(&id) {
            seen.push(id);
            oldest_first.push(kept);
        }
    }
    oldest_first
}

/// The chain by `stat`, oldest first: each file's name, device and inode.
pub fn list_chain(path: &Path) -> Vec<(PathBuf, u64, u64)> {
    walk(path, |p| {
        let m = std::fs::metadata(p).ok().filter(|m| m.is_file())?;
        Some(((m.dev(), m.ino()), (p.to_owned(), m.dev(), m.ino())))
    })
}

/// The chain opened, oldest first: each file by name, without trusting an earlier `stat`.
pub fn open_chain(path: &Path) -> Vec<(File, PathBuf)> {
    walk(path, |p| {
        let f = File::open(p).ok()?;
        let m = f.metadata().ok().filter(|m| m.is_file())?;
        Some(((m.dev(), m.ino()), (f, p.to_owned())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker's rotation with `max-file=3`: the oldest goes, each file moves one name up, a
    /// new `x.log` holds `content`.
    fn rotate(path: &Path, content: &str) {
        let _ = std::fs::remove_file(rotated_name(path, 2));
        let _ = std::fs::rename(rotated_name(path, 1), rotated_name(path, 2));
        std::fs::rename(path, rotated_name(path, 1)).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn contents(paths: impl IntoIterator<Item = PathBuf>) -> Vec<String> {
        paths
            .into_iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Two rotations land in the middle of a walk (a thread preempted between two `stat`
    /// calls on a busy host), at every point of it: the files still come oldest first,
    /// consecutive, never a newer one before an older one or with the one between missing.
    #[test]
    fn rotations_during_a_walk_leave_files_in_order_without_gaps() {
        for rotate_at in 1..=5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.log");
            std::fs::write(&path, "a").unwrap();
            rotate(&path, "b");
            rotate(&path, "c");
            // x.log.2 = a, x.log.1 = b, x.log = c.
            let mut visits = 0;
            let listed = walk(&path, |p| {
                visits += 1;
                if visits == rotate_at {
                    rotate(&path, "d");
                    rotate(&path, "e");
                }
                let m = std::fs::metadata(p).ok().filter(|m| m.is_file())?;
                Some(((m.dev(), m.ino()), std::fs::read_to_string(p).unwrap()))
            });
            let order = ["a", "b", "c", "d", "e"];
            let first = order.iter().position(|c| *c == listed[0]).unwrap();
            assert_eq!(
                listed,
                order[first..first + listed.len()].to_vec(),
                "rotations at visit {rotate_at}: out of order or a gap"
            );
            assert_eq!(listed.last().map(String::as_str), Some("e"));
        }
    }

    #[test]
    fn list_and_open_agree_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "a").unwrap();
        rotate(&path, "b");
        rotate(&path, "c");
        let listed = contents(list_chain(&path).into_iter().map(|(p, _, _)| p));
        let opened = contents(open_chain(&path).into_iter().map(|(_, p)| p));
        assert_eq!(listed, ["a", "b", "c"]);
        assert_eq!(opened, listed);
    }
}
