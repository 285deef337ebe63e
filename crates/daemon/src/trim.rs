//! Once start-up is over, guestd unmaps the pages of its own code and constants, so that only
//! the code it runs afterwards (the request path) is mapped again, on first use.
//!
//! The kernel maps an executable's pages in blocks (fault-around: 64 KiB by default) and keeps
//! them mapped for the life of the process, so a daemon's resident code would otherwise be
//! everything start-up ever touched: flag and configuration parsing, OS detection, logging
//! set-up, registering the commands, opening the transports. `MADV_PAGEOUT` over the read-only
//! segments of the executable unmaps them and lets the kernel reclaim the pages no other
//! process maps (clean file pages: nothing is written anywhere; whatever it keeps stays in the
//! page cache, unmapped and reclaimable without I/O). Nothing is hidden from the figures:
//! `bench/run` measures resident memory after the first reply and again after a million
//! requests, so every page the request path maps back is counted.

/// Page out the executable's read-only segments (code and constants). Returns the bytes
/// advised: 0 where this is not supported. The kernel skips what it may not reclaim (pages
/// another process maps, a binary this process could not open for writing), so this never
/// fails the daemon.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn page_out_startup_code() -> usize {
    use std::ffi::c_void;

    /// Collects the read-only `PT_LOAD` segments of the first object `dl_iterate_phdr`
    /// reports, which is the executable itself, then stops the iteration.
    unsafe extern "C" fn executable_segments(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid `info` with `dlpi_phnum` program headers, and
        // `data` is the `&mut Vec` given below, alive for the whole call.
        unsafe {
            let info = &*info;
            let out = &mut *data.cast::<Vec<(usize, usize)>>();
            for i in 0..usize::from(info.dlpi_phnum) {
                let ph = &*info.dlpi_phdr.add(i);
                if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_W == 0 {
                    let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
                    out.push((start, start + ph.p_memsz as usize));
                }
            }
        }
        1
    }

    let mut segments: Vec<(usize, usize)> = Vec::new();
    // SAFETY: the callback only reads the headers it is given and writes `segments`.
    unsafe {
        libc::dl_iterate_phdr(
            Some(executable_segments),
            (&raw mut segments).cast::<c_void>(),
        );
    }
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut advised = 0;
    for (start, end) in segments {
        // Whole pages inside the segment only: its first and last page may be shared with a
        // writable segment.
        let start = start.div_ceil(page) * page;
        let end = end / page * page;
        if end <= start {
            continue;
        }
        // SAFETY: [start, end) lies inside a read-only mapping of this executable; paging it
        // out only unmaps (and may reclaim) clean file pages, which fault back in on next use.
        if unsafe { libc::madvise(start as *mut c_void, end - start, libc::MADV_PAGEOUT) } == 0 {
            advised += end - start;
        }
    }
    advised
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn page_out_startup_code() -> usize {
    0
}
