//! Running outside programs: every command is echoed before it runs, and a failure names the
//! command, its exit status and the xtask line that ran it.

use std::ffi::OsStr;
use std::fmt;
use std::panic::Location;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// A command line that remembers how it looks, so errors and echoes can show it.
pub struct Cmd {
    command: Command,
    shown: String,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        let program = program.as_ref();
        Cmd {
            command: Command::new(program),
            shown: quote(program),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.shown.push(' ');
        self.shown.push_str(&quote(arg.as_ref()));
        self.command.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(self, args: I) -> Cmd {
        args.into_iter().fold(self, Cmd::arg)
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Cmd {
        self.command.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Cmd {
        self.command.current_dir(dir);
        self
    }

    /// Echoes the command, runs it with the terminal's stdio and fails unless it exits 0.
    #[track_caller]
    pub fn run(mut self) -> Result<()> {
        let caller = Location::caller();
        eprintln!("$ {self}");
        let status = self
            .command
            .status()
            .with_context(|| self.spawn_failed(caller))?;
        if !status.success() {
            bail!("`{self}` failed ({status}) [xtask: {caller}]");
        }
        Ok(())
    }

    /// Runs the command silently; on failure the error carries its output.
    #[track_caller]
    pub fn run_quiet(self) -> Result<()> {
        self.output().map(drop)
    }

    /// Runs the command silently and returns its stdout; on failure the error carries its output.
    #[track_caller]
    pub fn read(self) -> Result<String> {
        let output = self.output()?;
        String::from_utf8(output.stdout).context("command printed something that is not UTF-8")
    }

    /// Whether the command runs and exits 0; for probes like `docker info`, so it prints nothing.
    pub fn succeeds(mut self) -> bool {
        let status = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        status.is_ok_and(|status| status.success())
    }

    #[track_caller]
    fn output(mut self) -> Result<Output> {
        let caller = Location::caller();
        let output = self
            .command
            .stdin(Stdio::null())
            .output()
            .with_context(|| self.spawn_failed(caller))?;
        if !output.status.success() {
            bail!(
                "`{self}` failed ({}) [xtask: {caller}]\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
            );
        }
        Ok(output)
    }

    fn spawn_failed(&self, caller: &Location) -> String {
        format!("could not start `{self}`; is it installed and on PATH? [xtask: {caller}]")
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The cargo that runs xtask (cargo sets `CARGO`), so nested builds use the same toolchain.
pub fn cargo() -> Cmd {
    Cmd::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `producer | consumer`, failing if either side fails.
#[track_caller]
pub fn pipe(mut producer: Cmd, mut consumer: Cmd) -> Result<()> {
    let caller = Location::caller();
    eprintln!("$ {producer} | {consumer}");
    let mut left = producer
        .command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| producer.spawn_failed(caller))?;
    let stdout = left
        .stdout
        .take()
        .context("the producer's stdout was not captured")?;
    let right = consumer
        .command
        .stdin(stdout)
        .status()
        .with_context(|| consumer.spawn_failed(caller));
    let left = left
        .wait()
        .with_context(|| format!("waiting for `{producer}` [xtask: {caller}]"))?;
    let right = right?;
    for (cmd, status) in [(&producer, left), (&consumer, right)] {
        if !status.success() {
            bail!("`{cmd}` failed ({status}) in `{producer} | {consumer}` [xtask: {caller}]");
        }
    }
    Ok(())
}

/// Quotes an argument the way a shell user would have to type it.
fn quote(arg: &OsStr) -> String {
    let arg = arg.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.into_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_arguments_as_a_shell_would_need_them() {
        let cmd = Cmd::new("docker").args([
            "run",
            "--rm",
            "local/busybox",
            "sh",
            "-c",
            "echo ok",
            "it's",
            "",
        ]);
        assert_eq!(
            cmd.to_string(),
            r"docker run --rm local/busybox sh -c 'echo ok' 'it'\''s' ''"
        );
    }

    #[test]
    fn a_failure_names_the_command_and_its_output() {
        let err = Cmd::new("sh")
            .args(["-c", "echo oops >&2; exit 3"])
            .run_quiet()
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("`sh -c 'echo oops >&2; exit 3'` failed (exit status: 3)"),
            "{message}"
        );
        assert!(
            message.contains("[xtask: crates/xtask/src/cmd.rs:"),
            "{message}"
        );
        assert!(message.ends_with("oops\n"), "{message}");
    }

    #[test]
    fn a_missing_program_says_so() {
        let err = Cmd::new("gantry-no-such-program").run_quiet().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("could not start `gantry-no-such-program`"),
            "{err}"
        );
    }
}
