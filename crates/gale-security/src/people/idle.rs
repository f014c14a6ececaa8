//! Terminal idle time, as `w` and Ginsu's `status.idle` measure it: the last
//! time the person's terminal was read from (its access time), which typing
//! moves and gsub's own output does not. And the default device name.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use gale_proto::Timestamp;

/// Environment variable naming this device in presence (`laptop`).
pub const DEVICE_ENV: &str = "GALE_DEVICE";

/// The terminal on standard input, output or error, if any (Linux: read
/// through `/proc/self/fd`).
pub fn terminal() -> Option<PathBuf> {
    (0..3).find_map(|fd| {
        let p = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
        let s = p.to_str()?;
        (s.starts_with("/dev/pts/") || s.starts_with("/dev/tty")).then_some(p)
    })
}

/// When `tty` was last read from, if its access time can be read.
pub fn last_active(tty: &Path) -> Option<Timestamp> {
    let at = std::fs::metadata(tty).ok()?.accessed().ok()?;
    let d = at.duration_since(UNIX_EPOCH).ok()?;
    Some(Timestamp {
        secs: i64::try_from(d.as_secs()).ok()?,
        nanos: d.subsec_nanos(),
    })
}

/// The default device: `$GALE_DEVICE`, else the host name, else `unknown`.
/// Stable (no terminal in it): gsub's inbox cursor is kept per device too.
pub fn default_device() -> String {
    if let Some(d) = std::env::var(DEVICE_ENV)
        .ok()
        .filter(|d| !d.trim().is_empty())
    {
        return d.trim().to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_files_access_time_is_read() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let t = last_active(f.path()).unwrap();
        assert!(t.secs > 1_600_000_000, "{t:?}");
        assert!(last_active(Path::new("/nonexistent/tty")).is_none());
        assert!(!default_device().is_empty());
    }
}
