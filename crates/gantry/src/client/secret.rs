//! `gantry secret set|list|rm`: a project's secrets in the server's encrypted store.
//!
//! A value is read from standard input, never from the command line: arguments show in the
//! process list of every user and stay in the shell's history.

use std::io::{BufRead, IsTerminal, Read};

use clap::Subcommand;

use super::api::{Error, path_segment};
use super::{ClientArgs, Ctx, model, render};

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Set a secret, its value read from standard input.
    ///
    /// One trailing newline is dropped, so `echo` works too; an empty value is refused. The value
    /// is never an argument: arguments show in the process list. For example:
    /// `printf %s "$TOKEN" | gantry secret set demo/backend DEPLOY_TOKEN`
    Set {
        /// The project (e.g. demo/backend).
        project: String,
        /// The secret's name, as a stage's `secrets:` lists it (e.g. DEPLOY_TOKEN).
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a project's secrets: names and times, never values.
    List {
        /// The project (e.g. demo/backend).
        project: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a secret.
    Rm {
        /// The project (e.g. demo/backend).
        project: String,
        /// The secret's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn run(command: SecretCommand) -> Result<u8, Error> {
    match command {
        SecretCommand::Set {
            project,
            name,
            client,
        } => {
            let ctx = Ctx::new(client)?;
            let value = read_value(&name)?;
            ctx.api.put(
                &secret_path(&project, &name),
                &serde_json::json!({ "value": value }),
            )?;
            // The server answers 204 without a body: with `--json` there is nothing to print.
            if !ctx.json {
                ctx.out(&format!("secret {name} of {project} set\n"))?;
            }
            Ok(0)
        }
        SecretCommand::List { project, client } => {
            let ctx = Ctx::new(client)?;
            let reply = ctx.api.get(
                &format!("/projects/{}/secrets", path_segment(&project)),
                &[],
            )?;
            ctx.print_or(&reply.body, |list: model::SecretList| {
                render::secrets_table(&project, &list.secrets, &ctx.view)
            })
        }
        SecretCommand::Rm {
            project,
            name,
            client,
        } => {
            let ctx = Ctx::new(client)?;
            ctx.api.delete(&secret_path(&project, &name))?;
            if !ctx.json {
                ctx.out(&format!("secret {name} of {project} removed\n"))?;
            }
            Ok(0)
        }
    }
}

fn secret_path(project: &str, name: &str) -> String {
    format!(
        "/projects/{}/secrets/{}",
        path_segment(project),
        path_segment(name)
    )
}

/// The value from standard input: everything up to its end, or one line from a terminal.
fn read_value(name: &str) -> Result<String, Error> {
    let stdin = std::io::stdin();
    let mut text = String::new();
    let read = if stdin.is_terminal() {
        eprint!("Value of {name} (not shown; end with Enter): ");
        let hidden = HiddenInput::start();
        let read = stdin.lock().read_line(&mut text);
        drop(hidden);
        // The Enter that ended the line was not echoed either.
        eprintln!();
        read
    } else {
        stdin.lock().read_to_string(&mut text)
    };
    read.map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => {
            Error::Usage("the value on standard input is not UTF-8 text".to_owned())
        }
        _ => Error::Usage(format!("cannot read the value from standard input: {e}")),
    })?;
    value_from(text, name)
}

/// Turns the terminal's echo off while a value is typed, and back on when dropped. `stty` does
/// it, so no terminal library (and no unsafe code) is needed; without `stty`, input shows.
struct HiddenInput {
    /// The terminal's settings before, as `stty -g` prints them.
    saved: Option<String>,
}

impl HiddenInput {
    fn start() -> HiddenInput {
        let stty = |args: &[&str]| {
            std::process::Command::new("stty")
                .args(args)
                .stdin(std::process::Stdio::inherit())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|output| output.status.success())
        };
        let saved = stty(&["-g"])
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .filter(|saved| !saved.is_empty() && stty(&["-echo"]).is_some());
        HiddenInput { saved }
    }
}

impl Drop for HiddenInput {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = std::process::Command::new("stty")
                .arg(saved)
                .stdin(std::process::Stdio::inherit())
                .status();
        }
    }
}

/// Drops one trailing newline (what `echo` and an editor add) and refuses an empty value.
fn value_from(mut text: String, name: &str) -> Result<String, Error> {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(Error::Usage(format!(
            "the value of {name} is empty; give it on standard input, e.g. \
             printf %s \"$VALUE\" | gantry secret set PROJECT {name}"
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped() {
        let value = |text: &str| value_from(text.to_owned(), "TOKEN").map_err(|e| e.to_string());
        assert_eq!(value("s3cret\n"), Ok("s3cret".to_owned()));
        assert_eq!(value("s3cret\r\n"), Ok("s3cret".to_owned()));
        assert_eq!(value("s3cret"), Ok("s3cret".to_owned()));
        assert_eq!(value("two\nlines\n\n"), Ok("two\nlines\n".to_owned()));
        assert_eq!(value(" spaced "), Ok(" spaced ".to_owned()));
        let empty = Err(
            "the value of TOKEN is empty; give it on standard input, e.g. printf %s \"$VALUE\" | \
             gantry secret set PROJECT TOKEN"
                .to_owned(),
        );
        assert_eq!(value(""), empty);
        assert_eq!(value("\n"), empty);
    }

    #[test]
    fn names_are_encoded_in_paths() {
        assert_eq!(
            secret_path("demo/backend", "DEPLOY_TOKEN"),
            "/projects/demo%2Fbackend/secrets/DEPLOY_TOKEN"
        );
    }
}
