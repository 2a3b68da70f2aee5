//! `memcpy` and `memmove` for the static musl build of `api` (the bundle).
//!
//! musl's x86-64 `memcpy` starts every copy with `rep movsq` and ends it
//! with one `movsb` per odd byte. That costs about 50 ns for a copy of a
//! few bytes, where glibc's takes about 12 (`docs/performance.md`), and a
//! JSON response is written in hundreds of such copies: a profile of the
//! bundle put 53 % of its time under `GET /data?n=100` in `memcpy`.
//!
//! Linked into a static musl binary for x86-64, this crate defines both
//! symbols, so the linker takes them instead of musl's (`memmove` too,
//! because musl's `memmove` shares an object file with its `memcpy`).
//! Copies of up to 128 bytes are unaligned 1–16 byte loads that may
//! overlap each other, all done before the first store, so they are also
//! correct for overlapping buffers; longer ones are `rep movsb`, fast on
//! every CPU with ERMS (Intel since Ivy Bridge, AMD since Zen 3), run
//! backwards when a `memmove` needs it. On every other target the crate
//! is empty and the C library's functions stay.
//!
//! `#![no_builtins]` keeps LLVM from turning the copies here back into
//! calls to `memcpy`, and keeps the crate out of link-time optimisation,
//! as Rust's own `compiler_builtins` does.

#![cfg_attr(not(test), no_std)]
#![no_builtins]
#![deny(
    unsafe_op_in_unsafe_fn,
    missing_docs,
    clippy::undocumented_unsafe_blocks
)]

#[cfg(all(target_arch = "x86_64", any(test, target_env = "musl")))]
mod x86_64;

#[cfg(all(target_arch = "x86_64", target_env = "musl", not(test)))]
mod symbols {
    /// C's `memcpy`: `n` bytes from `src` to `dest`, which do not overlap.
    ///
    /// # Safety
    /// The C contract: both ranges valid for `n` bytes, not overlapping.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract is memcpy's, which is stricter
        // than `copy`'s.
        unsafe { crate::x86_64::copy(dest, src, n) };
        dest
    }

    /// C's `memmove`: `n` bytes from `src` to `dest`, which may overlap.
    ///
    /// # Safety
    /// The C contract: both ranges valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract is `copy`'s.
        unsafe { crate::x86_64::copy(dest, src, n) };
        dest
    }
}
