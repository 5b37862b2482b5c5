//! Reading capture files back: one file, or every capture file of a folder oldest first, record
//! by record. A file still being written (no gzip trailer yet) or cut short is read up to its
//! last complete record; a line that is not a record is skipped. Both are counted, never fatal.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::files;
use super::record::Record;

/// What reading skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadProblems {
    /// Files that ended before their gzip stream did (still being written, or cut short).
    pub cut_files: u64,
    /// Lines that were not records.
    pub bad_lines: u64,
    /// Files that could not be opened, with why.
    pub unopened: Vec<String>,
}

/// The records of one capture file or of a folder of them, in the order they were written.
pub struct Records {
    pending: VecDeque<PathBuf>,
    current: Option<BufReader<GzDecoder<BufReader<File>>>>,
    line: Vec<u8>,
    problems: ReadProblems,
    files: usize,
}

impl Records {
    /// `path` is a capture file, or a folder whose `capture-*.jsonl.gz` files are read oldest
    /// first.
    pub fn open(path: &Path) -> io::Result<Records> {
        let pending: VecDeque<PathBuf> = if path.is_dir() {
            files::list(path)?.into_iter().map(|f| f.path).collect()
        } else {
            File::open(path)?;
            VecDeque::from([path.to_path_buf()])
        };
        let files = pending.len();
        Ok(Records { pending, current: None, line: Vec::new(), problems: ReadProblems::default(), files })
    }

    /// How many files there are to read.
    pub fn files(&self) -> usize {
        self.files
    }

    pub fn problems(&self) -> &ReadProblems {
        &self.problems
    }

    /// The next record of the current file; `None` at its end (clean or cut).
    fn next_in_file(&mut self) -> Option<Record> {
        let reader = self.current.as_mut()?;
        loop {
            self.line.clear();
            match reader.read_until(b'\n', &mut self.line) {
                Ok(0) => return None,
                Ok(_) if self.line.last() != Some(&b'\n') => {
                    // A last line without its newline: whole only if it parses.
                    return match serde_json::from_slice(&self.line) {
                        Ok(r) => Some(r),
                        Err(_) => {
                            self.problems.cut_files += 1;
                            None
                        }
                    };
                }
                Ok(_) => match serde_json::from_slice(&self.line) {
                    Ok(r) => return Some(r),
                    Err(_) => self.problems.bad_lines += u64::from(!self.line.trim_ascii().is_empty()),
                },
                Err(_) => {
                    // No gzip trailer yet, or a cut: what was whole has been read.
                    self.problems.cut_files += 1;
                    return None;
                }
            }
        }
    }
}

impl Iterator for Records {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(r) = self.next_in_file() {
                return Some(r);
            }
            self.current = None;
            let path = self.pending.pop_front()?;
            match File::open(&path) {
                Ok(f) => self.current = Some(BufReader::new(GzDecoder::new(BufReader::new(f)))),
                Err(e) => self.problems.unopened.push(format!("{}: {e}", path.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn record(n: u64) -> Record {
        Record {
            time_us: n,
            model: "m".into(),
            version: 1,
            role: "primary".into(),
            reason: "primary".into(),
            generation: 1,
            request_id: None,
            tenant: None,
            latency_us: 1,
            inputs: Arc::new(Vec::new()),
            outputs: Arc::new(Vec::new()),
        }
    }

    fn lines(records: impl Iterator<Item = u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for n in records {
            serde_json::to_writer(&mut out, &record(n)).unwrap();
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn a_flushed_file_without_its_trailer_reads_up_to_the_flush() {
        let dir =
            std::env::temp_dir().join(format!("capture-read-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        // An older finished file, then one still open: flushed after 3 records, 2 more pending.
        let mut done = GzEncoder::new(Vec::new(), Compression::fast());
        done.write_all(&lines(0..2)).unwrap();
        std::fs::write(dir.join("capture-1.jsonl.gz"), done.finish().unwrap()).unwrap();
        let path = dir.join("capture-2.jsonl.gz");
        let mut open = GzEncoder::new(File::create(&path).unwrap(), Compression::fast());
        open.write_all(&lines(2..5)).unwrap();
        open.flush().unwrap();
        open.write_all(b"not json\n").unwrap();
        let mut records = Records::open(&dir).unwrap();
        let times: Vec<u64> = records.by_ref().map(|r| r.time_us).collect();
        assert_eq!(times, vec![0, 1, 2, 3, 4]);
        assert_eq!(records.problems().cut_files, 1);
        assert_eq!(records.files(), 2);
        drop(open);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
