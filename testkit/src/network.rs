//! The rehearsal's network: every host (the database, each instance) in its
//! own Linux network namespace with its own address and its own loopback, on
//! one bridge that stands in for the VPC. The load balancer, the AWS API
//! emulator and the clients stay in the machine's own namespace, which the
//! bridge's address (`.1`) joins to the VPC. So, as on EC2, a process bound
//! to an instance's 127.0.0.1 is out of the load balancer's reach.
//!
//! Needs root, or passwordless `sudo` (as a GitHub runner has).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::progress::status;

/// The bridge standing in for the VPC.
const BRIDGE: &str = "ebrehearse0";

/// Prefix of every namespace and veth this module makes (stale ones from an
/// interrupted run are removed before a new run).
const PREFIX: &str = "ebr-";

/// The VPC's /24; `.1` is the machine's own side.
const NETWORK: [u8; 3] = [10, 213, 0];

/// A command run with root rights: as it is when we are root, else through
/// `sudo -n` (never a password prompt).
pub fn privileged(program: &str) -> Command {
    if crate::process::is_root() {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.args(["-n", "--"]).arg(program);
        command
    }
}

/// Sends `signal` (`TERM`, `QUIT`, `KILL`) to `pids` with root rights: the
/// processes of a host may run as root or as another user.
pub fn signal(signal: &str, pids: &[String]) -> anyhow::Result<()> {
    crate::process::run(privileged("kill").arg(format!("-{signal}")).args(pids))
}

/// Runs a privileged command to completion, failing with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = privileged("ip")
        .args(args)
        .output()
        .context("running `ip` (Debian/Ubuntu: `sudo apt-get install iproute2`)")?;
    if !output.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The VPC: a bridge and the hosts on it. Dropping it kills what still runs
/// in its namespaces and removes them, their veths and the bridge.
#[derive(Debug)]
pub struct Vpc {
    /// Namespaces made, in order.
    namespaces: Vec<String>,
}

/// One host on the VPC.
#[derive(Debug, Clone)]
pub struct NetHost {
    /// Its network namespace.
    pub namespace: String,
    /// Its address on the VPC.
    pub address: Ipv4Addr,
}

impl NetHost {
    /// `program` run inside this host's namespace (with root rights; drop
    /// them with `runuser` where a host would).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = privileged("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .arg(program);
        command
    }
}

impl Vpc {
    /// Creates the bridge with the machine's address on it, after removing
    /// what an interrupted run left behind.
    pub fn create() -> anyhow::Result<Vpc> {
        let probe = privileged("ip")
            .args(["netns", "list"])
            .output()
            .context("running `ip netns list`")?;
        if !probe.status.success() {
            bail!(
                "the rehearsal puts each host in a network namespace, which needs root (or \
                 passwordless sudo): {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            );
        }
        for stale in String::from_utf8_lossy(&probe.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| name.starts_with(PREFIX))
        {
            remove_namespace(stale);
        }
        let _ = privileged("ip")
            .args(["link", "del", BRIDGE])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        let vpc = Vpc {
            namespaces: Vec::new(),
        };
        ip(&[
            "addr",
            "add",
            &format!("{}/24", Vpc::gateway()),
            "dev",
            BRIDGE,
        ])?;
        ip(&["link", "set", BRIDGE, "up"])?;
        Ok(vpc)
    }

    /// Gives the machine `address` too, so that a client can send from it:
    /// an Internet client's public address as the load balancer sees it.
    /// Removed with the bridge.
    pub fn add_client_address(&self, address: Ipv4Addr) -> anyhow::Result<()> {
        ip(&["addr", "add", &format!("{address}/32"), "dev", BRIDGE])
    }

    /// The machine's own address on the VPC (the load balancer's side, and
    /// where the AWS API emulator listens for the hosts).
    pub fn gateway() -> Ipv4Addr {
        Ipv4Addr::new(NETWORK[0], NETWORK[1], NETWORK[2], 1)
    }

    /// Adds host `name` at `.octet`, with `hosts` as its `/etc/hosts` (`ip
    /// netns exec` mounts `/etc/netns/<namespace>/hosts` over it).
    pub fn add_host(&mut self, name: &str, octet: u8, hosts: &str) -> anyhow::Result<NetHost> {
        let namespace = format!("{PREFIX}{name}");
        let veth = format!("{PREFIX}{name}");
        let peer = format!("{PREFIX}{name}p");
        anyhow::ensure!(veth.len() <= 14, "host name {name} is too long");
        let address = Ipv4Addr::new(NETWORK[0], NETWORK[1], NETWORK[2], octet);
        ip(&["netns", "add", &namespace])?;
        self.namespaces.push(namespace.clone());
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &namespace])?;
        ip(&["-n", &namespace, "link", "set", &peer, "name", "eth0"])?;
        ip(&[
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
        ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        ip(&["link", "set", &veth, "master", BRIDGE, "up"])?;
        let etc = etc_dir(&namespace);
        write_privileged(&etc.join("hosts"), &format!("127.0.0.1 localhost\n{hosts}"))?;
        status(&format!(
            "host {name}: namespace {namespace}, address {address}"
        ));
        Ok(NetHost { namespace, address })
    }
}

impl Drop for Vpc {
    fn drop(&mut self) {
        for namespace in self.namespaces.iter().rev() {
            remove_namespace(namespace);
        }
        let _ = privileged("ip").args(["link", "del", BRIDGE]).status();
    }
}

/// `/etc/netns/<namespace>`: files there replace `/etc`'s inside it.
fn etc_dir(namespace: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(namespace)
}

/// Kills whatever still runs in `namespace`, then removes it (its veth
/// goes with it) and its `/etc/netns` folder.
fn remove_namespace(namespace: &str) {
    if let Ok(output) = privileged("ip").args(["netns", "pids", namespace]).output() {
        let pids: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !pids.is_empty() {
            let _ = signal("KILL", &pids);
        }
    }
    let _ = privileged("ip").args(["netns", "del", namespace]).status();
    let _ = privileged("rm")
        .args(["-rf", "--"])
        .arg(etc_dir(namespace))
        .status();
}

/// Writes a file as root (the folder is made when missing).
pub fn write_privileged(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    if crate::process::is_root() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    use std::io::Write as _;
    let parent = path.parent().unwrap_or(std::path::Path::new("/"));
    crate::process::run(privileged("mkdir").arg("-p").arg(parent))?;
    let mut child = privileged("tee")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    child
        .stdin
        .take()
        .context("tee's stdin")?
        .write_all(text.as_bytes())?;
    anyhow::ensure!(child.wait()?.success(), "writing {} failed", path.display());
    Ok(())
}
