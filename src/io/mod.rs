//! Readers and writers for the files the CLI consumes and produces, with validation.

pub mod npy;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The hidden sibling `.<name>.partial-<pid>` that a file or directory is written to before
/// it is renamed into place.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Write `path` through a temporary sibling: `write` fills the temporary file, which is
/// then renamed into place. A failed write (a full disk, a killed process, an error in
/// `write`) leaves the previous file whole, never a truncated one, and the temporary file
/// is removed.
pub fn write_through_temp(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(path);
    let result = write(&tmp)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "rename", e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_through_temp`] of `contents`.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    write_through_temp(path, |tmp| {
        std::fs::write(tmp, contents).map_err(|e| Error::io(tmp, "write", e))
    })
}

#[cfg(test)]
mod tests {
    use super::write_atomic;

    fn leftovers(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".partial-"))
            .collect()
    }

    #[test]
    fn writes_replaces_and_cleans_up_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latest");
        write_atomic(&path, "step-000050\n").unwrap();
        write_atomic(&path, "step-000100\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "step-000100\n");
        assert!(leftovers(dir.path()).is_empty());

        // A target that cannot be replaced (a non-empty directory): an error naming it,
        // and no temporary file left behind.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), "x").unwrap();
        let err = write_atomic(&blocked, "text").unwrap_err().to_string();
        assert!(err.contains("blocked"), "{err}");
        assert!(leftovers(dir.path()).is_empty());

        // A directory that does not exist: an error, nothing created.
        let missing = dir.path().join("no-such-dir").join("file");
        assert!(write_atomic(&missing, "text").is_err());
        assert!(!missing.exists());
    }
}
