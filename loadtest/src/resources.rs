//! CPU time and peak memory of this process, from `getrusage`, and the CPU time of its threads
//! by name, from `/proc`: what sets the simulator apart from the pipeline it drives.

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

/// CPU seconds (user + system) of this process's live threads whose name starts with
/// `prefix`; 0 where `/proc/self/task` is not there to read.
pub fn thread_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ticks: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| thread_ticks(&stat, prefix))
        .sum();
    ticks as f64 / clock_ticks_per_second()
}

/// User + system clock ticks from one `/proc/.../stat` line, if the thread's name matches.
fn thread_ticks(stat: &str, prefix: &str) -> Option<u64> {
    // `tid (name) state ppid ...`: the name may hold spaces and parentheses, so it ends at
    // the last `)`; utime and stime are the 14th and 15th fields.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    if !stat.get(open + 1..close)?.starts_with(prefix) {
        return None;
    }
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf reads a constant of the system.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if ticks > 0 {
            return ticks as f64;
        }
    }
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_thread_s_ticks() {
        let stat = "4242 (weir-sim (2)) S 1 1 1 0 -1 4194368 10 0 0 0 250 31 0 0 20 0 3 0";
        assert_eq!(thread_ticks(stat, "weir-sim"), Some(281));
        assert_eq!(thread_ticks(stat, "tokio"), None);
    }

    #[test]
    fn a_busy_named_thread_is_counted() {
        // The thread spins until its own clock says 0.2 s of CPU, however busy the machine.
        fn own_cpu_seconds() -> f64 {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes into the timespec it is given.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
            t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
        }
        let (spun, done) = std::sync::mpsc::channel();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("weir-test-spin".into())
            .spawn(move || {
                let mut x = 0u64;
                while own_cpu_seconds() < 0.2 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
                }
                spun.send(()).unwrap();
                // Alive until counted.
                let _ = wait.recv();
            })
            .unwrap();
        done.recv().unwrap();
        let busy = thread_cpu_seconds("weir-test-spin");
        release.send(()).unwrap();
        worker.join().unwrap();
        assert!((0.15..1.0).contains(&busy), "{busy}");
    }
}
