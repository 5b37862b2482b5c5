//! What a version's model file is, as far as a reload can tell: its size, modification time
//! and a digest of its content. Part of a version's identity (`VersionKey`), so a file
//! replaced in place (the usual "overwrite and reload" deployment) is loaded, warmed and
//! flipped in like any new version, even when its size and time are unchanged.

use std::hash::Hasher;
use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileId {
    Found {
        len: u64,
        modified: Option<SystemTime>,
        /// SipHash of the whole content: enough to tell files apart within one process (it is
        /// not a security check, and not stable across builds).
        digest: u64,
    },
    /// Missing or unreadable: never equal to a loaded version's, so loading is attempted and
    /// fails with the reason.
    Unreadable,
}

impl FileId {
    /// Reads the whole file once (64 KiB at a time). Blocking.
    pub fn of(path: &Path) -> FileId {
        read(path).unwrap_or(FileId::Unreadable)
    }

    /// The digest as 16 hex digits, for `/admin/models`.
    pub fn digest_hex(&self) -> Option<String> {
        match self {
            FileId::Found { digest, .. } => Some(format!("{digest:016x}")),
            FileId::Unreadable => None,
        }
    }
}

fn read(path: &Path) -> std::io::Result<FileId> {
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut hasher = std::hash::DefaultHasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.write(buf.get(..n).unwrap_or_default());
        len += n as u64;
    }
    Ok(FileId::Found { len, modified: meta.modified().ok(), digest: hasher.finish() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_and_time_but_other_content_is_another_file() {
        let dir = std::env::temp_dir().join(format!("fileid-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.onnx");
        std::fs::write(&path, b"abcd").unwrap();
        let first = FileId::of(&path);
        assert_eq!(first, FileId::of(&path), "reading an unchanged file twice gives the same id");
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, b"abce").unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(modified).unwrap();
        let second = FileId::of(&path);
        assert_ne!(first, second);
        assert!(matches!((&first, &second), (FileId::Found { len: 4, .. }, FileId::Found { len: 4, .. })));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(FileId::of(&path), FileId::Unreadable);
    }
}
