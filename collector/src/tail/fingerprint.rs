//! File identity across renames: device + inode, plus a hash of the file's first bytes so a
//! reused inode (a new file that got the number of a deleted one) is not mistaken for the
//! file a checkpoint was taken on.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

/// How many leading bytes identify a file's content. Docker json-file lines start with a
/// unique timestamp well within this, so two files share a head only if they are the same.
pub const HEAD_BYTES: u32 = 256;

/// A file's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// How many head bytes `head_hash` covers (fewer than [`HEAD_BYTES`] while the file is
    /// shorter; refreshed as it grows).
    pub head_len: u32,
    /// FNV-1a 64 of those bytes (stable across builds, unlike `DefaultHasher`).
    pub head_hash: u64,
}

impl Fingerprint {
    /// The identity of a checkpoint that is not a file's (the collector's own lifecycle and
    /// metrics records, whose offset is a time): no device, inode or head.
    pub const NOT_A_FILE: Self = Self {
        dev: 0,
        ino: 0,
        head_len: 0,
        head_hash: 0,
    };

    /// Fingerprints an open file, hashing up to `HEAD_BYTES` (at most `limit`) of its head.
    ///
    /// # Errors
    /// `fstat` or the read failed.
    pub fn of(file: &File, limit: u64) -> io::Result<Self> {
        let meta = file.metadata()?;
        let len = meta.len().min(limit).min(u64::from(HEAD_BYTES)) as u32;
        let head_hash = hash_head(file, len)?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            head_len: len,
            head_hash,
        })
    }

    /// Whether `file` is the file this fingerprint was taken of: same device and inode, and
    /// the same bytes at its head.
    pub fn matches(&self, file: &File) -> bool {
        let Ok(meta) = file.metadata() else {
            return false;
        };
        meta.dev() == self.dev
            && meta.ino() == self.ino
            && meta.len() >= u64::from(self.head_len)
            && hash_head(file, self.head_len).is_ok_and(|h| h == self.head_hash)
    }

    /// Whether `(dev, ino)` is this file's.
    pub fn same_inode(&self, dev: u64, ino: u64) -> bool {
        self.dev == dev && self.ino == ino
    }
}

fn hash_head(file: &File, len: u32) -> io::Result<u64> {
    let mut buf = [0u8; HEAD_BYTES as usize];
    let buf = &mut buf[..len as usize];
    file.read_exact_at(buf, 0)?;
    Ok(fnv1a(buf))
}

/// FNV-1a, 64-bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn same_file_matches_and_rewritten_head_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"first line\nsecond\n").unwrap();
        let fp = Fingerprint::of(&File::open(&path).unwrap(), u64::MAX).unwrap();
        assert_eq!(fp.head_len, 18);
        f.write_all(b"more\n").unwrap();
        assert!(
            fp.matches(&File::open(&path).unwrap()),
            "growing keeps identity"
        );
        std::fs::write(&path, b"other line\nsecond\n").unwrap();
        assert!(
            !fp.matches(&File::open(&path).unwrap()),
            "same inode, new content"
        );
        assert!(!fp.matches(&File::create(dir.path().join("g")).unwrap()));
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
