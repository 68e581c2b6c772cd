//! A scheduling hint for the threads a message waits on.
//!
//! Linux's scheduler (EEVDF, 6.6 and later) lets a running thread finish its slice before
//! a thread that wakes up gets the core, unless the woken one asked for a shorter slice
//! (6.12 and later, `sched_setattr` with `sched_runtime`). The default slice grows with the
//! number of CPUs (1.4 ms on a two-core VM, as the kernel reports it). A message hops
//! between threads on its way (a connection's task, the store's writer, its fsync thread),
//! each hop a wake-up, and at each it may wait that long behind bulk work sharing its core.
//! So those threads ask for [`SLICE`]; threads doing bulk work in the background (the chat
//! store's checkpoints) keep the default and give way to them at once. It changes who runs
//! first, not how much CPU a thread gets: the fair share is kept.
//!
//! Measured with `seed-bench chat` at 5,000 msg/s (server and load each pinned to one core
//! of a two-core VM), six pairs of runs, without and with: the messages slower than 2 ms
//! went from 1.1–1.9% (median 1.4%) to 0.9–1.6% (median 1.3%), p99 from a median of 2.65 ms
//! to 2.40 ms; the maximum rate did not change (48,000–51,400 msg/s against 49,200–50,800).
//!
//! Older kernels ignore the slice; a kernel or sandbox that refuses the call leaves the
//! thread as it was.

use std::time::Duration;

/// The slice the threads on a message's path ask for: the shortest the kernel takes.
pub const SLICE: Duration = Duration::from_micros(100);

/// Asks for short slices for the calling thread (see the module's docs), keeping its
/// scheduling policy and nice value. Threads under a real-time or idle policy are left
/// alone. Failure is only logged: the hint is not needed for correctness.
pub fn prefer_short_slices() {
    if let Err(e) = imp::set_slice(SLICE) {
        tracing::debug!(error = %e, "short scheduler slices not available");
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::time::Duration;

    /// `struct sched_attr` as of its first version (`SCHED_ATTR_SIZE_VER0`, 48 bytes).
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }

    const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

    fn get() -> io::Result<SchedAttr> {
        let mut attr = SchedAttr::default();
        let size = size_of::<SchedAttr>() as u32;
        // SAFETY: `attr` is a writable `struct sched_attr` of `size` bytes, which bounds what
        // the kernel writes; pid 0 is the calling thread.
        let done = unsafe {
            libc::syscall(libc::SYS_sched_getattr, 0, &raw mut attr, size, 0 as libc::c_uint)
        };
        if done == 0 { Ok(attr) } else { Err(io::Error::last_os_error()) }
    }

    fn is_fair(attr: &SchedAttr) -> bool {
        matches!(attr.policy as i32, libc::SCHED_OTHER | libc::SCHED_BATCH)
    }

    pub fn set_slice(slice: Duration) -> io::Result<()> {
        let current = get()?;
        if !is_fair(&current) {
            return Ok(());
        }
        set(&SchedAttr {
            size: size_of::<SchedAttr>() as u32,
            policy: current.policy,
            flags: current.flags & SCHED_FLAG_RESET_ON_FORK,
            nice: current.nice,
            runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
            ..SchedAttr::default()
        })
    }

    fn set(attr: &SchedAttr) -> io::Result<()> {
        // SAFETY: `attr` is a valid `struct sched_attr` whose `size` field gives its length;
        // the kernel only reads it. pid 0 is the calling thread.
        let done = unsafe {
            libc::syscall(libc::SYS_sched_setattr, 0, attr as *const SchedAttr, 0 as libc::c_uint)
        };
        if done == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// The calling thread's slice as the kernel reports it; None before 6.12.
    #[cfg(test)]
    pub fn slice() -> io::Result<Option<Duration>> {
        let attr = get()?;
        Ok((is_fair(&attr) && attr.runtime > 0).then(|| Duration::from_nanos(attr.runtime)))
    }

    #[cfg(test)]
    pub fn nice() -> io::Result<i32> {
        get().map(|attr| attr.nice)
    }

    #[cfg(test)]
    pub fn set_nice(nice: i32) -> io::Result<()> {
        set(&SchedAttr {
            size: size_of::<SchedAttr>() as u32,
            policy: libc::SCHED_OTHER as u32,
            nice,
            ..SchedAttr::default()
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::time::Duration;

    pub fn set_slice(_: Duration) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "scheduler slices are a Linux feature"))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn short_slice_keeps_the_nice_value() {
        // A thread of its own: the settings stay with it.
        std::thread::spawn(|| {
            // Raising one's own nice value needs no privilege.
            imp::set_nice(5).expect("set nice 5");
            let current_slice = || imp::slice().unwrap();
            let before = current_slice();
            prefer_short_slices();
            assert_eq!(imp::nice().unwrap(), 5, "the nice value is kept");
            match before {
                // The kernel reports slices (6.12+): the thread now has the short one.
                Some(default) => {
                    assert!(default > SLICE, "default slice {default:?}");
                    assert_eq!(current_slice(), Some(SLICE));
                }
                None => eprintln!("this kernel reports no slices; only the nice value checked"),
            }
        })
        .join()
        .unwrap();
    }
}
