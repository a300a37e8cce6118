//! What `gantry run` needs to know about the working tree it runs on.

use std::path::Path;

/// The commit and branch checked out in a local working tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHead {
    pub sha: String,
    /// `None` on a detached HEAD.
    pub branch: Option<String>,
}

/// The HEAD of the repository containing `dir`, or `None` when `dir` is not in
/// a git repository or HEAD has no commit yet. A local run works without git,
/// so nothing here is an error.
pub fn local_head(dir: &Path) -> Option<LocalHead> {
    let repo = git2::Repository::discover(dir).ok()?;
    let head = repo.head().ok()?;
    let sha = head.peel_to_commit().ok()?.id().to_string();
    let branch = if head.is_branch() {
        head.shorthand().ok().map(String::from)
    } else {
        None
    };
    Some(LocalHead { sha, branch })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_repository_there_is_no_head() {
        let dir = std::env::temp_dir().join(format!("gantry-no-repo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The temp dir is not inside a repository on any sane machine.
        if git2::Repository::discover(&dir).is_err() {
            assert_eq!(local_head(&dir), None);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn head_of_a_new_repository() {
        let dir = std::env::temp_dir().join(format!("gantry-local-head-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let repo = git2::Repository::init(&dir).unwrap();
        assert_eq!(local_head(&dir), None, "no commit yet");
        std::fs::write(dir.join("a"), "a").unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("a")).unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let oid = repo
            .commit(Some("HEAD"), &sig, &sig, "first", &tree, &[])
            .unwrap();
        let head = local_head(&dir).unwrap();
        assert_eq!(head.sha, oid.to_string());
        assert!(head.branch.is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
