//! Reading a server process's resident memory and CPU time from `/proc`.

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User + system CPU seconds consumed so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks.max(1.0))
}

/// A measured window: wall time and the server's CPU time over it.
pub struct Window {
    pid: Option<u32>,
    cpu_at_start: Option<f64>,
    started: std::time::Instant,
}

impl Window {
    /// Starts measuring (CPU only when the server's PID is known).
    pub fn start(pid: Option<u32>) -> Window {
        Window { pid, cpu_at_start: pid.and_then(cpu_seconds), started: std::time::Instant::now() }
    }

    /// Seconds since the start, and the server CPU seconds used meanwhile.
    pub fn finish(&self) -> (f64, Option<f64>) {
        let cpu = self.pid.and_then(cpu_seconds).zip(self.cpu_at_start).map(|(a, b)| a - b);
        (self.started.elapsed().as_secs_f64(), cpu)
    }
}
