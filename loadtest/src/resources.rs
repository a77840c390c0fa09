//! CPU time and peak memory of this process, from `getrusage`.

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
}

#[cfg(unix)]
pub fn current() -> Resources {
    // SAFETY: getrusage only writes into the zeroed struct we hand it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Resources::default();
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Resources {
        cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime),
        // Linux reports ru_maxrss in KiB.
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    }
}

#[cfg(not(unix))]
pub fn current() -> Resources {
    Resources::default()
}
