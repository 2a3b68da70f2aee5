//! `cargo xtask rehearse`: what Elastic Beanstalk does with the bundle on an
//! instance, done here with real programs: unzip, check the platform files,
//! run the leader-only container commands, start the `web` process from the
//! `Procfile` behind real nginx with the bundle's nginx files, run the
//! postdeploy hooks, then a rolling redeploy of two instances under write
//! load. Figures go to `target/rehearse/latest.json`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde_json::Value;

use crate::load::{Load, check_acknowledged, stored_ids};
use crate::postgres::{Cluster, free_port};
use crate::service::{send, target_dir, wait_healthy, without_app_settings};
use crate::{bundle, contract, run, status, step};

/// Writers posting through nginx during the rolling redeploy.
const WRITERS: usize = 4;

/// An app instance started from the `Procfile`.
struct Instance {
    child: Child,
}

impl Instance {
    fn start(
        stage: &Path,
        web: &str,
        env: &[(String, String)],
        port: u16,
        log: &Path,
    ) -> anyhow::Result<Instance> {
        let log = std::fs::File::create(log)?;
        let mut command = Command::new("sh");
        without_app_settings(&mut command);
        let child = command
            .args(["-c", &format!("exec {web}")])
            .current_dir(stage)
            .envs(
                env.iter()
                    .map(|(key, value)| (key.as_str(), value.as_str())),
            )
            .env("PORT", port.to_string())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the web process")?;
        let instance = Instance { child };
        wait_healthy(port, Duration::from_secs(30))?;
        Ok(instance)
    }

    /// SIGTERM, then wait for the exit.
    fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// nginx configured like Elastic Beanstalk's, including the bundle's files.
struct Nginx {
    child: Child,
    dir: PathBuf,
    stage: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(stage: &Path, dir: &Path, upstreams: &[(u16, bool)]) -> anyhow::Result<Nginx> {
        let port = free_port()?;
        write_nginx_config(stage, dir, port, upstreams)?;
        run(Command::new(nginx_bin())
            .args(["-t", "-q", "-c"])
            .arg(dir.join("nginx.conf")))
        .context("nginx rejected the configuration built from the bundle")?;
        let child = Command::new(nginx_bin())
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .spawn()
            .context("starting nginx (Debian/Ubuntu: `sudo apt-get install nginx`)")?;
        let nginx = Nginx {
            child,
            dir: dir.to_path_buf(),
            stage: stage.to_path_buf(),
            port,
        };
        wait_healthy(port, Duration::from_secs(30))?;
        Ok(nginx)
    }

    /// Rewrites the upstream and reloads gracefully.
    fn set_upstreams(&self, upstreams: &[(u16, bool)]) -> anyhow::Result<()> {
        write_nginx_config(&self.stage, &self.dir, self.port, upstreams)?;
        run(Command::new(nginx_bin())
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .args(["-s", "reload"]))?;
        // Let the old worker finish what it holds and the new one take over.
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Writes `nginx.conf`, and the bundle's `conf.d` files with the upstream
/// pointing at the rehearsal's instances (`down` ones marked).
fn write_nginx_config(
    stage: &Path,
    dir: &Path,
    port: u16,
    upstreams: &[(u16, bool)],
) -> anyhow::Result<()> {
    {
        let conf_d = dir.join("conf.d");
        std::fs::create_dir_all(conf_d.join("elasticbeanstalk"))?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        let source = stage.join(".platform/nginx/conf.d");
        let servers: String = upstreams
            .iter()
            .map(|(port, up)| {
                format!(
                    "server 127.0.0.1:{port}{};\n    ",
                    if *up { "" } else { " down" }
                )
            })
            .collect();
        for entry in std::fs::read_dir(&source)? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "conf") {
                let text = std::fs::read_to_string(&path)?;
                ensure!(
                    text.contains("server 127.0.0.1:5000;"),
                    "{} no longer names the app at 127.0.0.1:5000",
                    path.display()
                );
                let text = text.replace("server 127.0.0.1:5000;\n    ", &servers);
                std::fs::write(conf_d.join(path.file_name().unwrap_or_default()), text)?;
            }
        }
        for entry in std::fs::read_dir(source.join("elasticbeanstalk"))? {
            let path = entry?.path();
            std::fs::copy(
                &path,
                conf_d
                    .join("elasticbeanstalk")
                    .join(path.file_name().unwrap_or_default()),
            )?;
        }
        let conf = dir.join("nginx.conf");
        let dir = dir.display();
        let user = if is_root() { "user root;\n" } else { "" };
        let config = format!(
            "# Like Elastic Beanstalk's nginx.conf on Amazon Linux 2023: the bundle's\n\
             # conf.d files at http level, its elasticbeanstalk/ files in the server.\n\
             {user}worker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {dir}/access.log;\n  client_body_temp_path {dir}/tmp/body;\n\
               proxy_temp_path {dir}/tmp/proxy;\n  fastcgi_temp_path {dir}/tmp/fastcgi;\n\
               uwsgi_temp_path {dir}/tmp/uwsgi;\n  scgi_temp_path {dir}/tmp/scgi;\n\
               include {dir}/conf.d/*.conf;\n\
               server {{\n    listen 127.0.0.1:{port};\n    include {dir}/conf.d/elasticbeanstalk/*.conf;\n  }}\n}}\n",
        );
        std::fs::write(conf, config)?;
        Ok(())
    }
}

/// Debian installs nginx in /usr/sbin, which a non-root PATH may lack.
fn nginx_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        sbin
    } else {
        PathBuf::from("nginx")
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Unzips keeping modes, as Elastic Beanstalk does.
fn unzip(bundle: &Path, stage: &Path) -> anyhow::Result<()> {
    if stage.exists() {
        std::fs::remove_dir_all(stage)?;
    }
    let mut zip = zip::ZipArchive::new(std::fs::File::open(bundle)?)?;
    zip.extract(stage).context("unzipping the bundle")?;
    Ok(())
}

/// Every `.ebextensions/*.config` parsed as YAML (PyYAML), by file name.
fn read_ebextensions(stage: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    let python = contract::tools_python()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(stage.join(".ebextensions"))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    files.sort();
    let mut configs = Vec::new();
    for path in files {
        let output = Command::new(&python)
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            ])
            .arg(&path)
            .output()?;
        ensure!(
            output.status.success(),
            "{} is not valid YAML: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let value: Value = serde_json::from_slice(&output.stdout)?;
        let known = [
            "option_settings",
            "container_commands",
            "commands",
            "files",
            "packages",
            "services",
            "Resources",
        ];
        for key in value
            .as_object()
            .context("a config file must be a mapping")?
            .keys()
        {
            ensure!(
                known.contains(&key.as_str()),
                "{}: unknown section {key}",
                path.display()
            );
        }
        configs.push((
            path.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            value,
        ));
    }
    Ok(configs)
}

/// The application environment properties of the option settings.
fn environment(configs: &[(String, Value)]) -> Vec<(String, String)> {
    configs
        .iter()
        .filter_map(|(_, config)| {
            config["option_settings"]["aws:elasticbeanstalk:application:environment"].as_object()
        })
        .flat_map(|properties| properties.iter())
        .map(|(key, value)| {
            (
                key.clone(),
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned),
            )
        })
        .collect()
}

/// Runs the whole rehearsal.
pub fn run_rehearsal() -> anyhow::Result<()> {
    let bundle = bundle::build()?;
    let out = target_dir().join("rehearse");
    std::fs::create_dir_all(&out)?;
    let stage = out.join("stage");

    step("1. unzip the bundle and check its platform files");
    unzip(&bundle, &stage)?;
    let configs = read_ebextensions(&stage)?;
    for hook in [
        "hooks/postdeploy/01_smoke_check.sh",
        "confighooks/postdeploy/01_smoke_check.sh",
    ] {
        run(Command::new("bash")
            .arg("-n")
            .arg(stage.join(".platform").join(hook)))?;
    }
    status(&format!(
        "{} .ebextensions files parse; hooks parse",
        configs.len()
    ));

    step("2. run the leader-only container commands against PostgreSQL");
    let cluster = Cluster::throwaway("rehearse")?;
    cluster.create_database("rehearse")?;
    // Rehearsal only: the local PostgreSQL stands in for RDS, so the RDS
    // lookup and its CA bundle give way to a URL. On Elastic Beanstalk the
    // connection comes from RDS with IAM tokens, never a URL with a password.
    let mut env: Vec<(String, String)> = environment(&configs)
        .into_iter()
        .filter(|(key, _)| key != "APP_RDS__INSTANCE_ID" && key != "APP_DATABASE__SSL_ROOT_CERT")
        .collect();
    env.push(("DATABASE_URL".to_owned(), cluster.url("rehearse")));
    for (file, config) in &configs {
        let Some(files) = config["files"].as_object() else {
            continue;
        };
        for (path, spec) in files {
            let source = spec["source"].as_str().unwrap_or_default();
            ensure!(
                source.starts_with("https://"),
                "{file}: {path} must come from an https source"
            );
            status(&format!(
                "{file}: would place {path} from {source} (not fetched here: no network)"
            ));
        }
    }
    for (file, config) in &configs {
        let Some(commands) = config["container_commands"].as_object() else {
            continue;
        };
        for (name, command) in commands {
            let line = command["command"]
                .as_str()
                .context("a container command without `command`")?;
            status(&format!(
                "{file}: {name}: {line} (leader_only: {})",
                command["leader_only"]
            ));
            run(Command::new("sh")
                .args(["-c", line])
                .current_dir(&stage)
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))))?;
        }
    }

    step("3. start the web process from the Procfile behind nginx");
    let procfile = std::fs::read_to_string(stage.join("Procfile"))?;
    let web = procfile
        .lines()
        .find_map(|line| line.strip_prefix("web:"))
        .context("the Procfile has no web process")?
        .trim()
        .to_owned();
    let ports = [free_port()?, free_port()?];
    let mut instances = vec![
        Some(Instance::start(
            &stage,
            &web,
            &env,
            ports[0],
            &out.join("instance-a.log"),
        )?),
        Some(Instance::start(
            &stage,
            &web,
            &env,
            ports[1],
            &out.join("instance-b.log"),
        )?),
    ];
    let all_up: Vec<(u16, bool)> = ports.iter().map(|port| (*port, true)).collect();
    let nginx = Nginx::start(&stage, &out.join("nginx"), &all_up)?;
    status(&format!(
        "nginx on 127.0.0.1:{} → instances on {} and {}",
        nginx.port, ports[0], ports[1]
    ));

    step("4. postdeploy hooks and the health check through nginx");
    run(
        Command::new(stage.join(".platform/hooks/postdeploy/01_smoke_check.sh"))
            .env("PORT", ports[0].to_string())
            .env("NGINX_URL", format!("http://127.0.0.1:{}", nginx.port)),
    )?;
    let stored = send(
        nginx.port,
        "POST",
        "/data",
        Some(r#"{"notes":"through nginx","greeting":"hello"}"#),
    )?;
    ensure!(
        stored.status == 201,
        "POST through nginx answered {}: {}",
        stored.status,
        stored.body
    );
    let listed = send(nginx.port, "GET", "/data?n=1", None)?;
    ensure!(
        listed.body.contains("through nginx"),
        "GET through nginx did not return the entry: {}",
        listed.body
    );
    let page = send(nginx.port, "GET", "/", None)?;
    ensure!(
        page.status == 200
            && page
                .content_type
                .as_deref()
                .is_some_and(|kind| kind.starts_with("text/html")),
        "the web client is not served through nginx"
    );

    step("5. rolling redeploy of both instances under write load");
    let load = Load::start(nginx.port, WRITERS, "rolling", false);
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    for (index, port) in ports.iter().enumerate() {
        let mut upstreams = all_up.clone();
        upstreams[index].1 = false;
        nginx.set_upstreams(&upstreams)?;
        let old = instances[index].take().context("instance present")?;
        let exit = old.stop()?;
        ensure!(exit.success(), "instance on {port} exited with {exit}");
        instances[index] = Some(Instance::start(
            &stage,
            &web,
            &env,
            *port,
            &out.join(format!("instance-{index}-new.log")),
        )?);
        nginx.set_upstreams(&all_up)?;
        status(&format!("instance on {port} replaced"));
    }
    let rollout = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let outcomes = load.finish();
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|outcome| match &outcome.reply {
            Ok(reply) if reply.status == 201 => None,
            Ok(reply) => Some(format!("{} {}", reply.status, reply.body)),
            Err(error) => Some(error.clone()),
        })
        .collect();
    // Fails when an acknowledged write is missing from the database.
    let acknowledged = check_acknowledged(&outcomes, &stored_ids(&cluster, "rehearse")?)?;
    let figures = serde_json::json!({
        "requests": outcomes.len(),
        "failed_requests": failed.len(),
        "acknowledged_writes": acknowledged,
        "acknowledged_writes_missing": 0,
        "rollout_seconds": rollout.as_secs_f64(),
    });
    std::fs::write(
        out.join("latest.json"),
        serde_json::to_string_pretty(&figures)?,
    )?;
    status(&format!(
        "rolling redeploy: {} requests through nginx in {:.1} s of rollout, failed requests: {}, acknowledged writes: {}, missing from the database: 0",
        outcomes.len(),
        rollout.as_secs_f64(),
        failed.len(),
        acknowledged
    ));
    ensure!(
        failed.is_empty(),
        "failed requests during the rolling redeploy: {:?}",
        &failed[..failed.len().min(5)]
    );
    drop(nginx);
    for instance in instances.into_iter().flatten() {
        instance.stop()?;
    }
    Ok(())
}
