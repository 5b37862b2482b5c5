//! A content-addressed cache of model files under one directory: each file is named by the SHA-256
//! of its bytes (`sha256-<hex>.onnx`), written to a hidden temp file beside it, fsynced, verified
//! (size, and checksum when one is expected) and only then renamed into place, so a reader never
//! sees a half-written model. A small index (`index.json`) remembers which content an opaque key
//! (a source's name for a version) resolved to, so a version seen before need not be fetched
//! again. Knows nothing of where files come from (`mlflow` builds the keys) nor of ONNX.
//!
//! Putting the same content twice, or from two tasks or processes at once, is harmless: both
//! writers produce identical bytes and the rename is atomic. Files are never evicted here.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

const PREFIX: &str = "sha256-";
const SUFFIX: &str = ".onnx";
const TEMP_PREFIX: &str = ".tmp-";
const INDEX_FILE: &str = "index.json";
/// A temp file this old was left by a writer that died; younger ones may still be in progress in
/// another process sharing the directory.
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// Why the cache could not store or read a file.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("model cache {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("checksum mismatch: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("not a SHA-256 digest (64 lowercase hex digits): {0:?}")]
    BadDigest(String),
    #[error("model cache index {}: {reason}", path.display())]
    BadIndex { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io { path: path.to_path_buf(), source }
}

/// A verified file in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// `<dir>/sha256-<hex>.onnx`: complete and verified whenever it exists.
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    pub size: u64,
}

/// What a put must match before the file becomes visible; `None` checks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub size: Option<u64>,
    /// Lowercase hex SHA-256.
    pub sha256: Option<String>,
}

/// The cache directory. Cheap to share behind an `Arc`; index updates within one process are
/// serialised by a lock, and across processes the worst case is a lost index entry (a re-fetch).
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    index_lock: Mutex<()>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    entries: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    sha256: String,
    size: u64,
}

impl Cache {
    /// Creates the directory if needed and removes temp files that dead writers left behind.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let dir = dir.into();
        tokio::fs::create_dir_all(&dir).await.map_err(io_err(&dir))?;
        sweep_stale_temps(&dir).await?;
        Ok(Self { dir, index_lock: Mutex::new(()) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for `sha256` if the cache has it.
    pub async fn get(&self, sha256: &str) -> Result<Option<CachedModel>, CacheError> {
        check_digest(sha256)?;
        let path = self.path_of(sha256);
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(Some(CachedModel { path, sha256: sha256.to_owned(), size: meta.len() })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Starts writing a file; feed it with [`PendingPut::write`], publish it with
    /// [`PendingPut::finish`]. Dropping it unfinished removes the temp file.
    pub async fn begin_put(&self, expected: Expected) -> Result<PendingPut, CacheError> {
        if let Some(sha) = &expected.sha256 {
            check_digest(sha)?;
        }
        let temp = self.dir.join(temp_name());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await
            .map_err(io_err(&temp))?;
        Ok(PendingPut {
            dir: self.dir.clone(),
            temp: Some(temp),
            file,
            hasher: Sha256::new(),
            written: 0,
            expected,
        })
    }

    /// Stores `bytes` in one step.
    pub async fn put_bytes(&self, bytes: &[u8], expected: Expected) -> Result<CachedModel, CacheError> {
        let mut put = self.begin_put(expected).await?;
        put.write(bytes).await?;
        put.finish().await
    }

    /// The file `key` was last remembered as, if the index has it and the file is still there
    /// with the remembered size.
    pub async fn lookup(&self, key: &str) -> Result<Option<CachedModel>, CacheError> {
        let index = self.read_index().await?;
        let Some(entry) = index.entries.get(key) else { return Ok(None) };
        Ok(self.get(&entry.sha256).await?.filter(|m| m.size == entry.size))
    }

    /// Records that `key` resolved to `model`; the index is replaced atomically.
    pub async fn remember(&self, key: &str, model: &CachedModel) -> Result<(), CacheError> {
        check_digest(&model.sha256)?;
        let _guard = self.index_lock.lock().await;
        let mut index = self.read_index().await?;
        let entry = IndexEntry { sha256: model.sha256.clone(), size: model.size };
        index.entries.insert(key.to_owned(), entry);
        let bytes = serde_json::to_vec_pretty(&index)
            .map_err(|e| CacheError::BadIndex { path: self.dir.join(INDEX_FILE), reason: e.to_string() })?;
        self.write_atomically(INDEX_FILE, &bytes).await
    }

    fn path_of(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{PREFIX}{sha256}{SUFFIX}"))
    }

    async fn read_index(&self) -> Result<Index, CacheError> {
        let path = self.dir.join(INDEX_FILE);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| CacheError::BadIndex { path, reason: e.to_string() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    async fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<(), CacheError> {
        let temp = self.dir.join(temp_name());
        let result = async {
            let mut file = tokio::fs::File::create(&temp).await.map_err(io_err(&temp))?;
            file.write_all(bytes).await.map_err(io_err(&temp))?;
            file.sync_all().await.map_err(io_err(&temp))?;
            let target = self.dir.join(name);
            tokio::fs::rename(&temp, &target).await.map_err(io_err(&target))?;
            sync_dir(&self.dir).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }
}

/// A file being written into the cache: hashed and counted as it arrives.
#[derive(Debug)]
pub struct PendingPut {
    dir: PathBuf,
    /// `None` once renamed into place, so `Drop` leaves it alone.
    temp: Option<PathBuf>,
    file: tokio::fs::File,
    hasher: Sha256,
    written: u64,
    expected: Expected,
}

impl PendingPut {
    /// Appends a chunk. Fails as soon as more bytes arrive than expected, so a server that sends
    /// too much cannot fill the disk.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), CacheError> {
        let written = self.written + chunk.len() as u64;
        if let Some(expected) = self.expected.size.filter(|&size| written > size) {
            return Err(CacheError::SizeMismatch { expected, actual: written });
        }
        let temp = self.temp_path();
        self.file.write_all(chunk).await.map_err(io_err(&temp))?;
        self.hasher.update(chunk);
        self.written = written;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes and fsyncs the temp file, verifies it, renames it to its content address and
    /// fsyncs the directory. On any failure the temp file is removed.
    pub async fn finish(mut self) -> Result<CachedModel, CacheError> {
        let temp = self.temp_path();
        self.file.flush().await.map_err(io_err(&temp))?;
        self.file.sync_all().await.map_err(io_err(&temp))?;
        if let Some(expected) = self.expected.size.filter(|&size| size != self.written) {
            return Err(CacheError::SizeMismatch { expected, actual: self.written });
        }
        let sha256 = to_hex(&self.hasher.finalize_reset());
        if let Some(expected) = self.expected.sha256.take().filter(|e| *e != sha256) {
            return Err(CacheError::ChecksumMismatch { expected, actual: sha256 });
        }
        let path = self.dir.join(format!("{PREFIX}{sha256}{SUFFIX}"));
        // Renaming over an existing file with the same name replaces identical bytes, so a
        // concurrent put of the same content needs no coordination.
        tokio::fs::rename(&temp, &path).await.map_err(io_err(&path))?;
        self.temp = None;
        sync_dir(&self.dir).await?;
        Ok(CachedModel { path, sha256, size: self.written })
    }

    fn temp_path(&self) -> PathBuf {
        self.temp.clone().unwrap_or_default()
    }
}

impl Drop for PendingPut {
    fn drop(&mut self) {
        // A failed or abandoned put must not leave its bytes behind; unlinking is quick enough
        // to do inline even on a runtime thread.
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

fn check_digest(sha256: &str) -> Result<(), CacheError> {
    let ok = sha256.len() == 64 && sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok { Ok(()) } else { Err(CacheError::BadDigest(sha256.to_owned())) }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Unique among processes (pid) and within one (counter), so concurrent writers never share a
/// temp file; the leading dot and the suffix keep it from looking like a model.
fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{}-{n}-{:08x}.partial", std::process::id(), fastrand::u32(..))
}

/// Makes a rename durable: the directory entry is on disk, not only the file's bytes.
async fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    let handle = tokio::fs::File::open(dir).await.map_err(io_err(dir))?;
    handle.sync_all().await.map_err(io_err(dir))
}

async fn sweep_stale_temps(dir: &Path) -> Result<(), CacheError> {
    let mut entries = tokio::fs::read_dir(dir).await.map_err(io_err(dir))?;
    while let Some(entry) = entries.next_entry().await.map_err(io_err(dir))? {
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let modified = entry.metadata().await.and_then(|m| m.modified());
        let old = modified
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if old {
            // Best effort: another process may have removed it first.
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_of(bytes: &[u8]) -> String {
        to_hex(&Sha256::digest(bytes))
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gateway-cache-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn visible_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn put_names_the_file_by_its_sha256_and_get_finds_it() {
        let dir = scratch("put");
        let cache = Cache::open(&dir).await.unwrap();
        let bytes = b"onnx bytes".as_slice();
        let model = cache.put_bytes(bytes, Expected::default()).await.unwrap();
        assert_eq!(model.sha256, sha_of(bytes));
        assert_eq!(model.size, bytes.len() as u64);
        assert_eq!(model.path, dir.join(format!("sha256-{}.onnx", sha_of(bytes))));
        assert_eq!(std::fs::read(&model.path).unwrap(), bytes);
        assert_eq!(cache.get(&model.sha256).await.unwrap(), Some(model));
        assert_eq!(cache.get(&sha_of(b"other")).await.unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_wrong_size_or_checksum_leaves_nothing_behind() {
        let dir = scratch("verify");
        let cache = Cache::open(&dir).await.unwrap();
        let short = Expected { size: Some(11), sha256: None };
        let err = cache.put_bytes(b"0123456789", short).await.unwrap_err();
        assert!(matches!(err, CacheError::SizeMismatch { expected: 11, actual: 10 }), "{err}");
        let long = Expected { size: Some(4), sha256: None };
        let err = cache.put_bytes(b"0123456789", long).await.unwrap_err();
        assert!(matches!(err, CacheError::SizeMismatch { expected: 4, actual: 10 }), "{err}");
        let wrong = Expected { size: Some(10), sha256: Some(sha_of(b"something else")) };
        let err = cache.put_bytes(b"0123456789", wrong).await.unwrap_err();
        assert!(matches!(err, CacheError::ChecksumMismatch { .. }), "{err}");
        assert!(visible_files(&dir).is_empty(), "{:?}", visible_files(&dir));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn an_abandoned_put_is_invisible_and_removed() {
        let dir = scratch("abandon");
        let cache = Cache::open(&dir).await.unwrap();
        let mut put = cache.begin_put(Expected::default()).await.unwrap();
        put.write(b"half a model").await.unwrap();
        let names = visible_files(&dir);
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with(".tmp-") && !names[0].ends_with(".onnx"), "{names:?}");
        drop(put);
        assert!(visible_files(&dir).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn concurrent_and_repeated_puts_of_the_same_content_are_harmless() {
        let dir = scratch("concurrent");
        let cache = std::sync::Arc::new(Cache::open(&dir).await.unwrap());
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let expected = Expected { size: Some(bytes.len() as u64), sha256: Some(sha_of(&bytes)) };
        let puts = (0..8).map(|_| {
            let (cache, bytes, expected) = (cache.clone(), bytes.clone(), expected.clone());
            tokio::spawn(async move {
                let mut put = cache.begin_put(expected).await?;
                for chunk in bytes.chunks(7_000) {
                    put.write(chunk).await?;
                    tokio::task::yield_now().await;
                }
                put.finish().await
            })
        });
        let models: Vec<CachedModel> = futures_join(puts).await;
        assert!(models.windows(2).all(|w| w[0] == w[1]));
        let again = cache.put_bytes(&bytes, expected).await.unwrap();
        assert_eq!(again, models[0]);
        assert_eq!(std::fs::read(&again.path).unwrap(), bytes);
        assert_eq!(visible_files(&dir), vec![format!("sha256-{}.onnx", sha_of(&bytes))]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    async fn futures_join(
        handles: impl Iterator<Item = tokio::task::JoinHandle<Result<CachedModel, CacheError>>>,
    ) -> Vec<CachedModel> {
        let mut out = Vec::new();
        for handle in handles {
            out.push(handle.await.unwrap().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn the_index_remembers_keys_across_opens_and_forgets_missing_files() {
        let dir = scratch("index");
        let cache = Cache::open(&dir).await.unwrap();
        assert_eq!(cache.lookup("m/1").await.unwrap(), None);
        let one = cache.put_bytes(b"one", Expected::default()).await.unwrap();
        let two = cache.put_bytes(b"two", Expected::default()).await.unwrap();
        cache.remember("m/1", &one).await.unwrap();
        cache.remember("m/2", &two).await.unwrap();
        let reopened = Cache::open(&dir).await.unwrap();
        assert_eq!(reopened.lookup("m/1").await.unwrap(), Some(one.clone()));
        assert_eq!(reopened.lookup("m/2").await.unwrap(), Some(two.clone()));
        std::fs::remove_file(&two.path).unwrap();
        assert_eq!(reopened.lookup("m/2").await.unwrap(), None);
        let names = visible_files(&dir);
        assert!(names.iter().all(|n| !n.starts_with(".tmp-")), "{names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn digests_that_are_not_hex_are_refused_before_touching_the_disk() {
        let dir = scratch("digest");
        let cache = Cache::open(&dir).await.unwrap();
        for bad in ["../../etc/passwd", "ABC", &"A".repeat(64)] {
            assert!(matches!(cache.get(bad).await, Err(CacheError::BadDigest(_))), "{bad}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn open_sweeps_only_stale_temp_files() {
        let dir = scratch("sweep");
        std::fs::create_dir_all(&dir).unwrap();
        let stale = dir.join(".tmp-1-0-00000000.partial");
        let fresh = dir.join(".tmp-1-1-00000000.partial");
        std::fs::write(&stale, b"x").unwrap();
        std::fs::write(&fresh, b"x").unwrap();
        let old = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(60);
        std::fs::File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();
        Cache::open(&dir).await.unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
