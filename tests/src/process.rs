//! What the server harnesses share: running their commands, free ports, and whether
//! the tests run as root (the servers then run as their package's system user).

use std::net::TcpListener;
use std::process::{Command, Output};

/// A command that could not start or that failed: what it was for, and why (its exit
/// status and output).
#[derive(Debug)]
pub(crate) struct CommandFailed {
    pub what: String,
    pub detail: String,
}

/// Runs `command` to its end; its output, or why it failed.
pub(crate) fn run(what: &str, command: &mut Command) -> Result<Output, CommandFailed> {
    let output = command.output().map_err(|e| CommandFailed {
        what: what.to_owned(),
        detail: format!("cannot start {:?}: {e}", command.get_program()),
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(CommandFailed {
            what: what.to_owned(),
            detail: format!(
                "{}\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
