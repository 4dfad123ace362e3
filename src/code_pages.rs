//! The binary's machine code, mapped once at start.
//!
//! Linux maps a program's code lazily: the first call into a page faults,
//! and the kernel then maps the cached pages around it, 64 KiB at a time
//! ("fault-around"). For a single-threaded server each such fault is a
//! stall of the whole loop, and which code gets faulted in when depends on
//! where the linker happened to put it: the first handshake, the first
//! broadcast, the first TLS or Redis event each take their turn. It also
//! made the resident set grow with the first connections by a few hundred
//! KiB that are not per connection at all, a different amount for every
//! build (measured with `perf/idle-memory.sh`; see README, "What S4 at
//! 2,000 connections counts").
//!
//! So at start the server asks the kernel to populate the page tables of
//! its code mapping (`MADV_POPULATE_READ`, Linux 5.14 and later): the
//! pages come from the page cache, are shared with every other process
//! running the binary, stay reclaimable under memory pressure, and are
//! never written. Where the kernel does not know the advice, nothing
//! changes but the log line.

use std::io;

/// Populates the page tables of the executable's code mapping; returns
/// the bytes it covers.
#[cfg(target_os = "linux")]
pub fn map_all() -> io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let exe = exe.to_string_lossy();
    let mut mapped = 0;
    for (start, end) in maps.lines().filter_map(|line| code_range(line, &exe)) {
        // SAFETY: the range is one of this process's own mappings, page
        // aligned as /proc/self/maps gives it, and MADV_POPULATE_READ only
        // fills page tables as reads would: it changes no memory, no
        // protection and no mapping.
        let result = unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_READ,
            )
        };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        mapped += end - start;
    }
    Ok(mapped)
}

#[cfg(not(target_os = "linux"))]
pub fn map_all() -> io::Result<usize> {
    Ok(0)
}

/// The address range of a `/proc/self/maps` line if it maps `exe`
/// executable.
fn code_range(line: &str, exe: &str) -> Option<(usize, usize)> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let path = fields.nth(3)?;
    if !perms.starts_with("r-x") || path != exe {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executable_s_code_lines_are_taken() {
        let exe = "/usr/bin/wschat";
        let line = "55d0c4a00000-55d0c5000000 r-xp 00100000 fd:01 1234 /usr/bin/wschat";
        assert_eq!(
            code_range(line, exe),
            Some((0x55d0c4a00000, 0x55d0c5000000))
        );
        for other in [
            "55d0c4a00000-55d0c5000000 r--p 00000000 fd:01 1234 /usr/bin/wschat",
            "55d0c4a00000-55d0c5000000 rw-p 00000000 fd:01 1234 /usr/bin/wschat",
            "7f00c4a00000-7f00c5000000 r-xp 00000000 fd:01 99 /usr/lib/libc.so.6",
            "7ffd0000-7ffd1000 r-xp 00000000 00:00 0 [vdso]",
            "7f00c4a00000-7f00c5000000 rw-p 00000000 00:00 0",
            "garbage",
        ] {
            assert_eq!(code_range(other, exe), None, "{other}");
        }
    }

    /// The Rss of this test binary's code mappings, and their size, in KiB.
    #[cfg(target_os = "linux")]
    fn code_rss_and_size() -> (u64, u64) {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_string_lossy();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let (mut rss, mut size, mut ours) = (0, 0, false);
        for line in smaps.lines() {
            if line
                .split_whitespace()
                .next()
                .is_some_and(|f| f.contains('-'))
            {
                ours = code_range(line, &exe).is_some();
            } else if ours {
                let kib = |l: &str| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
                if line.starts_with("Rss:") {
                    rss += kib(line);
                } else if line.starts_with("Size:") {
                    size += kib(line);
                }
            }
        }
        (rss, size)
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn every_code_page_is_resident_afterwards() {
        let mapped = map_all().expect("MADV_POPULATE_READ (Linux 5.14+)");
        let (rss, size) = code_rss_and_size();
        assert!(mapped > 0 && size > 0);
        assert_eq!(mapped as u64 / 1024, size);
        assert_eq!(rss, size, "all {size} KiB of code mapped");
    }
}
