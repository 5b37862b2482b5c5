//! The history on disk: `history.jsonl` (live) and `history.1.jsonl` (the one before), one
//! JSON record per line, each line written whole and fsync'd before the change it records is
//! reported. A line cut short by a crash is skipped when the files are read back.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::Record;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("audit history {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub(super) struct Log {
    live: PathBuf,
    rotated: PathBuf,
    file: File,
    size: u64,
    /// The live file rotates when a record would take it past this.
    rotate_at: u64,
}

impl Log {
    /// Opens (creating the folder and file when needed) and reads back every record, oldest
    /// first.
    pub(super) fn open(dir: &Path, max_bytes: u64) -> Result<(Log, Vec<Record>), LogError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let live = dir.join("history.jsonl");
        let rotated = dir.join("history.1.jsonl");
        let mut file = append_to(&live)?;
        let mut size = file.metadata().map_err(|e| io(&live, e))?.len();
        if size > 0 && !ends_with_newline(&live)? {
            // A line cut short by a crash: end it, so the next record starts on its own line.
            file.write_all(b"\n").map_err(|e| io(&live, e))?;
            size += 1;
        }
        let log = Log { live, rotated, file, size, rotate_at: max_bytes / 2 };
        let records = log.read_all()?;
        Ok((log, records))
    }

    pub(super) fn append(&mut self, record: &Record) -> Result<(), LogError> {
        let mut line = serde_json::to_vec(record).map_err(|e| io(&self.live, e.into()))?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.rotate_at {
            self.rotate()?;
        }
        self.file.write_all(&line).map_err(|e| io(&self.live, e))?;
        self.file.sync_data().map_err(|e| io(&self.live, e))?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// The live file becomes `history.1.jsonl` (replacing the older one); a new live file starts.
    fn rotate(&mut self) -> Result<(), LogError> {
        std::fs::rename(&self.live, &self.rotated).map_err(|e| io(&self.rotated, e))?;
        self.file = append_to(&self.live)?;
        self.size = 0;
        if let Some(dir) = self.live.parent() {
            // The rename itself must survive a crash too.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Every record of both files, oldest first.
    pub(super) fn read_all(&self) -> Result<Vec<Record>, LogError> {
        let mut records = read_lines(&self.rotated)?;
        records.extend(read_lines(&self.live)?);
        Ok(records)
    }
}

fn append_to(path: &Path) -> Result<File, LogError> {
    OpenOptions::new().create(true).append(true).open(path).map_err(|e| io(path, e))
}

fn ends_with_newline(path: &Path) -> Result<bool, LogError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).map_err(|e| io(path, e))?;
    f.seek(SeekFrom::End(-1)).map_err(|e| io(path, e))?;
    let mut last = [0u8];
    f.read_exact(&mut last).map_err(|e| io(path, e))?;
    Ok(last[0] == b'\n')
}

fn read_lines(path: &Path) -> Result<Vec<Record>, LogError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path, e)),
    };
    let mut records = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| io(path, e))?;
        match serde_json::from_str::<Record>(&line) {
            Ok(r) => records.push(r),
            Err(e) => {
                tracing::warn!(path = %path.display(), line = n + 1, error = %e, "audit history: skipped a line")
            }
        }
    }
    Ok(records)
}

fn io(path: &Path, source: std::io::Error) -> LogError {
    LogError::Io { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::super::{Actor, Cause, Entry, History};
    use super::*;
    use crate::config::AuditConfig;

    fn entry(generation: u64) -> Entry {
        Entry {
            generation,
            previous_generation: generation - 1,
            applied: true,
            cause: Cause::new("reload", "test", Actor::FileWatch),
            routing_before: serde_json::json!({"m": {"primary": 1}}),
            routing_after: serde_json::json!({"m": {"primary": 2}}),
            config: Some("x".repeat(200)),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gw-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_survive_a_restart_and_numbering_continues() {
        let dir = temp_dir("restart");
        let config = AuditConfig { dir: Some(dir.clone()), max_bytes: 1 << 20 };
        let h = History::open(&config).unwrap();
        h.append(entry(2));
        h.append(entry(3));
        drop(h);
        let h = History::open(&config).unwrap();
        let r = h.append(entry(4)).unwrap();
        assert_eq!(r.seq, 3);
        let page = h.page(None, 10).unwrap();
        assert_eq!(page.records.iter().map(|r| r.generation).collect::<Vec<_>>(), [4, 3, 2]);
        // Plain JSON lines, one per record.
        let text = std::fs::read_to_string(dir.join("history.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 3);
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_bounds_the_files() {
        let dir = temp_dir("rotate");
        let max_bytes = 4096;
        let h = History::open(&AuditConfig { dir: Some(dir.clone()), max_bytes }).unwrap();
        for g in 2..200 {
            h.append(entry(g));
        }
        let size = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0);
        assert!(size("history.1.jsonl") > 0, "never rotated");
        assert!(size("history.jsonl") + size("history.1.jsonl") <= max_bytes);
        // The newest records are kept; the oldest went with the rotations.
        let page = h.page(None, 1000).unwrap();
        assert_eq!(page.records.first().map(|r| r.generation), Some(199));
        assert!(page.records.last().map(|r| r.generation).unwrap() > 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = temp_dir("torn");
        let config = AuditConfig { dir: Some(dir.clone()), max_bytes: 1 << 20 };
        let h = History::open(&config).unwrap();
        h.append(entry(2));
        drop(h);
        let mut f = OpenOptions::new().append(true).open(dir.join("history.jsonl")).unwrap();
        f.write_all(b"{\"seq\": 2, \"at\": \"20").unwrap();
        drop(f);
        let h = History::open(&config).unwrap();
        assert_eq!(h.page(None, 10).unwrap().records.len(), 1);
        // The next record is whole despite the torn line before it.
        h.append(entry(3));
        drop(h);
        let h = History::open(&config).unwrap();
        assert_eq!(
            h.page(None, 10).unwrap().records.iter().map(|r| r.generation).collect::<Vec<_>>(),
            [3, 2]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
