//! The shell script a `commands` stage runs.

/// Renders `commands` as a POSIX sh script, meant for `sh -e -c`. Each
/// command is echoed as `+ <command>` before it runs; the echo goes through
/// `printf` with the command single-quoted, so printing it cannot run any
/// part of it.
pub fn render_script(commands: &[String]) -> String {
    let mut script = String::new();
    for command in commands {
        script.push_str("printf '%s\\n' ");
        script.push_str(&single_quote(&format!("+ {command}")));
        script.push('\n');
        script.push_str(command);
        script.push('\n');
    }
    script
}

/// Quotes `text` for sh: inside single quotes nothing is special, and a
/// single quote itself is written as `'\''`.
fn single_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
