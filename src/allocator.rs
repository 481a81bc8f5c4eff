//! The global allocator: mimalloc, called through its plain entry points.
//!
//! The `mimalloc` crate's `GlobalAlloc` sends every allocation through `mi_malloc_aligned`,
//! whose alignment dispatch cost levee ~1 300 instructions per proxied request (callgrind, 22
//! allocations per request). Rust asks for alignment 16 or less almost always, which mimalloc
//! gives every block of 16 bytes or more anyway (and every block its own size's alignment
//! below that), so those go to `mi_malloc` directly, as std's own `System` allocator does with
//! `malloc`. This is the bin's only unsafe code; lib.rs forbids it.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The largest alignment every mimalloc block of at least that size has (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

pub struct Mimalloc;

/// Whether `layout` needs no more alignment than a plain `mi_malloc` block of its size has.
#[inline]
fn plain(layout: &Layout) -> bool {
    layout.align() <= PLAIN_ALIGN && layout.align() <= layout.size()
}

// SAFETY: each method forwards to the mimalloc function with the same contract; blocks from
// `mi_malloc` and `mi_malloc_aligned` are both freed by `mi_free` and resized by `mi_realloc*`.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(&layout) {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(&layout) {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN && layout.align() <= new_size {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

/// mimalloc's `mi_collect(true)`: frees retired pages and returns every free page to the OS
/// now (`levee::run` calls it after a wave of connections has parked).
pub fn collect() {
    // SAFETY: a plain C call with no pointers; mimalloc's collection may run on any thread at
    // any time (it is what the allocator does on its own, just sooner).
    unsafe { mi::mi_collect(true) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_have_the_alignment_asked_for() {
        for (size, align) in [
            (1, 1),
            (8, 8),
            (16, 16),
            (24, 8),
            (100, 32),
            (4096, 4096),
            (8, 64),
        ] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero sizes; each block is freed with the layout it was made with.
            unsafe {
                let p = Mimalloc.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                let p = Mimalloc.realloc(p, layout, size * 3);
                assert_eq!(p as usize % align, 0, "realloc: size {size} align {align}");
                Mimalloc.dealloc(p, Layout::from_size_align(size * 3, align).unwrap());
                let z = Mimalloc.alloc_zeroed(layout);
                assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                Mimalloc.dealloc(z, layout);
            }
        }
    }
}
