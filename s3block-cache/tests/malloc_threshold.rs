//! The daemons' malloc settings (`frontend::bound_malloc`): with glibc, a
//! buffer of 512 KiB or more gets a mapping of its own, given back to the
//! system when freed, while a smaller one (an HTTP read buffer of about
//! 408 KiB, a 256 KiB block) comes from the heap, where reuse costs no page
//! fault. Alone in its test binary: malloc's settings are the process's.

#![cfg(all(target_os = "linux", target_env = "gnu"))]
#![allow(unsafe_code)] // mallinfo2 reads malloc's own figures

/// Bytes malloc holds in mappings of their own.
fn mapped() -> usize {
    // SAFETY: mallinfo2 only reads malloc's statistics.
    unsafe { libc::mallinfo2() }.hblkhd
}

/// How much a live allocation of `len` bytes adds to the mapped bytes.
fn mapped_by(len: usize) -> usize {
    let before = mapped();
    let buf = std::hint::black_box(vec![1u8; len]);
    let after = mapped();
    drop(buf);
    after.saturating_sub(before)
}

#[test]
fn buffers_from_512k_get_their_own_mapping_and_smaller_ones_do_not() {
    // The user's own setting would win; this test checks the default.
    assert!(
        std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none(),
        "unset MALLOC_MMAP_THRESHOLD_ to run this test"
    );
    s3block_cache::frontend::bound_malloc();
    for len in [600 << 10, 1 << 20] {
        assert!(mapped_by(len) >= len, "a {len}-byte buffer was not mapped on its own");
    }
    // Smaller buffers, each freed before the next, stay in the heap even
    // when allocated again and again (glibc would otherwise raise the
    // threshold above the largest freed mapping, and keep big ones too).
    for _ in 0..4 {
        for len in [64 << 10, 256 << 10, 408 << 10] {
            assert_eq!(mapped_by(len), 0, "a {len}-byte buffer got a mapping of its own");
        }
        assert!(mapped_by(2 << 20) >= 2 << 20, "after freeing mappings the threshold moved");
    }
}
