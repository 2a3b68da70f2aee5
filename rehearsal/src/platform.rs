//! An Elastic Beanstalk instance of the Amazon Linux 2023 platform, and the
//! platform engine's deployment of a source bundle on it, in the order the
//! documentation gives (platforms-linux-extend.workflow):
//!
//! 1. unzip into the staging folder (`/var/app/staging`), keeping the modes
//!    the zip records; `files:` are written (their `source` taken from a
//!    local fixture, never the network); `commands:` (refused: they run
//!    before the bundle exists, outside this model); prebuild hooks;
//! 2. the bundle's `.platform/nginx` layered over the platform's nginx
//!    configuration (a file of the same name replaces the platform's);
//!    container commands, as root in the staging folder with the
//!    environment properties, leader-only ones first and only on the
//!    leader; predeploy hooks;
//! 3. the proxy is stopped, the app's processes too; staging becomes
//!    `/var/app/current`; the `Procfile`'s `web` process starts as the
//!    unprivileged `webapp` user with `PORT`; nginx starts with the new
//!    configuration; postdeploy hooks.
//!
//! Hooks run in lexicographic order, as root, only if executable. Any step
//! that fails fails the deployment with its output. The instance's files
//! live under a folder of its own (paths written by `files:`, and
//! environment properties naming them, are rooted there); its processes run
//! in its network namespace.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use crate::bundle::DEFAULT_APP_PORT;
use crate::ebextensions::Config;
use testkit::network::{self, NetHost, privileged};
use testkit::progress::status;

/// The unprivileged user Elastic Beanstalk runs the app as.
pub const APP_USER: &str = "webapp";

/// `PATH` on an instance.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The platform's nginx configuration (fixture, with its sources).
const NGINX_CONF: &str = include_str!("../fixtures/eb-al2023-nginx/nginx.conf");
const APPLICATION_CONF: &str =
    include_str!("../fixtures/eb-al2023-nginx/conf.d/elasticbeanstalk/00_application.conf");
const HEALTHD_CONF: &str =
    include_str!("../fixtures/eb-al2023-nginx/conf.d/elasticbeanstalk/healthd.conf");
const HEALTHD_FORMAT: &str =
    include_str!("../fixtures/eb-al2023-nginx/conf.d/healthd_logformat.conf");

/// A bundle as the engine receives it.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The version label.
    pub label: String,
    /// The zip.
    pub path: PathBuf,
}

/// What the rehearsal gives every instance that AWS would: the instance
/// role's credentials and region (here dummy credentials and the AWS API
/// emulator's address), and local copies of what `files:` would download.
#[derive(Debug, Clone, Default)]
pub struct Provided {
    /// Extra environment for every process (stand-ins for the instance
    /// metadata service).
    pub instance_env: BTreeMap<String, String>,
    /// `files:` source URL → local file.
    pub downloads: BTreeMap<String, PathBuf>,
}

/// One instance: a host on the VPC with its own folder.
#[derive(Debug)]
pub struct Instance {
    /// Its name, e.g. `i1`.
    pub name: String,
    /// Its network side.
    pub net: NetHost,
    /// Its root folder.
    root: PathBuf,
    /// Where its step logs go.
    logs: PathBuf,
    /// The running `web` process.
    web: Option<Child>,
    /// The running nginx.
    nginx: Option<Child>,
    /// The version it serves.
    pub version: Option<String>,
}

impl Instance {
    /// An instance with nothing deployed yet.
    pub fn new(name: &str, net: NetHost, root: PathBuf, logs: &Path) -> anyhow::Result<Instance> {
        if root.exists() {
            std::fs::remove_dir_all(&root)
                .with_context(|| format!("removing {}", root.display()))?;
        }
        for dir in [
            "var/app",
            "var/log/nginx/healthd",
            "var/run",
            "var/lib/nginx",
            "etc",
        ] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        std::fs::create_dir_all(logs)?;
        Ok(Instance {
            name: name.to_owned(),
            net,
            root,
            logs: logs.to_path_buf(),
            web: None,
            nginx: None,
            version: None,
        })
    }

    /// A path of the instance's filesystem.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    fn staging(&self) -> PathBuf {
        self.path("/var/app/staging")
    }

    fn current(&self) -> PathBuf {
        self.path("/var/app/current")
    }

    /// Deploys `bundle`: the whole engine sequence. `leader` runs the
    /// leader-only container commands (a deployment's elected instance);
    /// an instance launched by scaling is never the leader.
    pub fn deploy(
        &mut self,
        bundle: &Bundle,
        leader: bool,
        provided: &Provided,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let log = self
            .logs
            .join(format!("{}-{}.log", self.name, bundle.label));
        let mut journal = Journal::new(&log)?;
        let outcome = self.engine(bundle, leader, provided, &mut journal);
        journal.flush()?;
        outcome.with_context(|| {
            format!(
                "deploying {} on {} ({}) failed; its log: {}",
                bundle.label,
                self.name,
                if leader {
                    "the leader"
                } else {
                    "not the leader"
                },
                log.display()
            )
        })?;
        status(&format!(
            "{}: {} deployed{} in {:.1} s",
            self.name,
            bundle.label,
            if leader { " (leader)" } else { "" },
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// The platform engine's sequence for `bundle`, each step written to
    /// `journal`: the initial steps, configure, deploy.
    fn engine(
        &mut self,
        bundle: &Bundle,
        leader: bool,
        provided: &Provided,
        journal: &mut Journal,
    ) -> anyhow::Result<()> {
        // 1. Initial steps.
        let staging = self.staging();
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&bundle.path)?)?;
        zip.extract(&staging)
            .context("unzipping the bundle into /var/app/staging")?;
        journal.step(&format!("extracted {} into /var/app/staging", bundle.label));
        let config = read_config(&staging)?;
        ensure!(
            config.commands.is_empty(),
            "{}: `commands:` run before the bundle is extracted, from /, outside the rehearsal's \
             model; use container_commands",
            config.commands.join(", ")
        );
        self.write_files(&config, provided, journal)?;
        let env = self.environment(&config, provided);
        self.run_hooks(&staging, "hooks/prebuild", &env, journal)?;

        // 2. Configure.
        self.stage_nginx(&staging, &config)?;
        journal.step("copied .platform/nginx over the platform's nginx configuration (staged)");
        for command in config.container_commands_for(leader) {
            self.container_command(&staging, command, &env, journal)?;
        }
        self.run_hooks(&staging, "hooks/predeploy", &env, journal)?;

        // 3. Deploy.
        self.stop_nginx();
        self.stop_app()?;
        let current = self.current();
        if current.exists() {
            std::fs::remove_dir_all(&current)?;
        }
        std::fs::rename(&staging, &current)?;
        journal.step("flipped /var/app/staging to /var/app/current");
        self.start_web(&current, &env)?;
        journal.step(&format!(
            "started the Procfile's web process as {APP_USER} with PORT={}",
            env.get("PORT").map_or("", String::as_str)
        ));
        self.start_nginx()?;
        journal.step("started nginx with the new configuration");
        self.run_hooks(&current, "hooks/postdeploy", &env, journal)?;
        self.version = Some(bundle.label.clone());
        Ok(())
    }

    /// A configuration deployment (platforms-linux-extend.hooks: a change
    /// of environment properties, among others, updates the instances
    /// without a new version): the properties `changed` over the bundle's,
    /// the `confighooks` prebuild and predeploy, the app restarted with
    /// them, then the `confighooks` postdeploy; hooks run in the current
    /// application's folder.
    pub fn configure(
        &mut self,
        changed: &BTreeMap<String, String>,
        provided: &Provided,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let log = self.logs.join(format!("{}-configuration.log", self.name));
        let mut journal = Journal::new(&log)?;
        let outcome = self.reconfigure(changed, provided, &mut journal);
        journal.flush()?;
        outcome.with_context(|| {
            format!(
                "the configuration deployment on {} failed; its log: {}",
                self.name,
                log.display()
            )
        })?;
        status(&format!(
            "{}: configuration deployed ({}) in {:.1} s",
            self.name,
            changed.keys().cloned().collect::<Vec<_>>().join(", "),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    fn reconfigure(
        &mut self,
        changed: &BTreeMap<String, String>,
        provided: &Provided,
        journal: &mut Journal,
    ) -> anyhow::Result<()> {
        let current = self.current();
        let config = read_config(&current)?;
        let mut env = self.environment(&config, provided);
        env.extend(changed.clone());
        journal.step(&format!(
            "environment properties changed: {}",
            changed.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        self.run_hooks(&current, "confighooks/prebuild", &env, journal)?;
        self.run_hooks(&current, "confighooks/predeploy", &env, journal)?;
        self.stop_nginx();
        self.stop_app()?;
        self.start_web(&current, &env)?;
        journal.step("restarted the Procfile's web process with the new properties");
        self.start_nginx()?;
        journal.step("restarted nginx");
        self.run_hooks(&current, "confighooks/postdeploy", &env, journal)
    }

    /// Writes the `files:` entries of `config` into this instance's folder,
    /// `source` ones from the local copies in `provided`, with their modes.
    fn write_files(
        &self,
        config: &Config,
        provided: &Provided,
        journal: &mut Journal,
    ) -> anyhow::Result<()> {
        for file in &config.files {
            let target = self.path(&file.path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match (&file.content, &file.source) {
                (Some(content), _) => std::fs::write(&target, content)?,
                (None, Some(source)) => {
                    let local = provided.downloads.get(source).with_context(|| {
                        format!(
                            "{}: files: {} comes from {source}, for which the rehearsal has no \
                             local copy (it never downloads)",
                            file.file, file.path
                        )
                    })?;
                    std::fs::copy(local, &target)?;
                }
                (None, None) => {}
            }
            if let Some(mode) = &file.mode {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = u32::from_str_radix(mode, 8)
                    .with_context(|| format!("files: {} mode {mode} is not octal", file.path))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
            }
            if let Some((owner, group)) = &file.owner {
                let changed = Command::new("chown")
                    .arg(format!("{owner}:{group}"))
                    .arg(&target)
                    .status()
                    .context("running chown")?;
                ensure!(
                    changed.success(),
                    "files: {} owner {owner}:{group}: chown failed ({changed})",
                    file.path
                );
            }
            journal.step(&format!("files: wrote {} ({})", file.path, file.file));
        }
        Ok(())
    }

    /// The environment every command, hook and process of the app sees:
    /// a plain `PATH`, the environment properties (with `PORT` defaulted
    /// as the platform does, and paths that `files:` wrote rooted in this
    /// instance's folder), and the instance's stand-ins.
    fn environment(&self, config: &Config, provided: &Provided) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("PATH".to_owned(), PATH.to_owned());
        env.insert("HOME".to_owned(), "/root".to_owned());
        for (key, value) in config.environment() {
            let value = if config.files.iter().any(|file| file.path == value) {
                self.path(&value).display().to_string()
            } else {
                value
            };
            env.insert(key, value);
        }
        env.entry("PORT".to_owned())
            .or_insert_with(|| DEFAULT_APP_PORT.to_string());
        env.extend(provided.instance_env.clone());
        env
    }

    fn container_command(
        &self,
        staging: &Path,
        command: &crate::ebextensions::ContainerCommand,
        env: &BTreeMap<String, String>,
        journal: &mut Journal,
    ) -> anyhow::Result<()> {
        let label = format!(
            "container command {} ({}{})",
            command.name,
            command.file,
            if command.leader_only {
                ", leader only"
            } else {
                ""
            }
        );
        let cwd = command
            .cwd
            .as_deref()
            .map_or_else(|| staging.to_path_buf(), |cwd| self.path(cwd));
        let mut env = env.clone();
        env.extend(command.env.clone());
        if let Some(test) = &command.test {
            let tested = self.shell(test, &cwd, &env, journal)?;
            if !tested {
                journal.step(&format!("{label}: skipped, its test failed"));
                return Ok(());
            }
        }
        journal.step(&format!("{label}: {}", command.command));
        let succeeded = self.shell(&command.command, &cwd, &env, journal)?;
        if !succeeded && !command.ignore_errors {
            bail!(
                "{label} failed: `{}`\n{}",
                command.command,
                journal.last_output()
            );
        }
        Ok(())
    }

    /// Runs `line` with `sh -c` as root in the namespace; true when it
    /// exits 0. Its output goes to the journal.
    fn shell(
        &self,
        line: &str,
        cwd: &Path,
        env: &BTreeMap<String, String>,
        journal: &mut Journal,
    ) -> anyhow::Result<bool> {
        let mut command = self.net.command("env");
        command.arg("-i");
        for (key, value) in env {
            command.arg(format!("{key}={value}"));
        }
        command.args(["sh", "-c", line]).current_dir(cwd);
        let output = command
            .output()
            .context("running a command on the instance")?;
        journal.output(&output.stdout, &output.stderr);
        Ok(output.status.success())
    }

    /// Runs the executable files of `.platform/<stage>` under `dir`
    /// (`hooks/postdeploy`, `confighooks/predeploy`, …), in lexicographic
    /// order, as root, from `dir`.
    fn run_hooks(
        &self,
        dir: &Path,
        stage: &str,
        env: &BTreeMap<String, String>,
        journal: &mut Journal,
    ) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let hooks = dir.join(".platform").join(stage);
        let Ok(entries) = std::fs::read_dir(&hooks) else {
            return Ok(());
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        for hook in files {
            let name = hook
                .strip_prefix(dir)
                .unwrap_or(&hook)
                .display()
                .to_string();
            let mode = std::fs::metadata(&hook)?.permissions().mode();
            ensure!(
                mode & 0o111 != 0,
                "{stage} hook {name} is not executable (mode {:o}): Elastic Beanstalk runs hooks by \
                 executing them (\"All files have to have execute permission\"), so the deployment \
                 fails here. Keep the execute bit in the zip, or chmod the hooks in a container \
                 command (those run before predeploy and postdeploy hooks)",
                mode & 0o777
            );
            journal.step(&format!("{stage} hook {name}"));
            let mut command = self.net.command("env");
            command.arg("-i");
            for (key, value) in env {
                command.arg(format!("{key}={value}"));
            }
            let output = command
                .arg(&hook)
                .current_dir(dir)
                .output()
                .with_context(|| format!("running {name}"))?;
            journal.output(&output.stdout, &output.stderr);
            ensure!(
                output.status.success(),
                "{stage} hook {name} failed ({}):\n{}",
                output.status,
                journal.last_output()
            );
        }
        Ok(())
    }

    /// The platform's nginx configuration with the bundle's files over it,
    /// in `/var/proxy/staging/nginx` (promoted at the proxy's start).
    fn stage_nginx(&self, staging: &Path, config: &Config) -> anyhow::Result<()> {
        let root = self.root.display().to_string();
        let port = config
            .environment()
            .get("PORT")
            .cloned()
            .unwrap_or_else(|| DEFAULT_APP_PORT.to_string());
        let nginx = self.path("/var/proxy/staging/nginx");
        if nginx.exists() {
            std::fs::remove_dir_all(&nginx)?;
        }
        std::fs::create_dir_all(nginx.join("conf.d/elasticbeanstalk"))?;
        let host = |text: &str| {
            text.replace("@HOST@", &root)
                .replace("@USER@", &nginx_user())
                .replace("@PORT@", &port)
        };
        std::fs::write(nginx.join("nginx.conf"), host(NGINX_CONF))?;
        std::fs::write(
            nginx.join("conf.d/elasticbeanstalk/00_application.conf"),
            host(APPLICATION_CONF),
        )?;
        std::fs::write(
            nginx.join("conf.d/elasticbeanstalk/healthd.conf"),
            host(HEALTHD_CONF),
        )?;
        std::fs::write(
            nginx.join("conf.d/healthd_logformat.conf"),
            host(HEALTHD_FORMAT),
        )?;
        copy_tree(&staging.join(".platform/nginx"), &nginx)?;
        for dir in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(self.path("/var/lib/nginx").join(dir))?;
        }
        // nginx's workers write buffered bodies and the health log.
        testkit::process::run(
            privileged("chown")
                .args(["-R", &nginx_user()])
                .arg(self.path("/var/lib/nginx"))
                .arg(self.path("/var/log/nginx/healthd")),
        )?;
        Ok(())
    }

    /// Stops the app's processes (SIGTERM, as systemd does), waiting for
    /// them; fails when one exits with an error.
    pub fn stop_app(&mut self) -> anyhow::Result<()> {
        if let Some(mut web) = self.web.take() {
            network::signal("TERM", &[web.id().to_string()])?;
            let exit = web.wait()?;
            ensure!(
                exit.success(),
                "{}: the web process exited with {exit} after SIGTERM",
                self.name
            );
        }
        Ok(())
    }

    fn stop_nginx(&mut self) {
        if let Some(mut nginx) = self.nginx.take() {
            let _ = network::signal("QUIT", &[nginx.id().to_string()]);
            let _ = nginx.wait();
        }
    }

    fn start_web(&mut self, current: &Path, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
        let procfile = std::fs::read_to_string(current.join("Procfile"))
            .context("the bundle has no Procfile")?;
        let web = procfile
            .lines()
            .find_map(|line| line.strip_prefix("web:"))
            .context("the Procfile has no web process")?
            .trim()
            .to_owned();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{}-web.stdout.log", self.name)))?;
        // setpriv execs (runuser would fork and cut the app's graceful
        // shutdown short), so SIGTERM reaches the app itself.
        let mut env = env.clone();
        env.insert("HOME".to_owned(), format!("/home/{APP_USER}"));
        let mut command = self.net.command("setpriv");
        command.args([
            "--reuid",
            APP_USER,
            "--regid",
            APP_USER,
            "--init-groups",
            "--",
            "env",
            "-i",
        ]);
        for (key, value) in &env {
            command.arg(format!("{key}={value}"));
        }
        let child = command
            .args(["sh", "-c", &format!("exec {web}")])
            .current_dir(current)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the web process")?;
        self.web = Some(child);
        Ok(())
    }

    fn start_nginx(&mut self) -> anyhow::Result<()> {
        let staged = self.path("/var/proxy/staging/nginx");
        let live = self.path("/etc/nginx");
        if live.exists() {
            std::fs::remove_dir_all(&live)?;
        }
        copy_tree(&staged, &live)?;
        let conf = live.join("nginx.conf");
        let tested = self
            .net
            .command(nginx_bin())
            .arg("-t")
            .arg("-q")
            .arg("-c")
            .arg(&conf)
            .output()
            .context("running nginx (Debian/Ubuntu: `sudo apt-get install nginx`)")?;
        ensure!(
            tested.status.success(),
            "nginx refused the configuration (the platform's with the bundle's .platform/nginx \
             over it): {}",
            String::from_utf8_lossy(&tested.stderr).trim()
        );
        let child = self
            .net
            .command(nginx_bin())
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        self.nginx = Some(child);
        // nginx is up once it accepts on 80 inside the namespace.
        testkit::wait::wait_until(
            "nginx to listen on port 80 in the instance",
            Duration::from_secs(10),
            || {
                let probe = self
                    .net
                    .command("bash")
                    .args(["-c", "exec 3<>/dev/tcp/127.0.0.1/80"])
                    .stderr(Stdio::null())
                    .status();
                Ok::<_, std::io::Error>(probe.is_ok_and(|exit| exit.success()))
            },
        )?;
        Ok(())
    }

    /// What listens on TCP inside the instance (for failure messages).
    pub fn listening(&self) -> String {
        self.net
            .command("ss")
            .args(["-Hltnp"])
            .output()
            .map(|output| {
                let listening: Vec<String> = String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .map(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        let address = fields.get(3).copied().unwrap_or("?");
                        let process = fields
                            .get(5)
                            .and_then(|users| users.split('"').nth(1))
                            .unwrap_or("?");
                        format!("{address} ({process})")
                    })
                    .collect();
                if listening.is_empty() {
                    "nothing".to_owned()
                } else {
                    listening.join(", ")
                }
            })
            .unwrap_or_default()
    }

    /// Terminates the instance: its processes stop (SIGTERM to the app).
    pub fn terminate(mut self) -> anyhow::Result<()> {
        self.stop_nginx();
        self.stop_app()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop_nginx();
        if let Some(mut web) = self.web.take() {
            let _ = network::signal("KILL", &[web.id().to_string()]);
            let _ = web.wait();
        }
    }
}

/// The `.ebextensions` of an extracted bundle.
fn read_config(staging: &Path) -> anyhow::Result<Config> {
    let dir = staging.join(".ebextensions");
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "config") {
                files.push((
                    path.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    std::fs::read_to_string(&path)?,
                ));
            }
        }
    }
    Config::parse(files)
}

/// Copies `from` over `to`, file by file (same names replace).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    std::fs::create_dir_all(to)?;
    for entry in entries {
        let path = entry?.path();
        let target = to.join(path.file_name().unwrap_or_default());
        if path.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            std::fs::copy(&path, &target)?;
        }
    }
    Ok(())
}

/// Debian installs nginx in /usr/sbin, which a non-root PATH may lack.
pub fn nginx_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        sbin
    } else {
        PathBuf::from("nginx")
    }
}

/// nginx's worker user: the platform's `nginx` where it exists, else
/// Debian's `www-data`.
fn nginx_user() -> String {
    for user in ["nginx", "www-data"] {
        if Command::new("id")
            .arg("-u")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|exit| exit.success())
        {
            return user.to_owned();
        }
    }
    "nobody".to_owned()
}

/// Makes the `webapp` user when the machine lacks it, as the platform's
/// image has it.
pub fn ensure_app_user() -> anyhow::Result<()> {
    let exists = Command::new("id")
        .arg("-u")
        .arg(APP_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|exit| exit.success());
    if !exists {
        status(&format!(
            "adding the system user {APP_USER} (Elastic Beanstalk runs the app as it)"
        ));
        testkit::process::run(privileged("useradd").args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            APP_USER,
        ]))?;
    }
    Ok(())
}

/// A deployment's log: the steps and every command's output, kept to say
/// why a step failed.
struct Journal {
    /// Where it is written.
    path: PathBuf,
    /// Everything so far.
    text: String,
    /// The last command's output.
    last: String,
}

impl Journal {
    fn new(path: &Path) -> anyhow::Result<Journal> {
        Ok(Journal {
            path: path.to_path_buf(),
            text: String::new(),
            last: String::new(),
        })
    }

    fn step(&mut self, line: &str) {
        let _ = writeln!(self.text, "== {line}");
    }

    fn output(&mut self, stdout: &[u8], stderr: &[u8]) {
        let mut last = String::from_utf8_lossy(stdout).into_owned();
        last.push_str(&String::from_utf8_lossy(stderr));
        self.text.push_str(&last);
        self.last = last;
    }

    /// The last command's output, its final lines.
    fn last_output(&self) -> String {
        let lines: Vec<&str> = self.last.lines().collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }

    fn flush(&self) -> anyhow::Result<()> {
        std::fs::write(&self.path, &self.text)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}
