//! `cargo xtask openapi`: `openapi.json`, the committed OpenAPI document,
//! rewritten from the code (`api openapi`), and the TypeScript client's
//! types generated from it.

use anyhow::{Context as _, bail};
use testkit::paths::project_root;
use testkit::progress::status;

use crate::cargo::cargo;

/// Rewrites `openapi.json` in the repository root from `api openapi`, then
/// the TypeScript client's types from it.
pub(crate) fn write() -> anyhow::Result<()> {
    let output = cargo()
        .args(["run", "--quiet", "--package", "api", "--", "openapi"])
        .output()
        .context("running `api openapi`")?;
    if !output.status.success() {
        bail!(
            "`api openapi` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let path = project_root().join("openapi.json");
    std::fs::write(&path, &output.stdout).with_context(|| format!("writing {}", path.display()))?;
    status(&format!("wrote {}", path.display()));
    crate::clients::regenerate()
}
