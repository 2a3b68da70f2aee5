//! The Elastic Beanstalk rehearsal: the bundle deployed on the local model
//! of Elastic Beanstalk, its load balancer and RDS (this crate's library),
//! so that what would fail on AWS fails here, naming the cause.
//!
//! The scenario: an environment created from scratch (two instances, the
//! last deployed elected leader); a flood over the write limit; a new
//! version (the bundle re-zipped without file modes, as another tool may
//! zip it) rolled out with an additional batch under write load, an old
//! instance elected leader; an instance added by scaling; a
//! configuration-only update. No request may fail, no acknowledged write
//! may be lost, no instance may serve before its migrations ran, and the
//! flood must leave enhanced health Green. Figures go to
//! `target/rehearse/latest.json`.
//!
//! It needs root (network namespaces, the `webapp` user), nginx, PostgreSQL
//! 16, moto and the bundle: `cargo xtask rehearse` builds the bundle and
//! runs this test with it (`REHEARSAL_BUNDLE`), so no test runs cargo.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use domain::NewDataRequest;

use rehearsal::alb::{LoadBalancer, PROCESS_NAMESPACE, TargetGroupSettings};
use rehearsal::bundle;
use rehearsal::health::{GREEN_AT_MOST, HEALTH_NAMESPACE, Rules, Tally};
use rehearsal::platform::{self, Bundle, Instance, Provided};
use rehearsal::rds::Rds;
use testkit::http::{Reply, call, local, send, send_over, send_over_with};
use testkit::load::{Load, check_acknowledged, stored_ids};
use testkit::moto::Moto;
use testkit::network::Vpc;
use testkit::paths::target_dir;
use testkit::progress::{status, step};

/// Longest a request line may take to reach an app's log: the log is
/// written in batches, at most 20 ms apart; the rest is slack for a busy
/// machine.
const LOG_LAG: Duration = Duration::from_secs(5);

/// Writers posting through the load balancer during the rollout.
const WRITERS: usize = 4;

/// Longest the writers may take to have their first writes acknowledged.
const WRITES_WITHIN: Duration = Duration::from_secs(30);

/// The load balancer's clock runs this much faster than AWS's: a 10 s
/// health check interval takes 1 s here, a 20 s deregistration delay 2 s.
const TIME_SCALE: f64 = 0.1;

/// Where the RDS CA bundle comes from (`.ebextensions/06-rds-ca.config`);
/// the rehearsal's stand-in CA is placed instead.
const RDS_CA_URL: &str = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem";

/// The environment being rehearsed: its instances and what they share.
struct Environment<'a> {
    /// The network: a host per instance, RDS's and the clients' addresses.
    vpc: &'a mut Vpc,
    /// The load balancer in front of the instances.
    lb: LoadBalancer,
    /// What AWS would give every instance (credentials, downloads).
    provided: Provided,
    /// The `/etc/hosts` line that resolves RDS's endpoint on an instance.
    hosts: String,
    /// The running instances by name (`i1`, `i2`, …).
    instances: BTreeMap<String, Instance>,
    /// The last octet of the next instance's address.
    next_octet: u8,
    /// Where the instances' file trees go ([`hosts_root`]).
    root: PathBuf,
    /// Where the instances' step and process logs go.
    logs: PathBuf,
    /// How long a target may take to pass its first health check.
    health_wait: Duration,
    /// The database, to check its schema before an instance serves.
    rds: &'a Rds,
    /// The migrations the bundle's binary holds (the repository's).
    migrations: Vec<i64>,
    /// Which answers count against enhanced health (the bundle's rules).
    health_rules: Rules,
}

impl Environment<'_> {
    /// What the instances' healthd logs hold since `since` (Unix seconds).
    fn health_since(&self, since: f64) -> anyhow::Result<Tally> {
        let mut tally = Tally::default();
        for instance in self.instances.values() {
            tally.add_folder(
                &instance.path("/var/log/nginx/healthd"),
                since,
                self.health_rules,
            )?;
        }
        Ok(tally)
    }
}

impl Environment<'_> {
    /// Launches an instance (a new host) and deploys `bundle` on it.
    fn launch(&mut self, bundle: &Bundle, leader: bool) -> anyhow::Result<String> {
        let name = format!("i{}", self.next_octet - 100);
        let net = self.vpc.add_host(&name, self.next_octet, &self.hosts)?;
        self.next_octet += 1;
        let mut instance = Instance::new(&name, net, self.root.join(&name), &self.logs)?;
        deploy(&mut instance, bundle, leader, &self.provided)?;
        self.instances.insert(name.clone(), instance);
        Ok(name)
    }

    /// Registers an instance with the load balancer and waits until it
    /// passes its health check, saying what the instance listens on if not.
    /// First it checks that the database already has every migration the
    /// instance's binary holds: a version must never serve on a schema
    /// older than its own, whichever instance Elastic Beanstalk elected.
    fn attach(&mut self, name: &str) -> anyhow::Result<()> {
        let applied = self.rds.cluster.query(
            &self.rds.database,
            "SELECT coalesce(string_agg(version::text, ' '), '') FROM notes_app._sqlx_migrations \
             WHERE success",
        );
        let applied: Vec<i64> = applied
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|version| version.parse().ok())
            .collect();
        let missing: Vec<i64> = self
            .migrations
            .iter()
            .filter(|version| !applied.contains(version))
            .copied()
            .collect();
        ensure!(
            missing.is_empty(),
            "{name} would serve before the database has the migrations its binary holds \
             (missing {missing:?}): every instance must migrate before its app starts, whichever \
             one Elastic Beanstalk elects as the leader (.ebextensions/05-migrate.config)"
        );
        let instance = &self.instances[name];
        self.lb.register(name, instance.net.address);
        self.lb
            .wait_healthy(name, self.health_wait)
            .map_err(|error| anyhow::anyhow!("{error:#}\n{}", diagnose(instance)))
    }

    /// Deregisters (drains) an instance; returns the drain's figures.
    fn detach(&mut self, name: &str) -> serde_json::Value {
        let (took, cut_off) = self.lb.deregister(name);
        status(&format!(
            "load balancer: {name} drained in {:.2} s ({cut_off} requests still in flight at the delay's end)",
            took.as_secs_f64()
        ));
        serde_json::json!({ "instance": name, "seconds": took.as_secs_f64(), "cut_off": cut_off })
    }
}

/// Deploys, adding what the instance listens on to a failure.
fn deploy(
    instance: &mut Instance,
    bundle: &Bundle,
    leader: bool,
    provided: &Provided,
) -> anyhow::Result<()> {
    instance
        .deploy(bundle, leader, provided)
        .map_err(|error| anyhow::anyhow!("{error:#}\n{}", diagnose(instance)))
}

/// What an instance listens on, and the end of its app's log.
fn diagnose(instance: &Instance) -> String {
    format!(
        "On {} these listen: {}. The web process's log ends:\n{}",
        instance.name,
        instance.listening(),
        Some(testkit::api_server::tail(
            &target_dir()
                .join("rehearse/logs")
                .join(format!("{}-web.stdout.log", instance.name)),
            8
        ))
        .filter(|tail| !tail.is_empty())
        .unwrap_or_else(|| "(nothing: the web process never started)".to_owned())
    )
}

/// The metrics file `.ebextensions/09-metrics.config` creates for the app,
/// on each of `names` after its old version stopped: that version's last
/// report is there, valid Embedded Metric Format, counting the writes it
/// answered under the rollout's load.
fn read_the_metrics(environment: &Environment<'_>, names: &[&String]) -> anyhow::Result<()> {
    for name in names {
        let instance = &environment.instances[name.as_str()];
        let path = instance.path(METRICS_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{name}: no metrics file at {METRICS_FILE} ({}): the app could not write the file \
                 .ebextensions creates for it",
                path.display()
            )
        })?;
        let mut writes = 0.0;
        // The line .ebextensions writes first has no `_aws`: no EMF.
        for line in text.lines().filter(|line| line.contains("\"_aws\"")) {
            let metrics = testkit::emf::parse(line)
                .map_err(|error| anyhow::anyhow!("{name}: {METRICS_FILE}: {error}: {line}"))?;
            writes += metrics
                .iter()
                .filter(|metric| {
                    metric.name == "Requests" && metric.dimension("Route") == Some("POST /data")
                })
                .flat_map(|metric| metric.values.iter())
                .sum::<f64>();
        }
        ensure!(
            writes > 0.0,
            "{name}: the {} lines of {METRICS_FILE} count no POST /data, though the old version \
             answered writes until it stopped:\n{text}",
            text.lines().count()
        );
        status(&format!(
            "{name}: the old version's last metrics report ({METRICS_FILE}) is valid EMF and counts {writes} POST /data"
        ));
    }
    Ok(())
}

/// Where the app writes its metrics on an instance.
const METRICS_FILE: &str = "/var/log/notes-eb/metrics.log";

/// Follows the newest stored write from the load balancer's access log to
/// the app's log: the `Root` of the `X-Amzn-Trace-Id` the load balancer
/// sent, as 32 hex digits, is the `trace_id` of the app's request line.
/// The app writes its log in batches (`api/src/telemetry/writer.rs`, at most
/// 20 ms behind), so the line is looked for until [`LOG_LAG`] passes, as a
/// log shipper would pick it up later.
fn follow_a_request(lb: &LoadBalancer) -> anyhow::Result<()> {
    let entry = lb
        .access_log()
        .into_iter()
        .rev()
        .find(|entry| entry.request.starts_with("POST /data ") && entry.status == 201)
        .context("the load balancer's access log holds no POST /data answered 201")?;
    let root = entry
        .trace_id
        .split(';')
        .find_map(|field| field.trim().strip_prefix("Root=1-"))
        .with_context(|| format!("the access log's trace id has no Root: {}", entry.trace_id))?;
    let trace = root.replace('-', "");
    let logs = target_dir().join("rehearse/logs");
    let mut lines = 0;
    let mut found = None;
    let waited = testkit::wait::wait_until(
        "the POST's request line in the apps' logs",
        LOG_LAG,
        || -> anyhow::Result<bool> {
            (lines, found) = request_line(&logs, &trace)?;
            Ok(found.is_some())
        },
    );
    match (waited, found) {
        (Ok(after), Some(file)) => {
            status(&format!(
                "followed POST /data from the load balancer's log (X-Amzn-Trace-Id {}) to \
                 {file}'s request line (trace_id {trace}), written {after:?} after the answer \
                 was read",
                entry.trace_id
            ));
            Ok(())
        }
        _ => anyhow::bail!(
            "the load balancer logged POST /data with X-Amzn-Trace-Id {}, but within {LOG_LAG:?} \
             none of the {lines} lines of the apps' logs is its request line with trace_id {trace}",
            entry.trace_id
        ),
    }
}

/// How many lines the apps' logs under `logs` hold, and the name of the
/// one that holds the request line with `trace`, if any does.
fn request_line(logs: &Path, trace: &str) -> anyhow::Result<(usize, Option<String>)> {
    let mut lines = 0;
    for file in std::fs::read_dir(logs).with_context(|| format!("reading {}", logs.display()))? {
        let path = file?.path();
        if !path.to_string_lossy().ends_with("-web.stdout.log") {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            lines += 1;
            let Ok(line) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if line["trace_id"] == trace
                && line["message"] == "request"
                && line["path"] == "/data"
                && line["status"] == 201
            {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                return Ok((lines, Some(name.into_owned())));
            }
        }
    }
    Ok((lines, None))
}

/// The versions of the repository's migrations, which the bundle's binary
/// embeds (`migrations/<version>_<name>.sql`).
fn bundled_migrations() -> anyhow::Result<Vec<i64>> {
    let folder = testkit::paths::project_root().join("migrations");
    let mut versions = Vec::new();
    for entry in
        std::fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))?
    {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some((version, _)) = name
            .strip_suffix(".sql")
            .and_then(|stem| stem.split_once('_'))
        {
            versions.push(
                version
                    .parse()
                    .with_context(|| format!("the version of {name}"))?,
            );
        }
    }
    ensure!(!versions.is_empty(), "no migration in {}", folder.display());
    Ok(versions)
}

/// Where the instances' file trees go (each instance's `/var/app`, `/etc`,
/// …): under the system's temporary folder, which every user may enter,
/// because the app runs as `webapp` and must reach its files, and the
/// target folder may sit in a home only root can enter (`/root/…`).
fn hosts_root() -> PathBuf {
    std::env::temp_dir().join("ebrehearse-hosts")
}

/// Named `elastic_beanstalk::…`, so that the Rust part of `cargo xtask
/// test`, which includes ignored tests, can leave it to a part of its own.
mod elastic_beanstalk {
    use super::*;

    #[test]
    #[ignore = "needs root, nginx, PostgreSQL 16, moto and the bundle: `cargo xtask rehearse` builds the bundle and runs this"]
    fn the_bundle_deploys_rolls_out_under_load_and_scales_out_without_a_failed_request_or_a_lost_write()
    -> anyhow::Result<()> {
        // A Ctrl-C stops the instances' processes (same process group),
        // which fails the step under way; the test itself stays to tear the
        // network namespaces and the bridge down.
        ctrlc::set_handler(|| {}).context("installing the Ctrl-C handler")?;
        let built = PathBuf::from(std::env::var_os("REHEARSAL_BUNDLE").context(
            "REHEARSAL_BUNDLE names no bundle: `cargo xtask rehearse` builds one and runs this test with it",
        )?);
        rehearse(&built)
    }
}

/// Runs the whole rehearsal on the bundle at `built`.
fn rehearse(built: &Path) -> anyhow::Result<()> {
    let out = target_dir().join("rehearse");
    std::fs::create_dir_all(&out)?;
    let logs = out.join("logs");
    if logs.exists() {
        std::fs::remove_dir_all(&logs)?;
    }
    std::fs::create_dir_all(&logs)?;
    let label = built.file_stem().map_or_else(
        || "v1".to_owned(),
        |stem| stem.to_string_lossy().into_owned(),
    );
    let v1 = Bundle {
        label: format!("{label}-v1"),
        path: built.to_path_buf(),
    };
    let entries = bundle::entries(built)?;
    let v2 = Bundle {
        label: format!("{label}-v2-no-modes"),
        path: without_modes(&entries, &out.join("bundle-without-modes.zip"))?,
    };
    let config = bundle::config(&entries)?;
    let settings = TargetGroupSettings::from_options(&config.namespace(PROCESS_NAMESPACE))?;
    status(&format!(
        "target group from the bundle: port {}, GET {} every {:?} (timeout {:?}), healthy after {}, \
         unhealthy after {}, deregistration delay {:?}; clock ×{TIME_SCALE}",
        settings.port,
        settings.health_check_path,
        settings.interval,
        settings.timeout,
        settings.healthy_threshold,
        settings.unhealthy_threshold,
        settings.deregistration_delay
    ));

    step("the VPC: a bridge, and a network namespace per host");
    platform::ensure_app_user()?;
    let mut vpc = Vpc::create()?;
    let moto = Moto::start_at(Vpc::gateway())?;
    let certificates = testkit::tls::make_in(&out.join("tls"))?;
    let api = extract_api(&entries, &out)?;
    let rds = Rds::start(&mut vpc, &moto, &api, &certificates, &out)?;
    let provided = Provided {
        instance_env: [
            ("AWS_ENDPOINT_URL", moto.url()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect(),
        downloads: [(RDS_CA_URL.to_owned(), certificates.ca.clone())]
            .into_iter()
            .collect(),
    };
    let lb = LoadBalancer::start(settings, TIME_SCALE)?;
    let health_wait =
        lb.scaled(lb.settings().interval * 4 + lb.settings().timeout * 2) + Duration::from_secs(5);
    let mut environment = Environment {
        vpc: &mut vpc,
        lb,
        provided,
        hosts: rds.hosts_line(),
        instances: BTreeMap::new(),
        next_octet: 101,
        root: hosts_root(),
        logs,
        health_wait,
        rds: &rds,
        migrations: bundled_migrations()?,
        health_rules: Rules::from_config_document(
            config.option(HEALTH_NAMESPACE, "ConfigDocument"),
        )?,
    };
    let figures = scenario(&mut environment, &rds, &moto, &v1, &v2)?;
    std::fs::write(
        out.join("latest.json"),
        serde_json::to_string_pretty(&figures)?,
    )?;
    for (_, instance) in std::mem::take(&mut environment.instances) {
        instance.terminate()?;
    }
    Ok(())
}

fn scenario(
    environment: &mut Environment<'_>,
    rds: &Rds,
    moto: &Moto,
    v1: &Bundle,
    v2: &Bundle,
) -> anyhow::Result<serde_json::Value> {
    // Elastic Beanstalk elects a leader for leader-only commands without
    // saying which instance, nor that it goes first: here it is the one that
    // deploys last, each instance registering once deployed.
    step(
        "1. a new environment: two instances, each behind the load balancer once deployed; the second elected leader",
    );
    let started = Instant::now();
    let first = environment.launch(v1, false)?;
    environment.attach(&first)?;
    let second = environment.launch(v1, true)?;
    environment.attach(&second)?;
    let created = started.elapsed();
    let port = environment.lb.port;
    let api = local(port);
    let entry = NewDataRequest {
        notes: "through the load balancer".to_owned(),
        greeting: "hello".to_owned(),
    };
    let key = client::idempotency_key();
    let stored = call(&api.create_entry(&entry, Some(&key)))?
        .1
        .map_err(|failure| anyhow::anyhow!("POST through the load balancer answered {failure}"))?;
    let listed = call(&api.list_entries(Some(1), None))?.1;
    ensure!(
        listed
            .as_ref()
            .is_ok_and(|list| list.items.iter().any(|item| item.id == stored.record.id)),
        "GET through the load balancer did not return the entry: {listed:?}"
    );
    follow_a_request(&environment.lb)?;
    let page = send(port, "GET", "/", None)?;
    ensure!(
        page.status == 200
            && page
                .content_type
                .as_deref()
                .is_some_and(|kind| kind.starts_with("text/html")),
        "the web client is not served through the load balancer"
    );
    status(&format!(
        "environment created in {:.1} s: {first} and {second} healthy; POST, GET and the web client answer through the load balancer",
        created.as_secs_f64()
    ));

    let write_limit = write_limit(environment)?;

    // From here on the instances may not read the master secret: a later
    // leader's bootstrap must find the app role ready and leave it alone.
    rds.withdraw_master_secret(moto)?;
    status(
        "the master secret withdrawn from the instances (docs/deploy.md's step after the first deploy)",
    );

    step(
        "2. a new version rolled out with an additional batch, one instance at a time, under write load",
    );
    let load = Load::start(port, WRITERS, "rolling", false);
    load.wait_for_acknowledged(20, WRITES_WITHIN)?;
    let rollout = Instant::now();
    // The leader this time: an instance of the old version, which gets the
    // new one last but one.
    let extra = environment.launch(v2, false)?;
    environment.attach(&extra)?;
    let mut drains = Vec::new();
    for old in [&first, &second] {
        drains.push(environment.detach(old));
        let instance = environment
            .instances
            .get_mut(old.as_str())
            .context("instance present")?;
        deploy(instance, v2, *old == second, &environment.provided)?;
        environment.attach(old)?;
    }
    drains.push(environment.detach(&extra));
    environment
        .instances
        .remove(&extra)
        .context("the additional batch")?
        .terminate()?;
    let rolled = rollout.elapsed();
    status(&format!(
        "rolled out {} in {:.1} s; the additional batch ({extra}) terminated",
        v2.label,
        rolled.as_secs_f64()
    ));

    read_the_metrics(environment, &[&first, &second])?;

    step("3. scaling out: a new instance deploys the current version without leader-only commands");
    let scaled = environment.launch(v2, false)?;
    environment.attach(&scaled)?;
    let served_before = served(&environment.lb, &scaled);
    testkit::wait::wait_until(
        &format!("the scaled-out instance {scaled} to receive traffic"),
        Duration::from_secs(20),
        || Ok::<_, std::io::Error>(served(&environment.lb, &scaled) >= served_before + 5),
    )?;
    let outcomes = load.finish();

    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|outcome| match &outcome.reply {
            Ok(reply) if reply.status == 201 => None,
            Ok(reply) => Some(format!("{} {}", reply.status, reply.body)),
            Err(error) => Some(error.clone()),
        })
        .collect();
    let acknowledged = check_acknowledged(
        &outcomes,
        &stored_ids(&rds.cluster, &rds.database, "notes_app.data")?,
    )?;
    let counts = environment.lb.counts();
    status(&format!(
        "rollout and scaling under load: {} requests through the load balancer, {} failed, {acknowledged} \
         writes acknowledged, 0 of them missing from the database; the load balancer answered {} 502s and {} 503s",
        outcomes.len(),
        failed.len(),
        counts.bad_gateway,
        counts.no_target
    ));
    ensure!(
        failed.is_empty(),
        "{} requests failed during the rollout: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    let configured = configuration_update(environment)?;
    Ok(serde_json::json!({
        "environment_created_seconds": created.as_secs_f64(),
        "write_limit": write_limit,
        "rollout_seconds": rolled.as_secs_f64(),
        "requests": outcomes.len(),
        "failed_requests": failed.len(),
        "acknowledged_writes": acknowledged,
        "acknowledged_writes_missing": 0,
        "load_balancer": counts,
        "drains": drains,
        "configuration_update": configured,
        "time_scale": TIME_SCALE,
        "targets": environment
            .lb
            .targets()
            .into_iter()
            .map(|(id, state, served)| serde_json::json!({ "id": id, "state": format!("{state:?}"), "served": served }))
            .collect::<Vec<_>>(),
    }))
}

/// A configuration-only update (an environment property changed), one
/// instance at a time out of the load balancer: its configuration hooks
/// run (the smoke check, by a path relative to its own) and it serves
/// again with the new property.
fn configuration_update(environment: &mut Environment<'_>) -> anyhow::Result<serde_json::Value> {
    step("4. a configuration-only update: an environment property changed, instance by instance");
    let changed: BTreeMap<String, String> = [(
        "APP_LOG__FILTER".to_owned(),
        "info,sqlx=warn,api=debug".to_owned(),
    )]
    .into_iter()
    .collect();
    let names: Vec<String> = environment.instances.keys().cloned().collect();
    for name in &names {
        environment.detach(name);
        let instance = environment
            .instances
            .get_mut(name.as_str())
            .context("instance present")?;
        instance
            .configure(&changed, &environment.provided)
            .map_err(|error| anyhow::anyhow!("{error:#}\n{}", diagnose(instance)))?;
        environment.attach(name)?;
    }
    let listed = call(&local(environment.lb.port).list_entries(Some(1), None))?.1;
    ensure!(
        listed.is_ok(),
        "after the configuration update GET /data answered {listed:?}"
    );
    status(&format!(
        "configuration deployed on {} instances; each ran its configuration hooks and serves again",
        names.len()
    ));
    Ok(serde_json::json!({ "instances": names.len() }))
}

/// Two Internet clients (public addresses, as the load balancer sees
/// them) write at once: one far over the bundle's per-client write limit,
/// forging `X-Forwarded-For` to pass for someone else, which must get 429
/// problems with `Retry-After` once its burst is spent, the other at a few
/// writes a second, which must not get a single one.
/// Every other request of the rehearsal comes from the machine itself,
/// inside the VPC, which the limit leaves alone.
fn write_limit(environment: &Environment<'_>) -> anyhow::Result<serde_json::Value> {
    step(
        "1b. abuse: a client over the write limit, forging X-Forwarded-For, gets 429s; another client at the same time does not",
    );
    let port = environment.lb.port;
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let (flood, polite) = (FLOOD_CLIENT, POLITE_CLIENT);
    environment.vpc.add_client_address(flood)?;
    environment.vpc.add_client_address(polite)?;
    let body = r#"{"notes":"rate","greeting":"limited"}"#;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = std::thread::spawn({
        let stop = std::sync::Arc::clone(&stop);
        move || {
            // It forges X-Forwarded-For: an address inside the VPC (which
            // the limit leaves alone), loopback, and the polite client's
            // (to spend that one's allowance). The load balancer appends
            // the real source; nginx must take that one.
            let forged = ["10.0.0.99", "127.0.0.1", &polite.to_string()].map(str::to_owned);
            let mut replies = Vec::new();
            let mut turn = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let pretend = &forged[turn % forged.len()];
                turn += 1;
                replies.push(send_from_as(
                    flood,
                    pretend,
                    port,
                    "POST",
                    "/data",
                    Some(body),
                ));
            }
            replies
        }
    });
    let mut polite_statuses = Vec::new();
    for _ in 0..10 {
        let reply = send_from(polite, port, "POST", "/data", Some(body))
            .context("the polite client's write")?;
        polite_statuses.push(reply.status);
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flood_replies: Vec<Reply> = flooding
        .join()
        .map_err(|_| anyhow::anyhow!("the flooding client panicked"))?
        .into_iter()
        .collect::<std::io::Result<_>>()
        .context("the flooding client's writes")?;
    let limited: Vec<&Reply> = flood_replies
        .iter()
        .filter(|reply| reply.status == 429)
        .collect();
    let stored = flood_replies
        .iter()
        .filter(|reply| reply.status == 201)
        .count();
    ensure!(
        !limited.is_empty(),
        "{} writes in a row from {flood} through the load balancer were all let through \
         ({stored} stored): the bundle's nginx does not limit writes per client (limit_req on \
         the client address restored from X-Forwarded-For: .platform/nginx/conf.d/proxy.conf)",
        flood_replies.len()
    );
    for reply in &limited {
        ensure!(
            reply.retry_after.is_some()
                && reply.content_type.as_deref() == Some("application/problem+json")
                && reply.body.contains("/problems/too-many-requests"),
            "a 429 must be a problem document with Retry-After, got {:?} {:?}: {}",
            reply.content_type,
            reply.retry_after,
            reply.body
        );
    }
    ensure!(
        flood_replies
            .iter()
            .all(|reply| matches!(reply.status, 201 | 429)),
        "the flooding client got answers other than 201 and 429: {:?}",
        flood_replies
            .iter()
            .map(|reply| reply.status)
            .collect::<Vec<_>>()
    );
    ensure!(
        polite_statuses.iter().all(|&status| status == 201),
        "a client writing a few times a second from {polite} was refused while {flood} flooded: \
         {polite_statuses:?} (the limit must be per client address, not shared)"
    );
    status(&format!(
        "{flood}: {} writes in a row, {stored} stored, {} answered 429 with Retry-After; \
         {polite} at the same time: {} writes, all stored",
        flood_replies.len(),
        limited.len(),
        polite_statuses.len()
    ));
    // A deploy waits for Green: the flood's 429s must not count against it.
    let health = environment.health_since(since)?;
    ensure!(
        health.is_green(),
        "enhanced health during the flood: {} of {} requests count as failed ({} were 4xx), over \
         the {:.0} % the model calls Green; a deploy would wait for Green and roll back. \
         Application 4xx count unless the ConfigDocument's \
         Rules.Environment.Application.ApplicationRequests4xx is off \
         (.ebextensions/08-alarms-metrics.config)",
        health.failures,
        health.requests,
        health.client_errors,
        GREEN_AT_MOST * 100.0
    );
    status(&format!(
        "enhanced health over the flood: Green ({} requests logged by nginx, {} of them 4xx, {} counted as failed)",
        health.requests, health.client_errors, health.failures
    ));
    Ok(serde_json::json!({
        "flood_writes": flood_replies.len(),
        "flood_stored": stored,
        "flood_429": limited.len(),
        "polite_writes": polite_statuses.len(),
        "polite_refused": 0,
        "health_requests": health.requests,
        "health_4xx": health.client_errors,
        "health_failures": health.failures,
    }))
}

/// Public addresses (TEST-NET-2 and -3, RFC 5737) for the two clients.
const FLOOD_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const POLITE_CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// One request to the load balancer from `source`, claiming in its own
/// `X-Forwarded-For` to come from `pretend`.
fn send_from_as(
    source: Ipv4Addr,
    pretend: &str,
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<Reply> {
    let headers = [("x-forwarded-for", pretend)];
    send_over_with(connect_from(source, port)?, method, path, &headers, body)
}

/// One request to the load balancer, sent from `source`.
fn send_from(
    source: Ipv4Addr,
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<Reply> {
    send_over(connect_from(source, port)?, method, path, body)
}

/// A connection to the load balancer's `port` from the address `source`.
fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())?;
    Ok(socket.into())
}

/// Requests the load balancer has sent to `id`.
fn served(lb: &LoadBalancer, id: &str) -> usize {
    lb.targets()
        .into_iter()
        .find(|(target, _, _)| target == id)
        .map_or(0, |(_, _, served)| served)
}

/// The bundle's own `api` binary, written out to run `api db provision` as
/// the deploy's first step does.
fn extract_api(entries: &[bundle::Entry], out: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = out.join("api-from-bundle");
    std::fs::write(&path, bundle::binary(entries)?)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// The bundle's `entries` re-zipped without their execute bits, as a zip
/// made by another tool (CodePipeline's artifact) may be: every file is 0644.
fn without_modes(entries: &[bundle::Entry], to: &Path) -> anyhow::Result<PathBuf> {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(to)?);
    for entry in entries {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o644);
        zip.start_file(entry.name.as_str(), options)?;
        zip.write_all(&entry.bytes)?;
    }
    zip.finish()?;
    Ok(to.to_path_buf())
}
