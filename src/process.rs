//! Process-wide settings made once at start-up, before any other thread exists: how the
//! allocator returns memory, and how many open files the connection cap may use; and writing
//! the files only labgate's user may read.

/// Keeps memory use flat after password hashing. argon2 allocates 19 MiB per hash; with
/// glibc's default dynamic mmap threshold that block is then served from the malloc arena of
/// whichever connection thread hashed, and stays resident there (one arena per thread, up to
/// 8 × CPUs). A fixed threshold sends every large block to `mmap` (returned to the system on
/// free) and two arenas bound what small blocks can strand. Measured in PERFORMANCE.md
/// (after 32 password sign-ins: 119.7 MiB → 17.3 MiB).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// File descriptors one served connection uses (its socket, and the clone oxhttp reads from).
pub const FDS_PER_CONNECTION: u64 = 2;
/// File descriptors kept for everything else (SQLite files, the listener, outbound calls, logs).
pub const FDS_RESERVED: u64 = 128;

/// Raises the soft open-file limit to the hard limit (the usual soft default of 1024 would cap
/// labgate at a few hundred connections, and at the limit `accept` fails in a loop), and
/// returns how many connections fit in it, at most `wanted`.
pub fn connection_capacity(wanted: usize) -> usize {
    let limit = raise_open_file_limit();
    fit_connections(wanted, limit)
}

/// How many connections fit in an open-file limit (`None`: unknown, keep `wanted`).
pub fn fit_connections(wanted: usize, open_files: Option<u64>) -> usize {
    match open_files {
        None => wanted,
        Some(limit) => {
            let fit = limit.saturating_sub(FDS_RESERVED) / FDS_PER_CONNECTION;
            (fit.max(16) as usize).min(wanted)
        }
    }
}

#[cfg(unix)]
fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(limit.rlim_cur)
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> Option<u64> {
    None
}

/// Writes a file readable by its owner only (0600).
pub fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_in_the_open_file_limit() {
        assert_eq!(fit_connections(2048, None), 2048);
        assert_eq!(fit_connections(2048, Some(1_048_576)), 2048);
        assert_eq!(fit_connections(2048, Some(1024)), (1024 - 128) / 2);
        assert_eq!(fit_connections(2048, Some(100)), 16);
    }
}
