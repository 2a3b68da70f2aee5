//! The project's pinned Python tools in a virtualenv under the target
//! folder (schemathesis, zizmor, cfn-lint, moto with boto3; from PyPI with
//! their hashes, `xtask/python-tools.txt`), and moto in server mode: a real
//! AWS wire-protocol endpoint for the RDS and deploy tests and the rehearsal.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::http::Terminating;
use crate::paths::{project_root, target_dir};
use crate::ports::free_port;
use crate::process::run;
use crate::progress::status;

/// The schemathesis release the checks were written against.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The GitHub Actions security linter.
const ZIZMOR: &str = "zizmor==1.32.0";

/// The CloudFormation linter (infra/).
const CFN_LINT: &str = "cfn-lint==1.41.0";

/// The migrations' linter (locks and rewrites that stall a live table).
const SQUAWK: &str = "squawk-cli==2.70.0";

/// The AWS emulator the RDS and deploy tests and the rehearsal run against.
const MOTO: &str = "moto[server]==5.1.22";

/// The Python of `target/tools-venv`, which holds schemathesis, zizmor,
/// cfn-lint, squawk, moto (with boto3) and PyYAML, installed when missing.
pub fn tools_python() -> anyhow::Result<PathBuf> {
    let schemathesis = ensure_schemathesis()?;
    Ok(schemathesis.with_file_name("python"))
}

/// The schemathesis executable, installed into `target/tools-venv` when
/// missing.
fn ensure_schemathesis() -> anyhow::Result<PathBuf> {
    let venv = target_dir().join("tools-venv");
    let executable = venv.join("bin/schemathesis");
    // Each tool at its pinned version, or all are (re)installed.
    let pinned = [
        ("schemathesis", SCHEMATHESIS),
        ("zizmor", ZIZMOR),
        ("cfn-lint", CFN_LINT),
        ("squawk", SQUAWK),
    ];
    let all_current = pinned.iter().all(|(program, requirement)| {
        let version = requirement.rsplit("==").next().unwrap_or_default();
        Command::new(venv.join("bin").join(program))
            .arg("--version")
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains(version))
    });
    if all_current {
        return Ok(executable);
    }
    status(&format!(
        "installing {SCHEMATHESIS}, {ZIZMOR}, {CFN_LINT}, {SQUAWK} and {MOTO} into {}",
        venv.display()
    ));
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("running python3 (install Python 3.9 or newer)")?;
    if !created.success() {
        bail!(
            "python3 -m venv failed: install the venv module (Debian/Ubuntu: `sudo apt-get install python3-venv`)"
        );
    }
    // Every package pinned with its hashes (xtask/python-tools.txt, made
    // from xtask/python-tools.in, which holds the pins above).
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--require-hashes", "-r"])
        .arg(project_root().join("xtask/python-tools.txt")))?;
    Ok(executable)
}

/// moto in server mode on a free port: a real AWS wire-protocol endpoint
/// for the RDS tests. Stopped when dropped.
#[derive(Debug)]
pub struct Moto {
    /// The server process, stopped when this is dropped.
    _server: Terminating,
    /// Its address.
    address: std::net::Ipv4Addr,
    /// Its port.
    port: u16,
}

impl Moto {
    /// Installs (when missing) and starts moto on 127.0.0.1, waiting
    /// until it answers.
    pub fn start() -> anyhow::Result<Moto> {
        Moto::start_at(std::net::Ipv4Addr::LOCALHOST)
    }

    /// Like [`Moto::start`], listening on `address`.
    pub fn start_at(address: std::net::Ipv4Addr) -> anyhow::Result<Moto> {
        let python = tools_python()?;
        let moto_server = python.with_file_name("moto_server");
        if !moto_server.exists() {
            bail!(
                "{} is missing ({MOTO} should be in target/tools-venv): remove target/tools-venv \
                 and run again to reinstall the tools",
                moto_server.display()
            );
        }
        let port = free_port()?;
        let log_path = target_dir().join(format!("moto-{port}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&moto_server)
            .args(["-H", &address.to_string(), "-p", &port.to_string()])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting moto_server")?;
        let moto = Moto {
            _server: Terminating(child),
            address,
            port,
        };
        crate::wait::wait_until(
            &format!(
                "moto to listen on {address}:{port} (its log: {})",
                log_path.display()
            ),
            std::time::Duration::from_secs(30),
            || Ok::<_, std::io::Error>(std::net::TcpStream::connect((address, port)).is_ok()),
        )?;
        status(&format!("moto (AWS emulator) on {address}:{port}"));
        Ok(moto)
    }

    /// Points the AWS SDK of `command` at this emulator with dummy
    /// credentials, so that nothing it runs can reach AWS.
    pub fn aim<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command
            .env("AWS_ENDPOINT_URL", self.url())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            // boto3 reads this one.
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
    }

    /// The endpoint URL for `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.address, self.port)
    }
}
