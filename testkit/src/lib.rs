//! Test fixtures shared by `cargo xtask` (its scenarios, the rehearsal, the
//! benchmark) and the api's integration tests, so that each exists once.
//!
//! Only the standard library: the api's tests and xtask both build it
//! without pulling anything in.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives one level below the root")
        .to_path_buf()
}

/// The cargo target folder (`CARGO_TARGET_DIR`, or `target/` in the root).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

/// A port nobody listens on right now.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether this process runs as root (then PostgreSQL runs as `postgres`,
/// and network namespaces need no `sudo`).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Removes the service's settings inherited from the developer's environment
/// (or `.env`), so a child gets exactly the settings it is given: an
/// `APP_DATABASE__URL` there would otherwise beat the test's `DATABASE_URL`.
pub fn without_app_settings(command: &mut Command) -> &mut Command {
    remove_app_settings(command, std::env::vars_os().map(|(name, _)| name))
}

fn remove_app_settings(
    command: &mut Command,
    inherited: impl Iterator<Item = std::ffi::OsString>,
) -> &mut Command {
    for name in inherited {
        let name = name.to_string_lossy();
        if name.starts_with("APP_") || matches!(name.as_ref(), "DATABASE_URL" | "PORT" | "RUST_LOG")
        {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// Sends SIGTERM to process `pid` (as `kill -TERM`: no `unsafe` here);
/// fails when it could not be sent.
pub fn sigterm(pid: u32) -> io::Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -TERM {pid} failed ({status})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_gets_no_app_settings_from_the_environment() {
        let inherited = [
            "APP_DATABASE__URL",
            "DATABASE_URL",
            "PORT",
            "RUST_LOG",
            "HOME",
            "APPLE",
        ];
        let mut command = Command::new("env");
        remove_app_settings(&mut command, inherited.iter().map(Into::into));
        let mut removed: Vec<String> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        removed.sort();
        assert_eq!(
            removed,
            ["APP_DATABASE__URL", "DATABASE_URL", "PORT", "RUST_LOG"]
        );
    }

    #[test]
    fn sigterm_ends_a_child_and_reports_a_missing_one() {
        let mut child = Command::new("sleep").arg("60").spawn().expect("sleep runs");
        sigterm(child.id()).expect("sent");
        let status = child.wait().expect("waits");
        assert!(!status.success(), "{status}");
        assert!(
            sigterm(child.id()).is_err(),
            "a reaped pid cannot be signalled"
        );
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port().expect("a port");
        TcpListener::bind(("127.0.0.1", port)).expect("it is free");
    }
}
