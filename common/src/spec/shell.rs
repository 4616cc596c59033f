//! Filling placeholders in a command that runs through `sh -c`, so that each value
//! reaches the program as exactly itself, wherever the placeholder sits: bare,
//! inside single quotes, or inside double quotes. The template is scanned as the
//! shell would scan it (quotes, backslashes, command substitutions), and each value is
//! escaped for the context its placeholder is in. A placeholder whose text the shell
//! would read twice (inside `$(...)`, backquotes or `${...}`) is refused at submit:
//! no escaping made for one reading is right for the next.

use super::trial::{Piece, pieces};

/// How the shell reads the text at a placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    /// Outside quotes (or in a subshell's parentheses).
    Bare,
    /// Inside '...'.
    Single,
    /// Inside "...".
    Double,
    /// Inside $( ... ): the text is parsed again as a command.
    CmdSub,
    /// Inside ` ... `.
    Backquote,
    /// Inside ${ ... }.
    Brace,
    /// Inside ( ... ) of a subshell or of a command substitution.
    Paren,
}

/// The shell's reading state, fed one piece of text at a time.
struct Scanner {
    stack: Vec<Ctx>,
    /// The previous character was an unquoted or double-quoted backslash.
    escaped: bool,
    /// The previous character was a `$` that may open `$(` or `${`.
    dollar: bool,
}

impl Scanner {
    fn new() -> Self {
        Scanner {
            stack: vec![Ctx::Bare],
            escaped: false,
            dollar: false,
        }
    }

    fn top(&self) -> Ctx {
        *self.stack.last().expect("never empty")
    }

    fn feed(&mut self, text: &str) {
        for c in text.chars() {
            let dollar = std::mem::take(&mut self.dollar);
            if std::mem::take(&mut self.escaped) {
                continue;
            }
            match (self.top(), c) {
                (Ctx::Single, '\'') => {
                    self.stack.pop();
                }
                (Ctx::Single, _) => {}
                (_, '\\') => self.escaped = true,
                (Ctx::Double, '"') => {
                    self.stack.pop();
                }
                (_, '$') => self.dollar = true,
                (_, '(') if dollar => self.stack.push(Ctx::CmdSub),
                (_, '{') if dollar => self.stack.push(Ctx::Brace),
                (Ctx::Brace, '}') => {
                    self.stack.pop();
                }
                (Ctx::Backquote, '`') => {
                    self.stack.pop();
                }
                (_, '`') => self.stack.push(Ctx::Backquote),
                (Ctx::Double, _) => {}
                (_, '\'') => self.stack.push(Ctx::Single),
                (_, '"') => self.stack.push(Ctx::Double),
                (_, '(') => self.stack.push(Ctx::Paren),
                (Ctx::CmdSub | Ctx::Paren, ')') => {
                    self.stack.pop();
                }
                _ => {}
            }
        }
    }

    /// The context of a placeholder here, or why none is safe.
    fn placeholder(&self, name: &str) -> Result<Ctx, String> {
        if self.escaped {
            return Err(format!(
                "{{{name}}} follows a backslash; remove it (the value is quoted for you)"
            ));
        }
        if self
            .stack
            .iter()
            .any(|c| matches!(c, Ctx::CmdSub | Ctx::Backquote | Ctx::Brace))
        {
            return Err(format!(
                "{{{name}}} sits inside $(...), `...` or ${{...}}, where the shell reads it twice; \
                 pass it as an argument (\"{{{name}}}\") or read $RIDGELINE_PARAM_{} instead",
                super::trial::param_env_name(name).trim_start_matches("RIDGELINE_PARAM_")
            ));
        }
        Ok(match self.top() {
            Ctx::Single => Ctx::Single,
            Ctx::Double => Ctx::Double,
            _ => Ctx::Bare,
        })
    }
}

/// Escapes `v` for the context its placeholder is in.
fn escape(ctx: Ctx, v: &str) -> String {
    match ctx {
        Ctx::Single => v.replace('\'', r"'\''"),
        Ctx::Double => {
            let mut s = String::with_capacity(v.len());
            for c in v.chars() {
                if matches!(c, '\\' | '$' | '`' | '"') {
                    s.push('\\');
                }
                s.push(c);
            }
            s
        }
        _ => super::trial::shell_quote(v),
    }
}

/// Checks a `sh -c` template: every placeholder sits where a value can be quoted, and
/// every quote is closed.
pub fn check(template: &str) -> Result<(), String> {
    substitute(template, |_| Some(String::new())).map(|_| ())
}

/// Fills a `sh -c` template's placeholders with `value(name)`, each escaped for the
/// quoting context it is in; names without a value are left as `{name}`.
pub fn substitute(
    template: &str,
    value: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut sc = Scanner::new();
    let mut out = String::new();
    for p in pieces(template) {
        match p {
            Piece::Text(t) => {
                sc.feed(t);
                out.push_str(t);
            }
            Piece::Name(n) => {
                let ctx = sc.placeholder(n)?;
                match value(n) {
                    Some(v) => out.push_str(&escape(ctx, &v)),
                    None => {
                        out.push('{');
                        out.push_str(n);
                        out.push('}');
                    }
                }
            }
        }
    }
    match sc.top() {
        Ctx::Single => Err("a single quote (') is never closed".into()),
        Ctx::Double => Err("a double quote (\") is never closed".into()),
        Ctx::Backquote => Err("a backquote (`) is never closed".into()),
        _ => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that broke quoted placeholders (they ran commands or split arguments).
    const HOSTILE: &[&str] = &[
        "$(touch F)",
        "`touch F`",
        "; touch F",
        "a | b",
        "line1\nline2",
        "it's",
        "\"quoted\"",
        "back\\slash",
        "back\\",
        "$HOME",
        "${x:-y}",
        "*",
        "~",
        "  spaces  ",
        "",
        "-n",
        "a\tb",
        "!x",
        "%s",
        "'; touch F; '",
        "\"; touch F; \"",
    ];

    #[test]
    fn every_value_reaches_the_program_as_one_exact_argument_wherever_it_sits() {
        let dir = tempfile::tempdir().unwrap();
        let template = r#"printf '%s\0' "{v}" '{v}' {v} --x={v} "pre{v}post" 'a'{v}"b" "$0""#;
        for v in HOSTILE {
            let cmd = substitute(template, |_| Some((*v).to_owned())).unwrap();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .arg("zero")
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{v:?}: {cmd}: {out:?}");
            let words: Vec<String> = String::from_utf8(out.stdout)
                .unwrap()
                .split_terminator('\0')
                .map(str::to_owned)
                .collect();
            let want = vec![
                v.to_string(),
                v.to_string(),
                v.to_string(),
                format!("--x={v}"),
                format!("pre{v}post"),
                format!("a{v}b"),
                "zero".to_owned(),
            ];
            assert_eq!(words, want, "{v:?} through {cmd}");
            assert!(!dir.path().join("F").exists(), "{v:?} ran a command");
        }
    }

    #[test]
    fn placeholders_the_shell_reads_twice_or_unclosed_quotes_are_refused() {
        for t in [
            "echo $(cat {v})",
            "echo `cat {v}`",
            "echo \"$(cat \"{v}\")\"",
            "echo ${X:-{v}}",
            "echo \\{v}",
            "echo '{v}",
            "echo \"{v}",
        ] {
            assert!(check(t).is_err(), "{t}");
        }
        // Quotes inside the other kind, escaped quotes and subshells are read right.
        assert_eq!(
            substitute(r#"echo 'a"b' \" ( {v} )"#, |_| Some("$x".into())).unwrap(),
            r#"echo 'a"b' \" ( '$x' )"#
        );
        assert!(check("echo $(date) {v} \"$HOME\" '{v}'").is_ok());
    }
}
