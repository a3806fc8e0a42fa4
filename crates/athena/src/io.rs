//! Files athena writes are written atomically: to a temporary file in the same directory,
//! fsynced, renamed over the target, and the directory fsynced. A crash leaves either the old
//! file or the new one, never a torn one.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The name of the temporary that process `pid` writes before it becomes `name`:
/// `.NAME.tmp-PID`, hidden, beside its final place.
pub(crate) fn temp_name(name: &std::ffi::OsStr, pid: u32) -> String {
    format!(".{}.tmp-{pid}", name.to_string_lossy())
}

/// Whether process `pid` may still run: true unless the system says no such process exists.
fn process_may_live(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return true;
        };
        if pid <= 0 {
            return true;
        }
        // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Removes the temporary directories that killed runs left beside `name` in `dir`: those named
/// [`temp_name`]`(name, pid)` that hold the file `marker`, whose process no longer exists.
/// Returns the directories removed. Anything else, a live writer's included, is left alone.
pub(crate) fn remove_stale_temp_dirs(
    dir: &Path,
    name: &std::ffi::OsStr,
    marker: &str,
) -> Result<Vec<PathBuf>> {
    let prefix = temp_name(name, 0);
    let prefix = prefix.trim_end_matches('0');
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let ours = entry.file_type().is_ok_and(|t| t.is_dir()) && path.join(marker).is_file();
        if !ours || pid == std::process::id() || process_may_live(pid) {
            continue;
        }
        std::fs::remove_dir_all(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        removed.push(path);
    }
    Ok(removed)
}

/// Writes `path` atomically; `write` fills the temporary file whose path it is given.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        Error::invalid(
            "output path",
            format!("{} has no file name", path.display()),
        )
    })?;
    let tmp = dir.join(temp_name(name, std::process::id()));
    let result = (|| {
        write(&tmp)?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Longest JSONL line read (1 MiB).
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Largest JSONL file read (1 GiB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Calls `f(n, line)` for every non-blank line of the JSONL file `path` (`n` counts from 1),
/// reading with bounded memory. A line over [`MAX_LINE_BYTES`], a file over
/// [`MAX_FILE_BYTES`], a line that is not UTF-8, or a reason returned by `f` ends the read with
/// an [`Error::Config`] naming the file and `line N`.
pub fn for_each_jsonl_line(
    path: &Path,
    mut f: impl FnMut(usize, &str) -> std::result::Result<(), String>,
) -> Result<()> {
    use std::io::{BufRead, BufReader, Read};
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(Error::config(
            path,
            format!("file is {len} bytes, over the limit of {MAX_FILE_BYTES}"),
        ));
    }
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut total: u64 = 0;
    for n in 1usize.. {
        buf.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(io)?;
        if read == 0 {
            break;
        }
        total += read as u64;
        if total > MAX_FILE_BYTES {
            return Err(Error::config(
                path,
                format!("file is over the limit of {MAX_FILE_BYTES} bytes"),
            ));
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > MAX_LINE_BYTES {
            return Err(Error::config(
                path,
                format!("line {n}: longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        let line = std::str::from_utf8(&buf)
            .map_err(|e| Error::config(path, format!("line {n}: not UTF-8: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        f(n, line).map_err(|msg| Error::config(path, format!("line {n}: {msg}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temp_dirs_of_dead_processes_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::new("out");
        // A process that has exited: its pid names no process (until reused, when the
        // directory is kept, which is the safe side).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let make = |dir_name: String, marker: bool| {
            let p = dir.path().join(dir_name);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("model.safetensors"), b"partial").unwrap();
            if marker {
                std::fs::write(p.join("MARK"), b"").unwrap();
            }
            p
        };
        let stale = make(temp_name(name, dead), true);
        let live = make(temp_name(name, std::process::id()), true);
        let foreign = make(temp_name(std::ffi::OsStr::new("other"), dead), true);
        let odd = make(format!(".out.tmp-{dead}x"), true);
        let removed = remove_stale_temp_dirs(dir.path(), name, "MARK").unwrap();
        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(live.exists() && foreign.exists() && odd.exists());
        // Without the marker, a dead process's directory is not provably ours.
        let unmarked = make(temp_name(name, dead), false);
        assert!(remove_stale_temp_dirs(dir.path(), name, "MARK")
            .unwrap()
            .is_empty());
        assert!(unmarked.exists());
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        write_atomic(&target, |tmp| {
            std::fs::write(tmp, b"new").map_err(|source| Error::Io {
                path: tmp.into(),
                source,
            })
        })
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        let err = write_atomic(&target, |_| Err(Error::invalid("data", "refused"))).unwrap_err();
        assert!(err.to_string().contains("refused"));
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
