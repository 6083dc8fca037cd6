//! `--log-file PATH`: log lines appended to a file that rotates by size, so an unattended
//! `watch` (or a cron job) never fills the disk: PATH → PATH.1 → … → PATH.KEEP, the oldest
//! dropped. Rotation happens between lines (the tracing layer writes one event per call).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
    /// The last byte written ended a line: only then may the file rotate.
    at_line_start: bool,
}

fn open(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingFile {
    /// Opens (appending) `path`; it rotates once it would pass `max_bytes`, keeping `keep`
    /// old files (0: the file is simply truncated when full).
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<RotatingFile> {
        let (file, size) = open(path)?;
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep,
            file,
            size,
            at_line_start: true,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(numbered(&self.path, self.keep));
            for n in (1..self.keep).rev() {
                let from = numbered(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, numbered(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        let (file, size) = open(&self.path)?;
        self.file = file;
        self.size = size;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.at_line_start && self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            // A failed rotation must not lose the line: keep writing to the current file.
            if let Err(e) = self.rotate() {
                eprintln!(
                    "rubix-sync: warning: cannot rotate {}: {e}",
                    self.path.display()
                );
            }
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        if n > 0 {
            self.at_line_start = buf[n - 1] == b'\n';
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("run.log");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..10 {
            // 40 bytes a line, one write per line (as tracing writes): two lines per file.
            f.write_all(format!("{i:039}\n").as_bytes()).unwrap();
        }
        drop(f);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path).lines().count(), 2);
        assert!(read(&path).ends_with(&format!("{:039}\n", 9)));
        assert!(read(&numbered(&path, 1)).starts_with(&format!("{:039}\n", 6)));
        assert!(read(&numbered(&path, 2)).starts_with(&format!("{:039}\n", 4)));
        assert!(!numbered(&path, 3).exists(), "only KEEP old files");
        for p in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
            assert!(std::fs::metadata(p).unwrap().len() <= 100);
        }
    }

    #[test]
    fn a_line_written_in_pieces_is_never_split_across_files() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("run.log");
        let mut f = RotatingFile::open(&path, 100, 9).unwrap();
        for i in 0..20 {
            // Padding is written a few bytes at a time.
            writeln!(f, "{i:039}").unwrap();
        }
        drop(f);
        let mut lines = 0;
        for p in std::iter::once(path.clone()).chain((1..=9).map(|n| numbered(&path, n))) {
            if let Ok(text) = std::fs::read_to_string(&p) {
                assert!(text.ends_with('\n'), "whole lines only: {text:?}");
                assert!(text.lines().all(|l| l.len() == 39), "{text:?}");
                lines += text.lines().count();
            }
        }
        assert_eq!(lines, 20);
    }
}
