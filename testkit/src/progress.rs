//! Progress lines for the person at the terminal, each headed by the
//! program that prints it (`xtask:`, `rehearsal:`, `reliability:`).

use std::sync::LazyLock;

/// A progress line, headed by this program's name.
pub fn status(message: &str) {
    eprintln!("{}: {message}", program());
}

/// The start of a named step in a long task.
pub fn step(message: &str) {
    eprintln!("\n{}: ==> {message}", program());
}

/// This program's name; for a test binary, its target's name without the
/// hash cargo appends (`rehearsal-0123456789abcdef`).
fn program() -> &'static str {
    static NAME: LazyLock<String> = LazyLock::new(|| {
        let path = std::env::current_exe().unwrap_or_default();
        let stem = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "testkit".to_owned());
        without_hash(&stem).to_owned()
    });
    &NAME
}

/// `name` without a trailing `-` and 16 hexadecimal digits.
fn without_hash(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((target, hash))
            if hash.len() == 16 && hash.bytes().all(|byte| byte.is_ascii_hexdigit()) =>
        {
            target
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_binary_is_named_after_its_target_without_cargo_s_hash() {
        assert_eq!(without_hash("rehearsal-0123456789abcdef"), "rehearsal");
        assert_eq!(without_hash("api-server-0123456789abcdef"), "api-server");
        assert_eq!(without_hash("xtask"), "xtask");
        assert_eq!(without_hash("cargo-deny"), "cargo-deny");
    }
}
