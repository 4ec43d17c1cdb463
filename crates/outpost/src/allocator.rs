//! The process's allocator: mimalloc, entered where its fast paths are.
//!
//! Proxying allocates and frees many small buffers per request on every worker thread;
//! mimalloc's per-thread heaps cost about half of glibc malloc's time there (see
//! docs/benchmarks.md). The `mimalloc` crate's own allocator hands every request to
//! `mi_malloc_aligned`, and in the mimalloc 3 it builds, an aligned request over 1 KiB, or one
//! of a size whose block is not a power of two, leaves the fast path: it is over-allocated by
//! its alignment and aligned by hand (about 200 instructions instead of 20, four times per
//! Lua request). Every mimalloc block is aligned to 16 bytes (`MI_MAX_ALIGN_SIZE`) when it is
//! at least that large, so those requests go to plain `mi_malloc`, as Rust's `System` does
//! with `malloc`; the rare wider alignment still takes the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// What every mimalloc block of at least this size is aligned to (`MI_MAX_ALIGN_SIZE`).
const MIN_ALIGN: usize = 16;

pub struct EdgeAllocator;

/// Whether plain `mi_malloc` gives `layout` its alignment.
fn natural(layout: &Layout) -> bool {
    layout.align() <= MIN_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every call goes to mimalloc, which returns blocks of at least the size asked for
// with the alignment asked for (checked by `natural` or passed through), or null; `mi_free`
// takes a block from any of its allocation calls.
unsafe impl GlobalAlloc for EdgeAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's C allocation calls accept any size.
        unsafe {
            if natural(&layout) {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if natural(&layout) {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new block keeps its
        // alignment (checked against the new size for the plain call).
        unsafe {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            if natural(&new) {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_have_the_alignment_asked_for() {
        let a = EdgeAllocator;
        for align in [1usize, 2, 8, 16, 32, 64, 4096] {
            for size in [1usize, 7, 8, 16, 24, 100, 1000, 1025, 1500, 5000, 70_000] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: a non-zero size; the block is written within its size and freed once.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xab, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc: size {size} align {align}");
                    assert_eq!(*q.add(size - 1), 0xab);
                    a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
