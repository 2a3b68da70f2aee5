//! Other programs run from tasks and tests: run to completion, found on
//! `PATH`, given a clean environment, stopped with SIGTERM; and the npm
//! packages some of them come from.

use std::io;
use std::path::PathBuf;
use std::process::Command;

use crate::paths::project_root;
use crate::progress::status;

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

/// Removes from `command` each of the `inherited` variables that configure
/// the service.
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

/// Runs a command to completion; a non-zero exit is an error naming it.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let exit = command
        .status()
        .map_err(|error| anyhow::anyhow!("starting {:?}: {error}", command.get_program()))?;
    if !exit.success() {
        anyhow::bail!(
            "{:?} {:?} failed ({exit})",
            command.get_program(),
            command.get_args().collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// The first `program` on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// Installs the npm packages of `package-lock.json` (`npm ci`): the
/// browser tests' drivers, the linters, npm's PostgreSQL 16.
pub fn npm_ci() -> anyhow::Result<()> {
    npm_ci_in(&project_root())
}

/// `npm ci` in `dir`, a package of its own (the TypeScript client).
pub fn npm_ci_in(dir: &std::path::Path) -> anyhow::Result<()> {
    status(&format!(
        "installing npm packages (npm ci) in {}",
        dir.display()
    ));
    let npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status();
    match npm {
        Ok(exit) if exit.success() => Ok(()),
        Ok(exit) => anyhow::bail!("npm ci failed ({exit})"),
        Err(_) => anyhow::bail!(
            "npm was not found: install Node.js 20 or newer with npm (Debian/Ubuntu: `sudo apt-get install nodejs npm`)"
        ),
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
}
