//! A small command-line parser: xtask has few options, and clap would double its build time.

use anyhow::{Result, bail};

pub struct Args(Vec<String>);

impl Args {
    pub fn new(args: impl IntoIterator<Item = String>) -> Args {
        Args(args.into_iter().collect())
    }

    /// Takes the first argument if it is a word rather than an option.
    pub fn subcommand(&mut self) -> Option<String> {
        let first = self.0.first()?;
        if first.starts_with('-') && !matches!(first.as_str(), "-h" | "--help") {
            return None;
        }
        Some(self.0.remove(0))
    }

    /// Takes `--name VALUE` or `--name=VALUE`.
    pub fn value(&mut self, name: &str) -> Result<Option<String>> {
        let with_equals = format!("{name}=");
        let Some(at) = self
            .0
            .iter()
            .position(|arg| arg == name || arg.starts_with(&with_equals))
        else {
            return Ok(None);
        };
        let arg = self.0.remove(at);
        if let Some(value) = arg.strip_prefix(&with_equals) {
            return Ok(Some(value.to_owned()));
        }
        if at == self.0.len() {
            bail!("{name} needs a value");
        }
        Ok(Some(self.0.remove(at)))
    }

    /// Takes `--name` if present.
    pub fn flag(&mut self, name: &str) -> bool {
        let found = self.0.iter().position(|arg| arg == name);
        found.map(|at| self.0.remove(at)).is_some()
    }

    /// Takes every remaining argument, to pass on to another program.
    pub fn rest(self) -> Vec<String> {
        self.0
    }

    /// Fails on whatever was not taken.
    pub fn finish(self) -> Result<()> {
        if !self.0.is_empty() {
            bail!(
                "unexpected argument(s): {}; see `cargo xtask help`",
                self.0.join(" ")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Args {
        Args::new(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn subcommands_then_values() {
        let mut a = args("bench run --iterations 5");
        assert_eq!(a.subcommand().as_deref(), Some("bench"));
        assert_eq!(a.subcommand().as_deref(), Some("run"));
        assert_eq!(a.value("--iterations").unwrap().as_deref(), Some("5"));
        assert_eq!(a.subcommand(), None);
        a.finish().unwrap();
    }

    #[test]
    fn values_with_equals_and_leftovers() {
        let mut a = args("--tag-suffix=-test --verbose");
        assert_eq!(a.subcommand(), None);
        assert_eq!(a.value("--tag-suffix").unwrap().as_deref(), Some("-test"));
        assert_eq!(a.value("--iterations").unwrap(), None);
        assert_eq!(
            a.finish().unwrap_err().to_string(),
            "unexpected argument(s): --verbose; see `cargo xtask help`"
        );
    }

    #[test]
    fn flags_are_taken_once() {
        let mut a = args("image --debug");
        assert_eq!(a.subcommand().as_deref(), Some("image"));
        assert!(a.flag("--debug"));
        assert!(!a.flag("--debug"));
        a.finish().unwrap();
    }

    #[test]
    fn a_value_must_follow_its_option() {
        assert_eq!(
            args("--iterations")
                .value("--iterations")
                .unwrap_err()
                .to_string(),
            "--iterations needs a value"
        );
    }
}
