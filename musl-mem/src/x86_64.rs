//! The copy itself, for x86-64 (SSE2 is part of the architecture).

use core::arch::asm;
use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};

/// Longest copy done with loads and stores; longer ones use `rep movsb`.
pub(crate) const SMALL: usize = 128;

/// Copies `n` bytes from `src` to `dest`; the ranges may overlap.
///
/// # Safety
/// `src` valid for reads and `dest` for writes of `n` bytes.
#[inline(always)]
pub(crate) unsafe fn copy(dest: *mut u8, src: *const u8, n: usize) {
    if n <= SMALL {
        // SAFETY: the caller's contract.
        unsafe { small(dest, src, n) }
    } else if (dest as usize).wrapping_sub(src as usize) >= n {
        // `dest` is below `src` or past its end: a forward copy never
        // overwrites a byte before reading it.
        // SAFETY: the caller's contract; the direction flag is clear, as
        // the ABI requires at every call.
        unsafe {
            asm!(
                "rep movsb",
                inout("rcx") n => _,
                inout("rdi") dest => _,
                inout("rsi") src => _,
                options(nostack, preserves_flags)
            );
        }
    } else {
        // `dest` starts inside the source: copy from the last byte down.
        // SAFETY: the caller's contract; the last bytes are at n - 1
        // (n > SMALL > 0), and the direction flag is cleared again before
        // the block ends, as the ABI requires.
        unsafe {
            asm!(
                "std",
                "rep movsb",
                "cld",
                inout("rcx") n => _,
                inout("rdi") dest.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _,
                options(nostack)
            );
        }
    }
}

/// Copies `n <= SMALL` bytes with unaligned loads that may overlap each
/// other; every load is done before the first store, so `dest` and `src`
/// may overlap too.
///
/// # Safety
/// As [`copy`], with `n <= SMALL`.
#[inline(always)]
unsafe fn small(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: each access lies within the first `n` bytes of `src` or
    // `dest` (offsets `0..w` and `n - w..n` for a width `w <= n`), and
    // every access is an unaligned one.
    unsafe {
        if n >= 16 {
            let v = |i: usize| _mm_loadu_si128(src.add(i).cast::<__m128i>());
            let put = |i: usize, x| _mm_storeu_si128(dest.add(i).cast::<__m128i>(), x);
            if n <= 32 {
                ends::<__m128i>(dest, src, n);
            } else if n <= 64 {
                let (a, b, c, d) = (v(0), v(16), v(n - 32), v(n - 16));
                put(0, a);
                put(16, b);
                put(n - 32, c);
                put(n - 16, d);
            } else {
                let head = [v(0), v(16), v(32), v(48)];
                let tail = [v(n - 64), v(n - 48), v(n - 32), v(n - 16)];
                for (i, x) in head.into_iter().enumerate() {
                    put(16 * i, x);
                }
                for (i, x) in tail.into_iter().enumerate() {
                    put(n - 64 + 16 * i, x);
                }
            }
        } else if n >= 8 {
            ends::<u64>(dest, src, n);
        } else if n >= 4 {
            ends::<u32>(dest, src, n);
        } else if n >= 2 {
            ends::<u16>(dest, src, n);
        } else if n == 1 {
            dest.write(src.read());
        }
    }
}

/// Copies the first and the last `size_of::<T>()` bytes, both loaded
/// before either is stored: all of them when `n` lies between that size
/// and twice it.
///
/// # Safety
/// As [`copy`], with `size_of::<T>() <= n <= 2 * size_of::<T>()`.
#[inline(always)]
unsafe fn ends<T>(dest: *mut u8, src: *const u8, n: usize) {
    let last = n - size_of::<T>();
    // SAFETY: offsets `0` and `last` with a width of `size_of::<T>()`
    // stay within the first `n` bytes; the accesses are unaligned ones.
    unsafe {
        let (first, end) = (
            src.cast::<T>().read_unaligned(),
            src.add(last).cast::<T>().read_unaligned(),
        );
        dest.cast::<T>().write_unaligned(first);
        dest.add(last).cast::<T>().write_unaligned(end);
    }
}

#[cfg(test)]
mod tests {
    use super::{SMALL, copy};

    /// Every length up to past the `rep movsb` threshold, at every
    /// alignment of either end, against a byte-by-byte copy.
    #[test]
    fn copies_every_length_and_alignment() {
        let source: Vec<u8> = (0..512u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..=2 * SMALL + 3 {
            for from in 0..16 {
                for to in 0..16 {
                    let mut dest = vec![0xAAu8; 2 * SMALL + 40];
                    // SAFETY: both ranges are inside their vectors.
                    unsafe { copy(dest.as_mut_ptr().add(to), source.as_ptr().add(from), n) };
                    assert_eq!(
                        &dest[to..to + n],
                        &source[from..from + n],
                        "length {n}, from {from} to {to}"
                    );
                    assert!(
                        dest[..to].iter().all(|&b| b == 0xAA),
                        "length {n}: wrote before the start"
                    );
                    assert!(
                        dest[to + n..].iter().all(|&b| b == 0xAA),
                        "length {n}: wrote past the end"
                    );
                }
            }
        }
    }

    /// memmove's case: source and destination in one buffer, shifted by
    /// every distance either way, as `<[u8]>::copy_within` does it.
    #[test]
    fn copies_overlapping_ranges_either_way() {
        for n in 0..=2 * SMALL + 3 {
            for shift in 0..=n + 1 {
                for (from, to) in [(0, shift), (shift, 0)] {
                    let original: Vec<u8> =
                        (0..n + shift + 8).map(|i| (i * 13 + 1) as u8).collect();
                    let mut expected = original.clone();
                    expected.copy_within(from..from + n, to);
                    let mut buffer = original;
                    let base = buffer.as_mut_ptr();
                    // SAFETY: both ranges are inside `buffer`.
                    unsafe { copy(base.add(to), base.add(from), n) };
                    assert_eq!(buffer, expected, "length {n}, from {from} to {to}");
                }
            }
        }
    }
}
