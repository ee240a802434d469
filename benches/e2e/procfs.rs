//! What `/proc` tells about a process: CPU time (utime + stime), resident memory, and the
//! machine (CPU model, cores).

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 when unknown).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// CPU time (user + system, every thread, finished ones included) of a process.
pub fn cpu_time(pid: u32, ticks_per_sec: u64) -> Duration {
    let (user, system) = cpu_times(pid, ticks_per_sec);
    user + system
}

/// User and system CPU time (every thread, finished ones included) of a process.
pub fn cpu_times(pid: u32, ticks_per_sec: u64) -> (Duration, Duration) {
    let path = if pid == 0 {
        "/proc/self/stat".to_string()
    } else {
        format!("/proc/{pid}/stat")
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return (Duration::ZERO, Duration::ZERO);
    };
    // Fields after the command name (which may contain spaces) in parentheses: state is
    // field 3, utime field 14, stime field 15.
    let Some((_, rest)) = text.rsplit_once(')') else {
        return (Duration::ZERO, Duration::ZERO);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let time = |ticks: u64| {
        Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / ticks_per_sec.max(1))
    };
    (time(tick(11)), time(tick(12)))
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (0, 0);
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Threads of a process right now.
pub fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The machine: CPU model, logical CPUs, memory, kernel.
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub mem_total_mib: u64,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|v| v.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_total_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Machine {
        cpu_model,
        cpus,
        mem_total_mib,
        kernel,
    }
}

/// The 1-minute load average (other work on the machine skews the figures).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
