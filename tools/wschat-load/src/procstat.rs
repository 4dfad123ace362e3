//! Process measurements: the server's CPU time, resident memory and its
//! peak from `/proc`, the tool's own CPU time, and the file-descriptor
//! limit.

use std::fs;
use std::io;

/// CPU time and resident set size of a process at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcSample {
    /// User plus system time, all threads, in seconds.
    pub cpu_s: f64,
    pub rss_kib: u64,
    /// The most resident memory the process has had since it started
    /// (`VmHWM`, the kernel's high-water mark: no peak between two samples
    /// is missed).
    pub peak_rss_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` when the
/// process is gone or the files cannot be parsed.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status_kib(&status, "VmRSS:")?;
    Some(ProcSample {
        cpu_s: cpu_ticks(&stat)? as f64 / clock_ticks_per_sec(),
        rss_kib,
        peak_rss_kib: status_kib(&status, "VmHWM:").map_or(rss_kib, |hwm| hwm.max(rss_kib)),
    })
}

/// The samples of every process in `pids`, summed; `None` when there is
/// none or one of them cannot be read.
pub fn sample_all(pids: &[u32]) -> Option<ProcSample> {
    let mut total: Option<ProcSample> = None;
    for &pid in pids {
        let s = sample(pid)?;
        total = Some(match total {
            None => s,
            Some(t) => ProcSample {
                cpu_s: t.cpu_s + s.cpu_s,
                rss_kib: t.rss_kib + s.rss_kib,
                peak_rss_kib: t.peak_rss_kib + s.peak_rss_kib,
            },
        });
    }
    total
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15) from a `/proc/<pid>/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Vm…:` line of `/proc/<pid>/status` (`field` with its colon), in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This process's user plus system CPU seconds so far.
pub fn own_cpu_s() -> f64 {
    // SAFETY: getrusage writes a plain struct we own; all-zero is a
    // valid rusage.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft
/// limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    // SAFETY: getrlimit/setrlimit read and write a plain struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(limit.rlim_cur as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        let stat = "4242 (my (weird) srv) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 3 0 123456 1000000 2500 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(325));
    }

    #[test]
    fn stat_truncated_or_garbled() {
        assert_eq!(cpu_ticks("4242 (srv) S 1 2 3"), None);
        assert_eq!(cpu_ticks("no parenthesis here"), None);
        assert_eq!(cpu_ticks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 ab 1 0"), None);
    }

    #[test]
    fn status_rss_line() {
        let status = "Name:\tnode\nVmPeak:\t  999 kB\nVmHWM:\t   61000 kB\n\
                      VmRSS:\t   51234 kB\nThreads:\t7\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(51234));
        assert_eq!(status_kib(status, "VmHWM:"), Some(61000));
        assert_eq!(status_kib("Name:\tkthread\n", "VmRSS:"), None);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let me = sample(std::process::id()).expect("own /proc entry");
        assert!(me.rss_kib > 0);
        assert!(me.peak_rss_kib >= me.rss_kib);
        assert!(own_cpu_s() >= 0.0);
    }
}
