//! Test certificates for the TLS tests: a CA, a server certificate for
//! `localhost` signed by it, and an unrelated second CA (made with the
//! `openssl` command, under `target/tls`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use crate::paths::target_dir;
use crate::process::run;

/// The files a TLS test needs.
#[derive(Debug)]
pub struct TestCertificates {
    /// The CA that signed the server certificate.
    pub ca: PathBuf,
    /// Its private key (to sign more).
    pub ca_key: PathBuf,
    /// A CA that did not.
    pub other_ca: PathBuf,
    /// The server certificate (for `localhost` only).
    pub server_cert: PathBuf,
    /// Its private key.
    pub server_key: PathBuf,
}

/// Makes fresh certificates in `target/tls`.
pub fn make() -> anyhow::Result<TestCertificates> {
    make_in(&target_dir().join("tls"))
}

/// Makes fresh certificates in `dir`.
pub fn make_in(dir: &Path) -> anyhow::Result<TestCertificates> {
    let dir = dir.to_path_buf();
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let openssl = |args: &[&str]| openssl(args, &dir);
    let quiet_ca = |name: &str| -> anyhow::Result<()> {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ])
    };
    quiet_ca("test-ca")?;
    quiet_ca("other-ca")?;
    let (ca, ca_key) = (dir.join("test-ca.crt"), dir.join("test-ca.key"));
    let (server_cert, server_key) = sign(&ca, &ca_key, &dir, "localhost")?;
    Ok(TestCertificates {
        ca,
        ca_key,
        other_ca: dir.join("other-ca.crt"),
        server_cert,
        server_key,
    })
}

/// Copies the server's certificate and key into a data directory, owned
/// by `owner` when given, with the key readable by the owner only.
pub fn install(
    certificates: &TestCertificates,
    data_dir: &Path,
    owner: Option<&str>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for (source, name) in [
        (&certificates.server_cert, "server.crt"),
        (&certificates.server_key, "server.key"),
    ] {
        let target = data_dir.join(name);
        std::fs::copy(source, &target)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
        if let Some(user) = owner {
            run(Command::new("chown").arg(format!("{user}:")).arg(&target))?;
        }
    }
    Ok(())
}

/// A server certificate for `host` signed by the test CA, written as
/// `<dir>/<host>.crt` and `.key`; returns both paths.
pub fn server_certificate(
    certificates: &TestCertificates,
    dir: &Path,
    host: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    sign(&certificates.ca, &certificates.ca_key, dir, host)
}

/// A key and a certificate for `host` (its CN and only DNS name), signed by
/// `ca`, written as `<dir>/<host>.crt` and `.key`; returns both paths.
fn sign(ca: &Path, ca_key: &Path, dir: &Path, host: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let openssl = |args: &[&str]| openssl(args, dir);
    let (key, csr, cert, ext) = (
        format!("{host}.key"),
        format!("{host}.csr"),
        format!("{host}.crt"),
        format!("{host}.ext"),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        &format!("/CN={host}"),
        "-keyout",
        &key,
        "-out",
        &csr,
    ])?;
    std::fs::write(dir.join(&ext), format!("subjectAltName = DNS:{host}\n"))?;
    let ca = ca.display().to_string();
    let ca_key = ca_key.display().to_string();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ])?;
    Ok((dir.join(cert), dir.join(key)))
}

/// Runs `openssl` in `dir`; its chatter shows only when it fails.
fn openssl(args: &[&str], dir: &Path) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (Debian/Ubuntu: `sudo apt-get install openssl`)")?;
    anyhow::ensure!(
        output.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
