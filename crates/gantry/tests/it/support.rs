//! Running the real binary in a scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(pipeline: &str) -> Project {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(".gantry.yml"), pipeline).expect("write pipeline");
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, contents: &str) -> &Project {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, contents).expect("write");
        self
    }

    pub fn gantry(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(gantry_bin());
        cmd.args(args)
            .current_dir(self.path())
            .env_remove("GANTRY_LOG");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.gantry(args).output().expect("run gantry"))
    }
}

pub fn gantry_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gantry"))
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The summary table's row for a stage, with runs of spaces collapsed.
    pub fn row(&self, stage: &str) -> String {
        let summary = self
            .stdout
            .rsplit_once("STAGE ")
            .map(|(_, s)| s)
            .unwrap_or("");
        summary
            .lines()
            .find(|l| l.split_whitespace().next() == Some(stage))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no summary row for {stage} in:\n{}", self.stdout))
    }

    pub fn lines_of(&self, stage: &str) -> Vec<String> {
        self.stdout
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.split_once(" | ")?;
                (name.trim() == stage).then(|| rest.to_string())
            })
            .collect()
    }

    pub fn debug(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub use gantry_testkit::docker_available;

/// Names of containers, networks or volumes that carry a label.
pub fn docker_objects(kind: &str, label: &str) -> Vec<String> {
    let args: Vec<&str> = match kind {
        "container" => vec!["ps", "-a", "--filter", label, "--format", "{{.Names}}"],
        "network" => vec!["network", "ls", "--filter", label, "--format", "{{.Name}}"],
        "volume" => vec!["volume", "ls", "--filter", label, "--format", "{{.Name}}"],
        _ => panic!("unknown kind {kind}"),
    };
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .filter(|l| !l.is_empty())
        .collect()
}
