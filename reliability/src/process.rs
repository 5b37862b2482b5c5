//! The gateway process as the kernel sees it, read from `/proc/PID`: resident memory (VmRSS) and
//! open file descriptors (sockets included). Linux only; the tools take the PID the script
//! started, and never signal it.

use std::fs;
use std::time::Duration;

/// The process under test.
#[derive(Debug, Clone, Copy)]
pub struct Process {
    pub pid: u32,
}

impl Process {
    /// Resident set size in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.pid);
        let text = fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
        parse_rss_kib(&text).ok_or_else(|| format!("{path} has no VmRSS line"))
    }

    /// How many file descriptors the process holds open (its listeners, connections, files).
    pub fn open_fds(&self) -> Result<usize, String> {
        let path = format!("/proc/{}/fd", self.pid);
        let entries = fs::read_dir(&path).map_err(|e| format!("listing {path}: {e}"))?;
        Ok(entries.count())
    }

    /// CPU time the process has used (user + system), from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Result<Duration, String> {
        let path = format!("/proc/{}/stat", self.pid);
        let text = fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
        let ticks = parse_cpu_ticks(&text).ok_or_else(|| format!("{path}: no utime/stime"))?;
        // The kernel reports clock ticks; USER_HZ is 100 on every Linux this runs on.
        Ok(Duration::from_millis(ticks * 10))
    }

    /// Whether the process still exists.
    pub fn alive(&self) -> bool {
        fs::metadata(format!("/proc/{}", self.pid)).is_ok()
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line; the command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

/// `VmRSS:    123456 kB` → 123456.
fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vmrss() {
        let status = "Name:\tgateway\nVmPeak:\t  900 kB\nVmRSS:\t   51234 kB\nThreads:\t5\n";
        assert_eq!(parse_rss_kib(status), Some(51234));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn reads_cpu_ticks_after_the_command_name() {
        let stat = "42 (tokio (worker) x) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 5";
        assert_eq!(parse_cpu_ticks(stat), Some(280));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = Process { pid: std::process::id() };
        assert!(me.rss_kib().unwrap() > 0);
        assert!(me.open_fds().unwrap() >= 3);
        assert!(me.alive());
        assert!(me.cpu_time().is_ok());
    }
}
