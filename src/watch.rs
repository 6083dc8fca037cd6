//! `watch`: periodic incremental runs of `sync` or `scan`, for operators who want one long
//! process (a systemd service) instead of a timer or cron.
//!
//! Each run is an ordinary incremental run (a re-sync of an unchanged node costs seconds).
//! Between runs it sleeps the interval plus a random jitter (so a fleet of VMs does not hit
//! the central database at the same second), waking at once on SIGTERM/SIGINT; a signal
//! during a run lets that run commit its batches and record itself, then `watch` ends.
//!
//! Never two runs of the same job at once: each run holds an exclusive lock file in our own
//! state directory (never in a node's), shared with plain `sync`/`scan` runs of that job, so a
//! cron job and a `watch` cannot overlap. A run that finds the lock taken is skipped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An exclusive lock on a job, released when dropped (or when the process dies: flock).
#[derive(Debug)]
pub struct JobLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another rubix-sync run of this job is in progress (lock {path} held{holder}); not starting a second one")]
    Busy { path: String, holder: String },
    #[error("cannot use the lock file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Our state directory: `RUBIX_SYNC_STATE_DIR`, else `~/.local/state/rubix-sync` (the
/// `directories` state dir), else the data dir.
pub fn state_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("RUBIX_SYNC_STATE_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    directories::ProjectDirs::from("", "", "rubix-sync")
        .map(|d| {
            d.state_dir()
                .unwrap_or_else(|| d.data_local_dir())
                .to_path_buf()
        })
        .unwrap_or_else(|| std::env::temp_dir().join("rubix-sync-state"))
}

/// The lock file of a job: its command and the canonical path it works on.
pub fn lock_path(dir: &Path, command: &str, target: &Path) -> PathBuf {
    use sha2::Digest;
    let canonical = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{command}-{hex}.lock"))
}

/// Takes the job's lock without waiting.
pub fn lock(command: &str, target: &Path) -> Result<JobLock, LockError> {
    let dir = state_dir();
    let path = lock_path(&dir, command, target);
    let io = |source| LockError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&path)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .map_or_else(String::new, |s| format!(" by {s}"));
        return Err(LockError::Busy {
            path: path.display().to_string(),
            holder,
        });
    }
    // Who holds it, for the next one's message.
    let _ = file.set_len(0);
    let _ = writeln!(
        file,
        "pid {} ({} {})",
        std::process::id(),
        command,
        target.display()
    );
    Ok(JobLock { _file: file, path })
}

/// How `watch` paces its runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub interval: Duration,
    /// Each pause is the interval plus a random part of this.
    pub jitter: Duration,
    /// Stop after this many runs (0: until a signal).
    pub runs: u64,
}

/// A random duration in [0, max], without a random-number crate: jitter needs spread across
/// machines and runs, not cryptographic quality.
fn jitter(max: Duration, salt: u64) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x =
        nanos ^ (u64::from(std::process::id()) << 32) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    Duration::from_nanos(x % (max.as_nanos() as u64).max(1))
}

/// Sleeps `d`, waking early when `stop` is set; true if it slept the whole time.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(200)));
    }
    !stop.load(Ordering::Relaxed)
}

/// Runs `run_once` every interval until `stop` (or `runs` runs). Returns the exit code of
/// the last run, or `interrupted` if a signal ended the loop.
pub fn watch(
    opts: &WatchOptions,
    stop: &AtomicBool,
    interrupted: u8,
    mut run_once: impl FnMut(u64) -> u8,
) -> u8 {
    let mut n = 0u64;
    loop {
        n += 1;
        let started = Instant::now();
        let last = run_once(n);
        tracing::info!(
            run = n,
            exit_code = last,
            seconds = started.elapsed().as_secs_f64(),
            "watch: run finished"
        );
        if stop.load(Ordering::Relaxed) {
            return interrupted;
        }
        if opts.runs > 0 && n >= opts.runs {
            return last;
        }
        let wait = opts.interval + jitter(opts.jitter, n);
        tracing::info!(next_in_s = wait.as_secs_f64(), "watch: sleeping");
        if !pause(wait, stop) {
            return interrupted;
        }
    }
}

/// `30s`, `15m`, `1h`, `2h30m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: expected e.g. 30s, 15m, 1h"))?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(format!("{s:?}: unknown unit {c:?} (s, m, h, d)")),
        };
    }
    if !num.is_empty() || s.is_empty() {
        return Err(format!("{s:?}: expected e.g. 30s, 15m, 1h"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h30m").unwrap(), Duration::from_secs(9000));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn jitter_stays_in_range_and_spreads() {
        let max = Duration::from_secs(60);
        let all: Vec<Duration> = (0..200).map(|i| jitter(max, i)).collect();
        assert!(all.iter().all(|d| *d <= max));
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert!(distinct.len() > 150, "spread: {}", distinct.len());
        assert_eq!(jitter(Duration::ZERO, 1), Duration::ZERO);
    }

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("state");
        // The lock path depends only on the command and the target.
        let a = lock_path(&dir, "sync", t.path());
        assert_eq!(a, lock_path(&dir, "sync", &t.path().join(".")));
        assert_ne!(a, lock_path(&dir, "scan", t.path()));
        std::fs::create_dir_all(&dir).unwrap();
        let take = || {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&a)
                .unwrap();
            let ok = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            (f, ok)
        };
        let (held, ok) = take();
        assert!(ok);
        assert!(!take().1, "a second holder is refused");
        drop(held);
        assert!(take().1, "released on drop");
    }

    #[test]
    fn the_loop_runs_n_times_and_stops_on_the_flag() {
        let stop = AtomicBool::new(false);
        let opts = WatchOptions {
            interval: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            runs: 3,
        };
        let mut seen = Vec::new();
        assert_eq!(
            watch(&opts, &stop, 130, |n| {
                seen.push(n);
                0
            }),
            0
        );
        assert_eq!(seen, [1, 2, 3]);
        let forever = WatchOptions { runs: 0, ..opts };
        let code = watch(&forever, &stop, 130, |n| {
            if n == 2 {
                stop.store(true, Ordering::Relaxed);
            }
            3
        });
        assert_eq!(code, 130);
    }
}
