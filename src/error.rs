//! The one error type of the crate.
//!
//! Variants are grouped by kind: input that the user got wrong (files, shapes, values,
//! parameters), backends that are missing, failures inside a backend, and a failure on one
//! replica of a data-parallel run (wrapping the replica's own error). Every variant
//! names the operation or file and says what was expected and what was found, so the
//! message alone tells a user what to fix.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The crate's error: what went wrong, where, what was expected and what was found. More
/// variants may come: a `match` on it needs a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- input: files -------------------------------------------------------------------
    /// A file could not be opened, read or written.
    #[error("{path}: {action} failed: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A file was read but its content is not what the format requires.
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },

    // ---- input: arrays and values -------------------------------------------------------
    /// An array has the wrong rank or dimensions.
    #[error("{context}: expected shape {expected}, found {found}")]
    Shape {
        context: String,
        expected: String,
        found: String,
    },

    /// A value is out of its domain (NaN, infinity, negative weight, zero mass, ...).
    #[error("{context}: {what}")]
    Value { context: String, what: String },

    /// A solver or kernel parameter is out of range.
    #[error("parameter {name}: expected {expected}, found {found}")]
    Parameter {
        name: &'static str,
        expected: String,
        found: String,
    },

    // ---- backends -----------------------------------------------------------------------
    /// The backend was not compiled in, or no device for it was found.
    #[error("backend {backend} is unavailable: {reason}")]
    BackendUnavailable {
        backend: &'static str,
        reason: String,
    },

    /// A backend accepted the call but failed to carry it out.
    #[error("backend {backend}, {operation}: {what}")]
    Backend {
        backend: &'static str,
        operation: &'static str,
        what: String,
    },

    // ---- benchmarks -------------------------------------------------------------------------
    /// `optical bench compare` found timings slower than its threshold allows (exit status 1,
    /// so that a CI job fails on it).
    #[error("{what}")]
    Slower { what: String },

    // ---- interruption ----------------------------------------------------------------------
    /// The user interrupted a long job (Ctrl-C) after it saved what a later run continues
    /// from; `what` says where it stopped and how to continue. The CLI exits with 130, as a
    /// shell does for a process ended by SIGINT, so `distill … && eval …` does not go on.
    #[error("{what}")]
    Interrupted { what: String },

    // ---- data-parallel training ---------------------------------------------------------
    /// One replica of a data-parallel run failed; the step was abandoned before any update.
    #[error("replica {replica} of {replicas} ({device}) failed at step {step}: {source}")]
    Replica {
        replica: usize,
        replicas: usize,
        device: String,
        step: usize,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The error with a path under `from` (a temporary file or directory an output is
    /// written through) named as the same place under `to` (the output the user gave), so
    /// that a message names a path the user knows.
    pub(crate) fn at_output(self, from: &std::path::Path, to: &std::path::Path) -> Self {
        let moved = |path: PathBuf| match path.strip_prefix(from) {
            Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
            Ok(rest) => to.join(rest),
            Err(_) => path,
        };
        match self {
            Error::Io {
                path,
                action,
                source,
            } => Error::Io {
                path: moved(path),
                action,
                source,
            },
            Error::Format { path, what } => Error::Format {
                path: moved(path),
                what,
            },
            other => other,
        }
    }

    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn shape(
        context: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Error::Shape {
            context: context.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }

    pub(crate) fn value(context: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Value {
            context: context.into(),
            what: what.into(),
        }
    }

    pub(crate) fn parameter(
        name: &'static str,
        expected: impl Into<String>,
        found: impl ToString,
    ) -> Self {
        Error::Parameter {
            name,
            expected: expected.into(),
            found: found.to_string(),
        }
    }

    /// True for errors caused by the caller's input rather than by the machine, a backend or
    /// a measured slowdown (`optical bench compare`). The CLI exits with 2 for these, 1 for
    /// the others.
    pub fn is_user_error(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            Error::Backend { .. } | Error::Slower { .. } | Error::Interrupted { .. } => false,
            // A full disk, an exhausted quota, a failing device: the machine's state, not
            // the command line (a missing file or a directory in an output's place is).
            Error::Io { source, .. } => {
                !matches!(
                    source.kind(),
                    ErrorKind::StorageFull
                        | ErrorKind::QuotaExceeded
                        | ErrorKind::OutOfMemory
                        | ErrorKind::WriteZero
                ) && source.raw_os_error() != Some(5)
            }
            Error::Replica { source, .. } => source.is_user_error(),
            _ => true,
        }
    }

    /// A parameter error about `from` reported under `to`, the setting the caller was
    /// given (a distillation's `teacher` for the encoder's `model`), its found value passed
    /// through `found`; any other error as it is.
    pub(crate) fn for_setting(
        self,
        from: &str,
        to: &'static str,
        found: impl FnOnce(String) -> String,
    ) -> Self {
        match self {
            Error::Parameter {
                name,
                expected,
                found: value,
            } if name == from => Error::Parameter {
                name: to,
                expected,
                found: found(value),
            },
            e => e,
        }
    }

    /// Prefix the context of a shape or value error with a file name, so CLI messages say
    /// which input was wrong.
    pub fn in_file(self, path: &std::path::Path) -> Self {
        let p = path.display();
        match self {
            Error::Shape {
                context,
                expected,
                found,
            } => Error::Shape {
                context: format!("{p} ({context})"),
                expected,
                found,
            },
            Error::Value { context, what } => Error::Value {
                context: format!("{p} ({context})"),
                what,
            },
            other => other,
        }
    }

    /// [`Error::in_file`] for a value read from two files, packed data and its lengths:
    /// a complaint about the lengths (context `… lengths`) names `lengths`, any other `data`.
    pub fn in_data_or_lengths_file(
        self,
        data: &std::path::Path,
        lengths: &std::path::Path,
    ) -> Self {
        match &self {
            Error::Value { context, .. } | Error::Shape { context, .. }
                if context.ends_with("lengths") =>
            {
                self.in_file(lengths)
            }
            _ => self.in_file(data),
        }
    }
}

thread_local! {
    /// Set while [`catch_panic_quietly`] runs on this thread.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn install_quiet_hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Run `f`, turning a panic inside it into `Err` with the panic's message, and without the
/// panic hook's report on stderr. For libraries that panic on malformed input where they
/// should return an error (the caller then reports a proper one). Panics on other threads
/// are reported as before.
pub fn catch_panic_quietly<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    install_quiet_hook();
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(panic_message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_the_machines_state_a_missing_file_the_users() {
        let io = |kind: std::io::ErrorKind| Error::io("f", "write", std::io::Error::from(kind));
        assert!(!io(std::io::ErrorKind::StorageFull).is_user_error());
        assert!(!io(std::io::ErrorKind::QuotaExceeded).is_user_error());
        assert!(
            !Error::io("f", "read", std::io::Error::from_raw_os_error(5)).is_user_error(),
            "EIO"
        );
        assert!(io(std::io::ErrorKind::NotFound).is_user_error());
        assert!(io(std::io::ErrorKind::PermissionDenied).is_user_error());
    }
}
