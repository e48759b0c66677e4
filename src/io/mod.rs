//! Readers and writers for the files the CLI consumes and produces, with validation.

pub mod npy;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a JSON value is, for messages that say what was found: "a list", "an object", ...
pub(crate) fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The hidden sibling `.<name>.partial-<pid>` that a file or directory is written to before
/// it is renamed into place.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// How long a temporary sibling must have been left untouched before it counts as stale.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Remove what an earlier process left of its temporary siblings of `path` (`.<name>.partial-
/// <pid>` of a process no longer running: one stopped by a signal, which cleans nothing
/// up). Only where running processes can be seen (`/proc`), and only what has been left
/// untouched for [`STALE_AFTER`]: a process of another PID namespace or host writing the same
/// directory has an id this one cannot see.
fn remove_stale_temps(path: &Path) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let prefix = format!(".{}.partial-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let untouched = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_AFTER);
        let stale = untouched
            && pid
                .parse::<u32>()
                .is_ok_and(|pid| pid != std::process::id() && !proc.join(pid.to_string()).exists());
        if stale {
            let p = entry.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Write `path` through a temporary sibling: `write` fills the temporary file, which is
/// then renamed into place. A failed write (a full disk, a killed process, an error in
/// `write`) leaves the previous file whole, never a truncated one, and the temporary file
/// is removed.
///
/// A symbolic link is written through: the file it points to is replaced, the link stays.
/// A path that is neither a regular file nor missing (`/dev/null`, a named pipe, a
/// device) is written directly, as `cp` would, since renaming over it would replace the
/// special file itself.
pub fn write_through_temp(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    check_output_file(path)?;
    // This process's standard output or error redirected to a file (`--out /dev/stdout
    // >> all.trec`): renaming over that file would unlink the one the shell holds open (and
    // reopening it would truncate it), so what was there and what is printed after it
    // would be lost. The bytes go through the inherited stream instead.
    if let Some(stream) = standard_stream(path) {
        if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            return write_to_stream(path, stream, write);
        }
    }
    // A special file, through any links, is written as the path is given: the system
    // resolves it (`/dev/stdout`'s links end at `pipe:[N]`, which is no path at all).
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return write(path);
    }
    let target = resolve_links(path)?;
    remove_stale_temps(&target);
    let tmp = temp_sibling(&target);
    // The bytes reach the disk before the name does: after a power loss the path holds the
    // previous file or the new one, never a new name over unwritten blocks.
    let result = write(&tmp)
        .and_then(|()| sync_file(&tmp))
        .and_then(|()| std::fs::rename(&tmp, &target).map_err(|e| Error::io(path, "rename", e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
        .map(|()| sync_parent(&target))
        .map_err(|e| e.at_output(&tmp, path))
}

/// Flush a written file's data to the disk (`fsync`), so that a rename that publishes it
/// cannot reach the disk first.
pub fn sync_file(path: &Path) -> Result<()> {
    match std::fs::File::open(path).and_then(|f| f.sync_all()) {
        // A file system that cannot sync (EINVAL, ENOTSUP) keeps the write as it is.
        Err(e)
            if e.kind() == std::io::ErrorKind::Unsupported
                || e.kind() == std::io::ErrorKind::InvalidInput =>
        {
            Ok(())
        }
        other => other.map_err(|e| Error::io(path, "write", e)),
    }
}

/// Flush the directory entry of `path` (a rename into its directory) to the disk. Best
/// effort: some systems cannot open or sync a directory, and the data itself is already
/// on the disk by then.
pub fn sync_parent(path: &Path) {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => sync_dir(Path::new(".")),
    }
}

/// Flush a directory's entries to the disk, best effort (see [`sync_parent`]).
fn sync_dir(dir: &Path) {
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// Which standard stream `path` names, if it is one of the names of standard output or
/// error.
fn standard_stream(path: &Path) -> Option<u8> {
    match path.to_str()? {
        "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" => Some(1),
        "/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2" => Some(2),
        _ => None,
    }
}

/// `write` into a temporary file, then its bytes onto standard output (`stream` 1) or
/// error (2), at the stream's own position (appended where the shell opened it with `>>`).
fn write_to_stream(path: &Path, stream: u8, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    use std::io::Write;
    let tmp = temp_sibling(&std::env::temp_dir().join(format!("optical-stream-{stream}")));
    let result = write(&tmp).and_then(|()| {
        let mut file = std::fs::File::open(&tmp).map_err(|e| Error::io(&tmp, "read", e))?;
        let mut out: Box<dyn Write> = if stream == 1 {
            Box::new(std::io::stdout().lock())
        } else {
            Box::new(std::io::stderr().lock())
        };
        std::io::copy(&mut file, &mut out)
            .and_then(|_| out.flush())
            .map_err(|e| Error::io(path, "write", e))
    });
    let _ = std::fs::remove_file(&tmp);
    result.map_err(|e| e.at_output(&tmp, path))
}

/// The path a chain of symbolic links at `path` ends at (the path itself when it is not a
/// link; a link to a missing file gives the missing file's path, which is then created).
pub fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    // Linux's own limit on links followed in one lookup.
    for _ in 0..40 {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let next =
                    std::fs::read_link(&current).map_err(|e| Error::io(&current, "read", e))?;
                current = match current.parent() {
                    Some(parent) if next.is_relative() => parent.join(next),
                    _ => next,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(path_error(
        path,
        "write",
        std::io::ErrorKind::InvalidInput,
        "expected a file, found a chain of more than 40 symbolic links",
    ))
}

/// Where `path` is or would be: its nearest existing ancestor with links and `..` resolved,
/// then the rest of it (`..` taken lexically there, where nothing is a link).
pub fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut base = absolute.as_path();
    let mut rest = Vec::new();
    let real = loop {
        if let Ok(real) = base.canonicalize() {
            break real;
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            // `..` at the end of a missing path: take it with the rest.
            (Some(parent), None) => {
                rest.push("..".into());
                base = parent;
            }
            _ => break base.to_path_buf(),
        }
    };
    let mut out = real;
    for part in rest.into_iter().rev() {
        if part == ".." {
            out.pop();
        } else if part != "." {
            out.push(part);
        }
    }
    out
}

/// Whether `a` and `b` name the same existing file (through links, `..` or hard links).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        ma.dev() == mb.dev() && ma.ino() == mb.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (ma, mb);
        matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
    }
}

/// An error when an output path names one of a command's input files (`None`: an optional
/// input not given): writing it would destroy the input (checked before any work, so
/// nothing is lost).
pub fn check_not_input(output: &Path, inputs: &[Option<&Path>]) -> Result<()> {
    match inputs
        .iter()
        .flatten()
        .find(|input| same_file(output, input))
    {
        Some(input) => Err(path_error(
            output,
            "write",
            std::io::ErrorKind::AlreadyExists,
            format!(
                "expected a new output path, found the input file {} (writing would \
                 replace it)",
                input.display()
            ),
        )),
        None => Ok(()),
    }
}

/// An I/O error on `path` that says what was wrong in the user's terms (not as a failure
/// to create or rename a hidden temporary file).
pub(crate) fn path_error(
    path: &Path,
    action: &'static str,
    kind: std::io::ErrorKind,
    what: impl Into<String>,
) -> Error {
    Error::io(path, action, std::io::Error::new(kind, what.into()))
}

/// The two mistakes a user makes with an output file's path: a directory there, or no
/// directory to create it in. Commands check it before long work, so that the work is not
/// lost at the end.
pub fn check_output_file(path: &Path) -> Result<()> {
    // `out.npy/` names a directory to every system call, so the write would fail only at
    // the end, after the work.
    let text = path.as_os_str().to_string_lossy();
    if text.ends_with('/') || text.ends_with(std::path::MAIN_SEPARATOR) {
        return Err(path_error(
            path,
            "write",
            std::io::ErrorKind::InvalidInput,
            "expected a file path, found a path ending in a separator",
        ));
    }
    if path.is_dir() {
        return Err(path_error(
            path,
            "write",
            std::io::ErrorKind::AlreadyExists,
            "expected a file path, found a directory",
        ));
    }
    check_parent(path)?;
    // A link to a file not there yet is written where it points: that directory must exist
    // too, or the write fails after the work, naming a temporary file.
    let dangling = std::fs::metadata(path).is_err()
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if dangling {
        check_parent(&resolve_links(path)?)?;
    }
    Ok(())
}

/// An output directory's path can be used: its parent exists and no file has its name.
pub fn check_output_dir(dir: &Path) -> Result<()> {
    check_parent(dir)?;
    if dir.exists() && !dir.is_dir() {
        return Err(path_error(
            dir,
            "write output directory",
            std::io::ErrorKind::AlreadyExists,
            "a file with that name exists",
        ));
    }
    Ok(())
}

/// An error naming `path` when the directory it would be created in does not exist.
pub fn check_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent.is_dir() {
        return Ok(());
    }
    let why = if parent.exists() {
        format!("{} is a file, not a directory", parent.display())
    } else {
        format!("the directory {} does not exist", parent.display())
    };
    Err(path_error(
        path,
        "create",
        std::io::ErrorKind::NotFound,
        why,
    ))
}

/// The lock file of a directory an optical process writes (see [`DirLock`]).
pub const LOCK_FILE: &str = ".optical.lock";

/// An exclusive hold on a directory an optical process writes (a run, a study, an
/// evaluation): an advisory `flock` on `<dir>/.optical.lock`, released when dropped or when
/// the process ends however it ends. A second process asking for it is refused at once,
/// with the holder's process id, rather than writing over the first one's files.
///
/// Directories the lock created (the directory and any missing parents) are removed again
/// when it is dropped with nothing in them but the lock file: a command refused after
/// taking it leaves no empty directories behind.
#[derive(Debug)]
pub struct DirLock {
    file: std::fs::File,
    dir: PathBuf,
    /// The topmost directory this lock created, when it created any.
    created: Option<PathBuf>,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let Some(top) = &self.created else {
            return;
        };
        let only_the_lock = std::fs::read_dir(&self.dir).is_ok_and(|entries| {
            entries
                .flatten()
                .all(|e| e.file_name().to_str() == Some(LOCK_FILE))
        });
        if !only_the_lock {
            return;
        }
        // Unlinked while still held: a process that opened it meanwhile finds, once it has
        // the lock, that the path no longer names its file, and starts again (`acquire`).
        let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
        for d in self.dir.ancestors() {
            if std::fs::remove_dir(d).is_err() || d == top.as_path() {
                break;
            }
        }
    }
}

impl DirLock {
    /// Lock `dir` (created if missing); `what` names it in the refusal, with its article
    /// (`a run directory`).
    pub fn acquire(dir: &Path, what: &str) -> Result<DirLock> {
        let created = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .last()
            .map(Path::to_path_buf);
        // A lock taken on a file that another process's drop unlinked meanwhile is no lock:
        // open again (a few times at most: each retry follows another process's exit).
        for _ in 0..16 {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
            let path = dir.join(LOCK_FILE);
            let mut lock = DirLock {
                file: open_lock_file(&path)?,
                dir: dir.to_path_buf(),
                created: created.clone(),
            };
            #[cfg(unix)]
            {
                use std::io::{Read, Seek, Write};
                use std::os::fd::AsRawFd;
                use std::os::unix::fs::MetadataExt;
                // SAFETY: `flock` on a file descriptor `lock` owns and keeps open; it reads
                // no memory of ours.
                let locked =
                    unsafe { libc::flock(lock.file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                if locked != 0 {
                    let err = std::io::Error::last_os_error();
                    if err.kind() != std::io::ErrorKind::WouldBlock {
                        // A file system without locks (some network mounts): go on unlocked.
                        return Ok(lock);
                    }
                    let mut holder = String::new();
                    let _ = lock.file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    lock.created = None; // Someone else's directory now.
                    return Err(path_error(
                        dir,
                        "use",
                        std::io::ErrorKind::WouldBlock,
                        format!(
                            "expected {what} that no other process is using, found one in use \
                             by another optical process{}; wait for it to end (or stop it), or \
                             choose another directory",
                            if holder.is_empty() {
                                String::new()
                            } else {
                                format!(" (process {holder})")
                            }
                        ),
                    ));
                }
                let same = match (lock.file.metadata(), std::fs::metadata(&path)) {
                    (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
                    _ => false,
                };
                if !same {
                    lock.created = None;
                    continue;
                }
                // The holder's id, for the refusal of the next one (best effort: a lock file
                // opened read-only, another user's, keeps its content).
                let _ = lock.file.set_len(0);
                let _ = lock.file.rewind();
                let _ = write!(lock.file, "{}", std::process::id());
                let _ = lock.file.flush();
            }
            return Ok(lock);
        }
        Err(path_error(
            dir,
            "use",
            std::io::ErrorKind::WouldBlock,
            "expected a lock file that stays in place, found it removed again and again",
        ))
    }
}

/// Open (or create) a lock file: for writing the holder's id where allowed, else read-only
/// (another user's lock file in a shared directory; `flock` needs no write access).
fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o666);
    }
    match options.open(path) {
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(30) =>
        {
            std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))
        }
        other => other.map_err(|e| Error::io(path, "open", e)),
    }
}

/// Write into `dir` without leaving a partial directory behind: files go to a temporary
/// directory first and are moved in only when all of them were written. `dir` is followed
/// through links; the temporary directory is a sibling of a new directory and inside an
/// existing one, so every move stays on one filesystem (an existing `dir` may be a mount
/// point, or a link to another disk).
pub fn write_dir(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    check_output_dir(dir)?;
    let target = resolve_links(dir)?;
    // A link to a directory not made yet: its parent must be there, as for `dir` itself.
    if !target.exists() {
        check_parent(&target)?;
    }
    let anchor = if target.is_dir() {
        target.join("out")
    } else {
        target.clone()
    };
    remove_stale_temps(&anchor);
    let tmp = temp_sibling(&anchor);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(dir, "create", e))?;
    let result = write(&tmp).and_then(|()| sync_tree(&tmp)).and_then(|()| {
        let dir = target.as_path();
        if !dir.exists() {
            let moved = std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, "rename", e));
            sync_parent(dir);
            return moved;
        }
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                "write output directory",
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file with that name exists",
                ),
            ));
        }
        // Every name is checked before any file moves, so that a name the outputs cannot
        // take (a directory there) leaves the previous outputs as they were, not half of
        // them replaced.
        let mut moves = Vec::new();
        for entry in std::fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, "read", e))? {
            let entry = entry.map_err(|e| Error::io(&tmp, "read", e))?;
            let at = dir.join(entry.file_name());
            if resolve_links(&at)?.is_dir() {
                return Err(Error::io(
                    &at,
                    "write",
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "expected a file path, found a directory",
                    ),
                ));
            }
            moves.push((entry.path(), at));
        }
        for (from, at) in moves {
            // A regular file, or nothing (not even a dangling link), is simply replaced.
            let plain = std::fs::symlink_metadata(&at).map_or(true, |m| m.file_type().is_file());
            if plain {
                std::fs::rename(&from, &at).map_err(|e| Error::io(&at, "rename", e))?;
            } else {
                // A symbolic link is written through (the file it names is replaced, the
                // link stays) and a special file written directly, as single outputs are.
                write_through_temp(&at, |p| {
                    std::fs::copy(&from, p)
                        .map(drop)
                        .map_err(|e| Error::io(p, "write", e))
                })?;
            }
        }
        // One sync of the directory for all the renames into it.
        sync_dir(dir);
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&tmp);
    // Errors name the output as the user gave it, not the temporary directory or the place a
    // link leads to.
    result.map_err(|e| e.at_output(&tmp, dir).at_output(&target, dir))
}

/// [`sync_file`] every regular file under `dir` (before the directory's files are moved
/// into place).
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, "read", e))? {
        let entry = entry.map_err(|e| Error::io(dir, "read", e))?;
        let kind = entry
            .file_type()
            .map_err(|e| Error::io(entry.path(), "read", e))?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            sync_file(&entry.path())?;
        }
    }
    // The directory's own entries (best effort, as for any directory).
    sync_dir(dir);
    Ok(())
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

    /// A failed write is named at the output the user gave, not at the hidden temporary
    /// file or directory it went through.
    #[test]
    fn errors_name_the_output_not_its_temporary_sibling() {
        let dir = tempfile::tempdir().unwrap();
        let full = |p: &std::path::Path| {
            Err(crate::Error::io(
                p,
                "write",
                std::io::Error::other("No space left on device"),
            ))
        };
        let file = dir.path().join("c.npy");
        let err = super::write_through_temp(&file, full)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}: write failed", file.display())),
            "{err}"
        );
        let out = dir.path().join("s");
        let err = super::write_dir(&out, |tmp| full(&tmp.join("plan.npy")))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}: write failed", out.join("plan.npy").display())),
            "{err}"
        );
        assert!(!err.contains("partial"), "{err}");
    }

    /// A directory is held by one lock at a time, and free again when it is dropped.
    #[test]
    fn a_directory_lock_refuses_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let first = super::DirLock::acquire(&out, "a run directory").unwrap();
        let err = super::DirLock::acquire(&out, "a run directory")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("in use by another optical process")
                && err.contains(&format!("(process {})", std::process::id())),
            "{err}"
        );
        drop(first);
        // The directory it created, with nothing written, is gone with it (its parents too,
        // when it created them); one with files stays.
        assert!(!out.exists());
        let deep = dir.path().join("exp").join("2026").join("run");
        drop(super::DirLock::acquire(&deep, "a run directory").unwrap());
        assert!(!dir.path().join("exp").exists());
        let again = super::DirLock::acquire(&out, "a run directory").unwrap();
        std::fs::write(out.join("log.jsonl"), "{}").unwrap();
        drop(again);
        assert!(out.join("log.jsonl").exists());
    }

    #[test]
    fn paths_resolve_through_links_and_dot_dots_existing_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("o")).unwrap();
        std::fs::create_dir(root.join("o").join("data")).unwrap();
        std::os::unix::fs::symlink(root.join("o").join("data"), root.join("lnk")).unwrap();
        let r = super::resolved;
        assert_eq!(r(&root.join("o/data/../R.md")), root.join("o/R.md"));
        assert_eq!(r(&root.join("lnk/R.md")), root.join("o/data/R.md"));
        assert_eq!(r(&root.join("new/x/../y.md")), root.join("new/y.md"));
        assert_eq!(r(&root.join("o/./data")), root.join("o/data"));
    }

    #[test]
    fn leftovers_of_a_stopped_process_are_removed_and_a_running_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        // Left two hours ago (an hour untouched is stale).
        let old = |p: &std::path::Path| {
            let when = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
            std::fs::File::open(p)
                .unwrap()
                .set_times(std::fs::FileTimes::new().set_modified(when))
                .unwrap();
        };
        // No process has these ids (above any pid_max).
        let dead = dir.path().join(".out.partial-4294967294");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("half.tsv"), "x").unwrap();
        old(&dead);
        let dead_file = dir.path().join(".out.partial-4294967293");
        std::fs::write(&dead_file, "x").unwrap();
        old(&dead_file);
        // Process 1 runs (a write of the same output in progress elsewhere is left alone),
        // and so may a process this one cannot see whose file was touched a moment ago.
        let live = dir.path().join(".out.partial-1");
        std::fs::write(&live, "x").unwrap();
        old(&live);
        let recent = dir.path().join(".out.partial-4294967292");
        std::fs::write(&recent, "x").unwrap();
        super::write_dir(&path, |tmp| {
            std::fs::write(tmp.join("a.tsv"), "a").map_err(|e| crate::Error::io(tmp, "write", e))
        })
        .unwrap();
        assert!(!dead.exists() && !dead_file.exists());
        assert!(live.exists() && recent.exists());
        assert_eq!(std::fs::read_to_string(path.join("a.tsv")).unwrap(), "a");
        let file = dir.path().join("f");
        let dead_file = dir.path().join(".f.partial-4294967294");
        std::fs::write(&dead_file, "x").unwrap();
        old(&dead_file);
        write_atomic(&path.join("b"), "b").unwrap();
        assert!(dead_file.exists(), "another name's leftovers stay");
        write_atomic(&file, "f").unwrap();
        assert!(!dead_file.exists());
    }

    /// An output directory given through a link (to an existing directory, possibly on
    /// another filesystem, or to one not made yet) takes the files where the link points,
    /// and the link stays; an existing directory keeps no temporary directory.
    #[cfg(unix)]
    #[test]
    fn a_directory_through_a_link_takes_the_files() {
        let dir = tempfile::tempdir().unwrap();
        // /dev/shm is usually another filesystem than the temporary directory's.
        let shm = std::path::Path::new("/dev/shm");
        let other = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let write = |at: &std::path::Path, text: &str| {
            let text = text.to_string();
            super::write_dir(at, move |tmp| {
                std::fs::write(tmp.join("a.txt"), &text)
                    .map_err(|e| crate::Error::io(tmp, "write", e))
            })
        };
        let link = dir.path().join("out");
        std::os::unix::fs::symlink(other.path(), &link).unwrap();
        write(&link, "one").unwrap();
        write(&link, "two").unwrap();
        assert!(link.is_symlink());
        assert_eq!(
            std::fs::read_to_string(other.path().join("a.txt")).unwrap(),
            "two"
        );
        let names: Vec<_> = std::fs::read_dir(other.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.txt"]);
        let dangling = dir.path().join("later");
        let made = other.path().join("made");
        std::os::unix::fs::symlink(&made, &dangling).unwrap();
        write(&dangling, "three").unwrap();
        assert_eq!(
            std::fs::read_to_string(made.join("a.txt")).unwrap(),
            "three"
        );
        assert!(dangling.is_symlink());
        // A link to where no parent directory is: refused, nothing made.
        let nowhere = dir.path().join("nowhere");
        std::os::unix::fs::symlink(other.path().join("no/such"), &nowhere).unwrap();
        let e = write(&nowhere, "four").unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(!other.path().join("no").exists());
        // An output name the link's directory cannot take is named under the user's path.
        std::fs::remove_file(other.path().join("a.txt")).unwrap();
        std::fs::create_dir(other.path().join("a.txt")).unwrap();
        let e = write(&link, "five").unwrap_err().to_string();
        assert!(e.contains(&link.join("a.txt").display().to_string()), "{e}");
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
        let err = write_atomic(&missing, "text").unwrap_err().to_string();
        assert!(
            err.contains("no-such-dir/file")
                && err.contains("does not exist")
                && !err.contains("partial"),
            "{err}"
        );
        assert!(!missing.exists());

        // A directory where a file should go: said so, before anything is written.
        let err = write_atomic(dir.path(), "text").unwrap_err().to_string();
        assert!(err.contains("found a directory"), "{err}");
        assert!(!super::temp_sibling(dir.path()).exists());

        // A link into a directory that does not exist: checked before the work, and the
        // error names where the link points, not a temporary file.
        let link = dir.path().join("link.npy");
        std::os::unix::fs::symlink(dir.path().join("nodir").join("z.npy"), &link).unwrap();
        let err = super::check_output_file(&link).unwrap_err().to_string();
        assert!(
            err.contains("nodir/z.npy")
                && err.contains("does not exist")
                && !err.contains("partial"),
            "{err}"
        );
        // A link to a file not there yet, in a directory that is: fine.
        let ok = dir.path().join("ok.npy");
        std::os::unix::fs::symlink(dir.path().join("new.npy"), &ok).unwrap();
        super::check_output_file(&ok).unwrap();
    }
}
