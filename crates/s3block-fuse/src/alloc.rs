//! Keeping the daemon's resident memory close to what the cache holds.
//!
//! The cache frees and allocates in two sizes: 4 KiB pages of partly written
//! blocks and whole blocks. With glibc's defaults, whole blocks come from the
//! heap once a few were freed (its mmap threshold rises), and pages freed in
//! the middle of the heap stay resident: a burst of scattered small writes
//! followed by whole-block reads left about 30 MiB more resident than the
//! cache held. So block-sized buffers are mapped and unmapped on their own,
//! and the memory freed in the heap is handed back to the kernel once a
//! second.

use std::time::Duration;

/// Buffers at least this large are mapped on their own, not cut from the heap.
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
/// How often freed heap memory is handed back.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Sets the allocator up; call before any thread starts.
#[allow(unsafe_code)]
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; it is called once,
    // before the process starts other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Starts the thread that hands freed heap memory back to the kernel.
pub(crate) fn start_trimming() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new().name("s3block-trim".into()).spawn(|| {
            loop {
                std::thread::sleep(TRIM_EVERY);
                trim();
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the memory trimming thread; freed memory stays resident longer");
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes the allocator's own locks and only returns
    // free memory to the kernel; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
