//! The rehearsal's Application Load Balancer: an HTTP listener on the
//! machine's loopback and one target group whose settings come from the
//! bundle's `aws:elasticbeanstalk:environment:process:default` options.
//!
//! Modelled on the ELBv2 documentation: targets are `instance-address:Port`;
//! a registered target starts `initial` and is health-checked every
//! interval with `GET HealthCheckPath` (success: the matcher's code within
//! the timeout); it turns healthy after `HealthyThresholdCount` successes in
//! a row and unhealthy after `UnhealthyThresholdCount` failures; requests go
//! to healthy targets only, or to every registered target when none is
//! healthy (fail open); a deregistered target drains: no new requests, the
//! ones in flight finish, for at most `DeregistrationDelay`. A target that
//! refuses the connection makes a 502, no registered target a 503. Each
//! request gets `X-Forwarded-For`, `-Proto` and `-Port` as the ALB sets them,
//! and `X-Amzn-Trace-Id` as its request tracing does (a `Root` when the
//! request has none, else a `Self` inserted or updated), which an access
//! log records with the request line, the target and the status.
//! Intervals, timeouts and the delay run on a compressed clock
//! (`time_scale`) so that the rehearsal takes minutes, not tens of them.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher as _, RandomState};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use testkit::progress::status;

/// The target group's settings, with Elastic Beanstalk's defaults for the
/// options the bundle leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupSettings {
    /// `Port`: the instance port traffic and health checks go to.
    pub port: u16,
    /// `HealthCheckPath`.
    pub health_check_path: String,
    /// `HealthCheckInterval`.
    pub interval: Duration,
    /// `HealthCheckTimeout`.
    pub timeout: Duration,
    /// `HealthyThresholdCount`.
    pub healthy_threshold: u32,
    /// `UnhealthyThresholdCount`.
    pub unhealthy_threshold: u32,
    /// `DeregistrationDelay`.
    pub deregistration_delay: Duration,
    /// `MatcherHTTPCode`: the status a healthy target answers.
    pub matcher: u16,
}

/// The namespace holding the default process's options.
pub const PROCESS_NAMESPACE: &str = "aws:elasticbeanstalk:environment:process:default";

impl TargetGroupSettings {
    /// Reads the options of the default process; missing ones take
    /// Elastic Beanstalk's defaults (Port 80, path `/`, every 15 s, 5 s
    /// timeout, 3 to become healthy, 5 to become unhealthy, 20 s delay).
    pub fn from_options(options: &BTreeMap<String, String>) -> anyhow::Result<TargetGroupSettings> {
        let number = |name: &str, default: u64| -> anyhow::Result<u64> {
            options.get(name).map_or(Ok(default), |value| {
                value.trim().parse().with_context(|| {
                    format!("{PROCESS_NAMESPACE} {name} is not a whole number: {value:?}")
                })
            })
        };
        let port = number("Port", 80)?;
        let settings = TargetGroupSettings {
            port: u16::try_from(port).with_context(|| format!("Port {port} is not a TCP port"))?,
            health_check_path: options
                .get("HealthCheckPath")
                .cloned()
                .unwrap_or_else(|| "/".to_owned()),
            interval: Duration::from_secs(number("HealthCheckInterval", 15)?),
            timeout: Duration::from_secs(number("HealthCheckTimeout", 5)?),
            healthy_threshold: u32::try_from(number("HealthyThresholdCount", 3)?)?,
            unhealthy_threshold: u32::try_from(number("UnhealthyThresholdCount", 5)?)?,
            deregistration_delay: Duration::from_secs(number("DeregistrationDelay", 20)?),
            matcher: u16::try_from(number("MatcherHTTPCode", 200)?)?,
        };
        if let Some(protocol) = options.get("Protocol")
            && protocol != "HTTP"
        {
            bail!(
                "{PROCESS_NAMESPACE} Protocol {protocol}: the rehearsal models HTTP targets only"
            );
        }
        Ok(settings)
    }
}

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    /// Registered, not yet through its first health checks.
    Initial,
    /// Passing its health checks.
    Healthy,
    /// Failing them.
    Unhealthy,
    /// Deregistered: finishing the requests it holds.
    Draining,
}

/// A registered instance.
#[derive(Debug)]
struct Target {
    /// Its address on the VPC; checks and requests go to `address:Port`.
    address: Ipv4Addr,
    /// Where it stands in the target group.
    state: TargetState,
    /// Passing health checks in a row.
    successes: u32,
    /// Failing health checks in a row.
    failures: u32,
    /// Why the last health check failed.
    last_failure: Option<String>,
    /// Requests sent to it and not yet answered, which a drain waits out.
    in_flight: Arc<AtomicUsize>,
    /// Requests sent to it.
    served: usize,
}

/// What the load balancer answered, counted.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Counts {
    /// Requests received.
    pub requests: usize,
    /// 502s: a target refused or dropped the connection.
    pub bad_gateway: usize,
    /// 503s: no target registered.
    pub no_target: usize,
}

/// What the listener, the health checkers and the caller share.
#[derive(Debug)]
struct Shared {
    /// The target group's settings, read from the bundle.
    settings: TargetGroupSettings,
    /// The compressed clock: real durations are the settings' × this.
    time_scale: f64,
    /// The registered targets by instance id.
    targets: Mutex<BTreeMap<String, Target>>,
    /// Signalled when a target's state changes.
    changed: Condvar,
    /// Set when the load balancer stops.
    stop: AtomicBool,
    /// What it answered, counted.
    counts: Mutex<Counts>,
    /// The round robin's position.
    next: AtomicUsize,
    /// The newest requests, as an access log records them.
    access_log: Mutex<VecDeque<AccessLogEntry>>,
}

/// Requests the access log keeps (the newest).
const ACCESS_LOG_KEPT: usize = 50_000;

/// One request of the access log: what the ALB's own log has of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// The request line (`POST /data HTTP/1.1`).
    pub request: String,
    /// The `X-Amzn-Trace-Id` sent to the target.
    pub trace_id: String,
    /// The target's address, when one was picked.
    pub target: Option<Ipv4Addr>,
    /// The status answered (the target's, or the load balancer's own).
    pub status: u16,
}

/// The load balancer; stops its threads when dropped.
#[derive(Debug)]
pub struct LoadBalancer {
    shared: Arc<Shared>,
    /// Its listener's port on 127.0.0.1.
    pub port: u16,
    /// The listener's and the health checkers' threads.
    threads: Vec<JoinHandle<()>>,
}

impl LoadBalancer {
    /// Listens on a free port of 127.0.0.1 with `settings`.
    pub fn start(settings: TargetGroupSettings, time_scale: f64) -> anyhow::Result<LoadBalancer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the load balancer")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            settings,
            time_scale,
            targets: Mutex::new(BTreeMap::new()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            counts: Mutex::new(Counts::default()),
            next: AtomicUsize::new(0),
            access_log: Mutex::new(VecDeque::new()),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        Ok(LoadBalancer {
            shared,
            port,
            threads: vec![accept],
        })
    }

    /// The target group's settings.
    pub fn settings(&self) -> &TargetGroupSettings {
        &self.shared.settings
    }

    /// A setting's duration on the compressed clock.
    pub fn scaled(&self, duration: Duration) -> Duration {
        self.shared.scaled(duration)
    }

    /// Registers instance `id` at `address`; health checks start at once.
    pub fn register(&mut self, id: &str, address: Ipv4Addr) {
        self.shared.lock().insert(
            id.to_owned(),
            Target {
                address,
                state: TargetState::Initial,
                successes: 0,
                failures: 0,
                last_failure: None,
                in_flight: Arc::new(AtomicUsize::new(0)),
                served: 0,
            },
        );
        let shared = Arc::clone(&self.shared);
        let id = id.to_owned();
        self.threads
            .push(std::thread::spawn(move || health_checks(&shared, &id)));
    }

    /// Waits until `id` is healthy; fails early once it is unhealthy, or at
    /// `within`, with what its health checks saw.
    pub fn wait_healthy(&self, id: &str, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut targets = self.shared.lock();
        loop {
            let target = targets
                .get(id)
                .with_context(|| format!("{id} is not registered"))?;
            match target.state {
                TargetState::Healthy => return Ok(()),
                TargetState::Unhealthy => {
                    bail!(self.health_failure(id, target, "turned unhealthy"));
                }
                TargetState::Draining => bail!("{id} is draining"),
                TargetState::Initial if started.elapsed() >= within => {
                    bail!(self.health_failure(
                        id,
                        target,
                        &format!("was not healthy within {within:?}")
                    ));
                }
                TargetState::Initial => {}
            }
            targets = self
                .shared
                .changed
                .wait_timeout(targets, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn health_failure(&self, id: &str, target: &Target, what: &str) -> String {
        let settings = &self.shared.settings;
        format!(
            "target {id} ({}:{}) {what}: the load balancer's health check GET {} answered: {}. \
             The target port is {PROCESS_NAMESPACE} Port (Elastic Beanstalk's default 80, where \
             the platform's nginx listens and proxies to the app on 127.0.0.1:$PORT)",
            target.address,
            settings.port,
            settings.health_check_path,
            target.last_failure.as_deref().unwrap_or("nothing yet"),
        )
    }

    /// Deregisters `id`: no new requests; waits until the ones it holds
    /// finish or the deregistration delay ends, then forgets it. Returns
    /// how long draining took and how many requests were still in flight
    /// when the delay ended (cut off, as the ALB cuts them).
    pub fn deregister(&self, id: &str) -> (Duration, usize) {
        let started = Instant::now();
        let in_flight = {
            let mut targets = self.shared.lock();
            let Some(target) = targets.get_mut(id) else {
                return (Duration::ZERO, 0);
            };
            target.state = TargetState::Draining;
            Arc::clone(&target.in_flight)
        };
        self.shared.changed.notify_all();
        let delay = self.scaled(self.shared.settings.deregistration_delay);
        while in_flight.load(Ordering::SeqCst) > 0 && started.elapsed() < delay {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.shared.lock().remove(id);
        self.shared.changed.notify_all();
        (started.elapsed(), in_flight.load(Ordering::SeqCst))
    }

    /// Each target's state and the requests it was sent.
    pub fn targets(&self) -> Vec<(String, TargetState, usize)> {
        self.shared
            .lock()
            .iter()
            .map(|(id, target)| (id.clone(), target.state, target.served))
            .collect()
    }

    /// The access log: the newest requests, oldest first.
    pub fn access_log(&self) -> Vec<AccessLogEntry> {
        self.shared
            .access_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// What the load balancer answered itself.
    pub fn counts(&self) -> Counts {
        *self
            .shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Target>> {
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn scaled(&self, duration: Duration) -> Duration {
        duration.mul_f64(self.time_scale)
    }

    fn count(&self, update: impl FnOnce(&mut Counts)) {
        update(&mut self.counts.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// A target for the next request: the healthy ones in turn, or, when
    /// none is healthy, every registered one that is not draining.
    fn pick(&self) -> Option<(Ipv4Addr, Arc<AtomicUsize>)> {
        let mut targets = self.lock();
        let healthy: Vec<&String> = targets
            .iter()
            .filter(|(_, target)| target.state == TargetState::Healthy)
            .map(|(id, _)| id)
            .collect();
        let candidates: Vec<String> = if healthy.is_empty() {
            targets
                .iter()
                .filter(|(_, target)| target.state != TargetState::Draining)
                .map(|(id, _)| id.clone())
                .collect()
        } else {
            healthy.into_iter().cloned().collect()
        };
        if candidates.is_empty() {
            return None;
        }
        let id = &candidates[self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()];
        let target = targets.get_mut(id)?;
        target.served += 1;
        target.in_flight.fetch_add(1, Ordering::SeqCst);
        Some((target.address, Arc::clone(&target.in_flight)))
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, peer)) => {
                let shared = Arc::clone(shared);
                std::thread::spawn(move || {
                    let _ = forward(client, peer, &shared);
                });
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// One request: read it, pick a target, send it there with the forwarding
/// headers and `Connection: close`, and relay the answer.
fn forward(mut client: TcpStream, peer: SocketAddr, shared: &Shared) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let Some((head, body)) = read_request(&mut client)? else {
        return Ok(());
    };
    shared.count(|counts| counts.requests += 1);
    let trace_id = trace_header(&head);
    let request_line = head.split("\r\n").next().unwrap_or_default().to_owned();
    let logged = |target: Option<Ipv4Addr>, status: u16| {
        let mut log = shared
            .access_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if log.len() == ACCESS_LOG_KEPT {
            log.pop_front();
        }
        log.push_back(AccessLogEntry {
            request: request_line.clone(),
            trace_id: trace_id.clone(),
            target,
            status,
        });
    };
    let Some((address, in_flight)) = shared.pick() else {
        shared.count(|counts| counts.no_target += 1);
        logged(None, 503);
        return client.write_all(&plain(503, "Service Unavailable"));
    };
    let answered = relay(
        &Forwarded {
            head: &head,
            body: &body,
            peer,
            trace_id: &trace_id,
        },
        address,
        shared.settings.port,
        &mut client,
    );
    in_flight.fetch_sub(1, Ordering::SeqCst);
    match answered {
        Ok(status) => logged(Some(address), status),
        Err(_) => {
            shared.count(|counts| counts.bad_gateway += 1);
            logged(Some(address), 502);
            let _ = client.write_all(&plain(502, "Bad Gateway"));
        }
    }
    Ok(())
}

/// The `X-Amzn-Trace-Id` the ALB sends on: the request's with a fresh
/// `Self` when it has a `Root` (an earlier `Self` replaced), else a new
/// `Root` (`1-{epoch seconds, 8 hex}-{24 hex}`).
fn trace_header(head: &str) -> String {
    let fresh = || {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let random = RandomState::new();
        format!(
            "1-{:08x}-{:08x}{:016x}",
            seconds & 0xffff_ffff,
            random.hash_one(1_u8) & 0xffff_ffff,
            random.hash_one(2_u8)
        )
    };
    let given = head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("x-amzn-trace-id")
            .then(|| value.trim().to_owned())
    });
    match given {
        Some(given)
            if given
                .split(';')
                .any(|field| field.trim().starts_with("Root=")) =>
        {
            let kept: Vec<&str> = given
                .split(';')
                .map(str::trim)
                .filter(|field| !field.starts_with("Self="))
                .collect();
            format!("Self={};{}", fresh(), kept.join(";"))
        }
        _ => format!("Root={}", fresh()),
    }
}

/// What goes to the target: the client's request, its address and the
/// trace header.
struct Forwarded<'a> {
    head: &'a str,
    body: &'a [u8],
    peer: SocketAddr,
    trace_id: &'a str,
}

/// Sends the request to the target with the forwarding headers and relays
/// the answer; its status.
fn relay(
    forwarded: &Forwarded<'_>,
    address: Ipv4Addr,
    port: u16,
    client: &mut TcpStream,
) -> std::io::Result<u16> {
    let mut upstream =
        TcpStream::connect_timeout(&SocketAddr::from((address, port)), Duration::from_secs(10))?;
    upstream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut lines = forwarded.head.split("\r\n");
    let mut request = format!("{}\r\n", lines.next().unwrap_or_default());
    let mut forwarded_for = None;
    for line in lines.filter(|line| !line.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = line
                .split_once(':')
                .map(|(_, value)| value.trim().to_owned());
        } else if !(name.eq_ignore_ascii_case("connection")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-port")
            || name.eq_ignore_ascii_case("x-amzn-trace-id"))
        {
            request.push_str(line);
            request.push_str("\r\n");
        }
    }
    let client_ip = forwarded.peer.ip();
    let forwarded_for = match forwarded_for {
        Some(earlier) => format!("{earlier}, {client_ip}"),
        None => client_ip.to_string(),
    };
    request.push_str(&format!(
        "x-forwarded-for: {forwarded_for}\r\nx-forwarded-proto: http\r\nx-forwarded-port: 80\r\nx-amzn-trace-id: {}\r\nconnection: close\r\n\r\n",
        forwarded.trace_id
    ));
    upstream.write_all(request.as_bytes())?;
    upstream.write_all(forwarded.body)?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    if answer.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the target closed the connection without answering",
        ));
    }
    client.write_all(&answer)?;
    // `HTTP/1.1 201 Created`: the status is the second word.
    Ok(String::from_utf8_lossy(&answer[..answer.len().min(32)])
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0))
}

/// Reads a request head and its `Content-Length` body; `None` when the
/// client closed without sending one.
fn read_request(client: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    let end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        let read = client.read(&mut chunk)?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
        if buffer.len() > 64 * 1024 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buffer[end + 4..].to_vec();
    while body.len() < length {
        let read = client.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Ok(Some((head, body)))
}

fn plain(status: u16, reason: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}",
        reason.len()
    )
    .into_bytes()
}

/// Health checks of one target until it is deregistered.
fn health_checks(shared: &Shared, id: &str) {
    let settings = &shared.settings;
    loop {
        let address = {
            let targets = shared.lock();
            match targets.get(id) {
                Some(target) if target.state != TargetState::Draining => target.address,
                _ => return,
            }
        };
        let outcome = check(
            address,
            settings.port,
            &settings.health_check_path,
            settings.matcher,
            shared.scaled(settings.timeout),
        );
        {
            let mut targets = shared.lock();
            let Some(target) = targets.get_mut(id) else {
                return;
            };
            if target.state == TargetState::Draining {
                return;
            }
            let before = target.state;
            match outcome {
                Ok(()) => {
                    target.successes += 1;
                    target.failures = 0;
                    if target.successes >= settings.healthy_threshold {
                        target.state = TargetState::Healthy;
                    }
                }
                Err(why) => {
                    target.failures += 1;
                    target.successes = 0;
                    target.last_failure = Some(why);
                    if target.failures >= settings.unhealthy_threshold {
                        target.state = TargetState::Unhealthy;
                    }
                }
            }
            if target.state != before {
                status(&format!(
                    "load balancer: target {id} ({address}:{}) {before:?} -> {:?}",
                    settings.port, target.state
                ));
            }
        }
        shared.changed.notify_all();
        let wait = shared.scaled(settings.interval);
        let started = Instant::now();
        while started.elapsed() < wait {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20).min(wait));
        }
    }
}

/// One health check: `GET path` answered with `matcher` within `timeout`.
fn check(
    address: Ipv4Addr,
    port: u16,
    path: &str,
    matcher: u16,
    timeout: Duration,
) -> Result<(), String> {
    let target = SocketAddr::from((address, port));
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|error| format!("connecting to {target}: {error}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|error| error.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {address}\r\nuser-agent: ELB-HealthChecker/2.0\r\nconnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|error| format!("sending to {target}: {error}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|error| format!("reading from {target}: {error}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status: Option<u16> = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok());
    match status {
        Some(code) if code == matcher => Ok(()),
        Some(code) => Err(format!("{target} answered {code}, not {matcher}")),
        None => Err(format!("{target} sent no HTTP answer")),
    }
}
