//! The project's folders: the repository root and the cargo target folder,
//! the same for every task and test wherever it runs from.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives one level below the root")
        .to_path_buf()
}

/// The cargo target folder (`CARGO_TARGET_DIR`, or `target/` in the root).
/// A relative `CARGO_TARGET_DIR` is taken from the root, where xtask runs
/// cargo: a test binary runs in its own crate's folder.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| project_root().join(dir))
        .unwrap_or_else(|| project_root().join("target"))
}
