//! What a node database looks like now, to tell whether it changed since the last scan.
//!
//! Size and mtime alone are not enough: in WAL mode a commit lands in `rubix.db-wal` and the
//! main file changes only at checkpoint time. The fingerprint therefore hashes the content of
//! the database and of its `-wal` file if one exists (a node database is megabytes, read at
//! page-cache speed). Files are opened read-only; nothing in the node directory is touched.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::SourceError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbFingerprint {
    /// Bytes in the database file (plus its `-wal`).
    pub size: u64,
    /// The later of the two files' modification times.
    pub modified: Option<SystemTime>,
    /// `sha256:` and the hex digest of both files' contents.
    pub digest: String,
}

/// Fingerprints the database at `db` and its `-wal` file.
pub fn fingerprint(db: &Path) -> Result<DbFingerprint, SourceError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut modified = None;
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let mut buf = vec![0u8; 1 << 16];
    for (i, path) in [db, wal.as_path()].into_iter().enumerate() {
        let ioerr = |e| SourceError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if i == 1 && e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(ioerr(e)),
        };
        let meta = f.metadata().map_err(ioerr)?;
        modified = modified.max(meta.modified().ok());
        // A separator, so moving bytes between the two files changes the digest.
        hasher.update([i as u8]);
        loop {
            let n = f.read(&mut buf).map_err(ioerr)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(DbFingerprint {
        size,
        modified,
        digest: format!("sha256:{hex}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_with_content_including_the_wal_and_not_otherwise() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("rubix.db");
        std::fs::write(&db, b"one").unwrap();
        let a = fingerprint(&db).unwrap();
        assert_eq!(a, fingerprint(&db).unwrap());
        assert_eq!(a.size, 3);
        std::fs::write(t.path().join("rubix.db-wal"), b"frame").unwrap();
        let b = fingerprint(&db).unwrap();
        assert_ne!(a.digest, b.digest);
        assert_eq!(b.size, 8);
        std::fs::remove_file(t.path().join("rubix.db-wal")).unwrap();
        std::fs::write(&db, b"onf").unwrap();
        assert_ne!(a.digest, fingerprint(&db).unwrap().digest);
    }
}
