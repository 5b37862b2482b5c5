//! The capture folder: file names (`capture-<unix ms>.jsonl.gz`), listing them oldest first,
//! and keeping them under the byte budget by deleting the oldest.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const PREFIX: &str = "capture-";
const SUFFIX: &str = ".jsonl.gz";
/// A file never grows past this before it rotates, whatever the budget.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// One capture file: when it was started (the unix ms in its name), where, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureFile {
    pub started_ms: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

/// A file rotates at an eighth of the budget, 64 MiB at most.
pub fn rotate_at(max_bytes: u64) -> u64 {
    (max_bytes / 8).clamp(1, MAX_FILE_BYTES)
}

/// What the closed files may hold together: the budget less room for the file being written.
/// Two rotation sizes, not one: compressed bytes reach the file in blocks, so the open file
/// can pass its rotation size by up to a block before it rotates.
pub fn closed_budget(max_bytes: u64) -> u64 {
    max_bytes.saturating_sub(2 * rotate_at(max_bytes))
}

/// The unix ms in a capture file's name; `None` for any other file.
pub fn started_ms(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?.parse().ok()
}

/// The capture files in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<CaptureFile>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(started_ms) = started_ms(&path) else { continue };
        // A file deleted meanwhile (by another writer's budget) is simply skipped.
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            files.push(CaptureFile { started_ms, path, bytes: meta.len() });
        }
    }
    files.sort_by_key(|f| f.started_ms);
    Ok(files)
}

/// Creates the next file in `dir` (and `dir` itself when missing), named by the current time;
/// a name already taken (two files within a millisecond) moves on to the next millisecond.
pub fn create(dir: &Path) -> io::Result<(PathBuf, File)> {
    std::fs::create_dir_all(dir)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let newest = list(dir)?.last().map_or(0, |f| f.started_ms + 1);
    let mut ms = now.max(newest);
    loop {
        let path = dir.join(format!("{PREFIX}{ms}{SUFFIX}"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => ms += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Deletes the oldest files of `dir` (never `keep`) until the others hold at most `budget`
/// bytes; returns how many it deleted.
pub fn enforce_budget(dir: &Path, budget: u64, keep: Option<&Path>) -> io::Result<usize> {
    let files: Vec<CaptureFile> = list(dir)?.into_iter().filter(|f| Some(f.path.as_path()) != keep).collect();
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    let mut deleted = 0;
    for f in files {
        if total <= budget {
            break;
        }
        match std::fs::remove_file(&f.path) {
            Ok(()) => deleted += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        total -= f.bytes;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "capture-files-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn sizes() {
        assert_eq!(rotate_at(1 << 20), 128 << 10);
        assert_eq!(rotate_at(1 << 40), 64 << 20);
        assert_eq!(closed_budget(1 << 20), (1 << 20) - (256 << 10));
    }

    #[test]
    fn names_are_unique_and_listed_oldest_first() {
        let dir = scratch("names");
        std::fs::write(dir.join("capture-99.jsonl.gz"), b"x").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let (a, _) = create(&dir).unwrap();
        let (b, _) = create(&dir).unwrap();
        assert_ne!(a, b);
        let listed: Vec<PathBuf> = list(&dir).unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(listed, vec![dir.join("capture-99.jsonl.gz"), a, b]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_oldest_go_first_and_the_kept_file_stays() {
        let dir = scratch("budget");
        for ms in [1, 2, 3, 4] {
            std::fs::write(dir.join(format!("capture-{ms}.jsonl.gz")), vec![0u8; 100]).unwrap();
        }
        let keep = dir.join("capture-1.jsonl.gz");
        assert_eq!(enforce_budget(&dir, 200, Some(&keep)).unwrap(), 1);
        let left: Vec<u64> = list(&dir).unwrap().iter().map(|f| f.started_ms).collect();
        assert_eq!(left, vec![1, 3, 4]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
