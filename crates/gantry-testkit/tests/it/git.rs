use gantry_testkit::FixtureRepo;

#[test]
fn commits_branches_and_tags() {
    let repo = FixtureRepo::new();
    repo.write("dir/a.txt", "a\n");
    let first = repo.commit("First");
    assert_eq!(first.len(), 40);
    assert_eq!(repo.rev_parse("main"), first);

    repo.branch("feature");
    repo.checkout("feature");
    repo.write("b.txt", "b\n");
    let second = repo.commit("Second");
    assert_eq!(repo.rev_parse("feature"), second);
    assert_eq!(repo.rev_parse("main"), first);

    repo.tag("v1");
    assert_eq!(repo.rev_parse("v1"), second);
    let tag = repo.tag_annotated("v2", "Release");
    assert_ne!(tag, second);
    assert_eq!(repo.rev_parse("v2^{commit}"), second);

    repo.remove("b.txt");
    let third = repo.commit("Drop b");
    repo.reset_hard(&second);
    assert_eq!(repo.rev_parse("HEAD"), second);
    assert_ne!(third, second);
    assert_eq!(
        repo.git(["log", "--format=%an <%ae>", "-1"]),
        "Ada Tester <ada@example.com>\n"
    );
    assert!(repo.file_url().starts_with("file:///"));
}
