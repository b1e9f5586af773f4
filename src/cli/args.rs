//! The one argument parser of every subcommand, on lexopt: `--opt value` and `--opt=value`,
//! `-h`/`--help` on every command, `--` ends the options (what follows are operands, never
//! options — a prompt starting with `--` stays a prompt), and an unknown option or a missing
//! value is named in the error.

use std::collections::{BTreeMap, BTreeSet};

/// One option of a command.
pub enum Opt {
    /// `--name VALUE`.
    Value {
        name: &'static str,
        value: &'static str,
        help: &'static str,
    },
    /// `--name`.
    Flag {
        name: &'static str,
        help: &'static str,
    },
}

impl Opt {
    fn name(&self) -> &'static str {
        match self {
            Opt::Value { name, .. } | Opt::Flag { name, .. } => name,
        }
    }
}

/// What a command takes.
pub struct Command {
    /// As typed after `polydev`, e.g. `credentials set`.
    pub name: &'static str,
    pub summary: &'static str,
    pub options: &'static [Opt],
    /// Operands after `--` (`"COMMAND [ARGS...]"`), or `None` when it takes none.
    pub operands: Option<&'static str>,
    /// Extra text under the options.
    pub notes: &'static str,
}

/// A parsed command line.
#[derive(Debug, Default)]
pub struct Parsed {
    values: BTreeMap<&'static str, String>,
    flags: BTreeSet<&'static str>,
    pub operands: Vec<String>,
}

impl Parsed {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(name)
    }
}

/// What the command line asks for.
pub enum Outcome {
    Run(Parsed),
    /// `--help`: print this and exit 0.
    Help(String),
}

/// Parse `args` (after the command's own words) for `command`. An error is the message to
/// print before the usage, exit code 2.
pub fn parse(command: &Command, args: &[String]) -> Result<Outcome, String> {
    use lexopt::Arg;
    let mut parser = lexopt::Parser::from_args(args.iter().map(String::as_str));
    let mut parsed = Parsed::default();
    loop {
        if let Some(operands) = take_operands(&mut parser, command) {
            parsed.operands = operands;
            break;
        }
        let arg = parser.next().map_err(|e| e.to_string())?;
        match arg {
            None => break,
            Some(Arg::Short('h')) | Some(Arg::Long("help")) => {
                return Ok(Outcome::Help(usage(command)));
            }
            Some(Arg::Long(name)) => {
                let Some(option) = command.options.iter().find(|o| o.name() == name) else {
                    let hint = if name == "value" {
                        " (the value is read from stdin, never from the command line)"
                    } else {
                        ""
                    };
                    return Err(format!("unknown option --{name}{hint}"));
                };
                match option {
                    Opt::Flag { name, .. } => {
                        if parser.optional_value().is_some() {
                            return Err(format!("--{name} takes no value"));
                        }
                        parsed.flags.insert(name);
                    }
                    Opt::Value { name, value, .. } => {
                        let missing = || format!("--{name} needs a value ({value})");
                        // `--opt=value` takes anything; `--opt value` not another option.
                        let given = match parser.optional_value() {
                            Some(attached) => attached,
                            None => {
                                let next_is_option = parser
                                    .try_raw_args()
                                    .and_then(|raw| {
                                        raw.peek().map(|a| {
                                            a.to_string_lossy().starts_with('-') && a.len() > 1
                                        })
                                    })
                                    .unwrap_or(false);
                                if next_is_option {
                                    return Err(missing());
                                }
                                parser.value().map_err(|_| missing())?
                            }
                        };
                        let given = given
                            .into_string()
                            .map_err(|_| format!("--{name}: the value is not UTF-8 text"))?;
                        parsed.values.insert(name, given);
                    }
                }
            }
            Some(Arg::Short(letter)) => return Err(format!("unknown option -{letter}")),
            Some(Arg::Value(value)) => {
                let value = value.to_string_lossy().into_owned();
                return Err(match command.operands {
                    Some(operands) => {
                        format!("unexpected {value:?}: put {operands} after `--`")
                    }
                    None => format!("unexpected argument {value:?}"),
                });
            }
        }
    }
    Ok(Outcome::Run(parsed))
}

/// After `--`, the rest of the line, verbatim.
fn take_operands(parser: &mut lexopt::Parser, command: &Command) -> Option<Vec<String>> {
    command.operands?;
    let mut raw = parser.try_raw_args()?;
    if raw.peek()? != "--" {
        return None;
    }
    raw.next();
    Some(raw.map(|arg| arg.to_string_lossy().into_owned()).collect())
}

/// The command's usage text.
pub fn usage(command: &Command) -> String {
    let mut synopsis = format!("usage: polydev {}", command.name);
    if !command.options.is_empty() {
        synopsis.push_str(" [OPTIONS]");
    }
    if let Some(operands) = command.operands {
        synopsis.push_str(&format!(" -- {operands}"));
    }
    let mut out = format!("{synopsis}\n\n{}\n", command.summary);
    if !command.options.is_empty() {
        out.push_str("\nOptions:\n");
        for option in command.options {
            let (left, help) = match option {
                Opt::Value { name, value, help } => (format!("--{name} {value}"), *help),
                Opt::Flag { name, help } => (format!("--{name}"), *help),
            };
            let mut lines = help.lines();
            out.push_str(&format!(
                "  {left:<24} {}\n",
                lines.next().unwrap_or_default()
            ));
            for more in lines {
                out.push_str(&format!("  {:<24} {more}\n", ""));
            }
        }
        out.push_str(&format!("  {:<24} {}\n", "-h, --help", "this text"));
    }
    if !command.notes.is_empty() {
        out.push('\n');
        out.push_str(command.notes);
        if !command.notes.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: Command = Command {
        name: "demo",
        summary: "A demo.",
        options: &[
            Opt::Value {
                name: "provider",
                value: "P",
                help: "which provider",
            },
            Opt::Flag {
                name: "debug",
                help: "say more",
            },
        ],
        operands: Some("COMMAND [ARGS...]"),
        notes: "",
    };

    fn args(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| s.to_string()).collect()
    }

    fn run(text: &[&str]) -> Parsed {
        match parse(&DEMO, &args(text)).unwrap() {
            Outcome::Run(parsed) => parsed,
            Outcome::Help(_) => panic!("help"),
        }
    }

    #[test]
    fn both_value_forms_flags_and_operands() {
        let parsed = run(&["--provider=openai", "--debug", "--", "codex", "--version"]);
        assert_eq!(parsed.get("provider"), Some("openai"));
        assert!(parsed.flag("debug"));
        assert_eq!(parsed.operands, args(&["codex", "--version"]));
        let parsed = run(&[
            "--provider",
            "google",
            "--",
            "gemini",
            "-p",
            "--dangerously-skip-permissions",
        ]);
        assert_eq!(parsed.get("provider"), Some("google"));
        assert_eq!(parsed.operands[2], "--dangerously-skip-permissions");
    }

    #[test]
    fn help_and_errors_name_what_was_wrong() {
        assert!(
            matches!(parse(&DEMO, &args(&["--help"])), Ok(Outcome::Help(text)) if text.contains("--provider P"))
        );
        assert!(matches!(parse(&DEMO, &args(&["-h"])), Ok(Outcome::Help(_))));
        let err = |text: &[&str]| parse(&DEMO, &args(text)).err().unwrap();
        assert!(err(&["--bogus"]).contains("--bogus"));
        assert!(err(&["--provider"]).contains("needs a value"));
        assert!(err(&["--debug=yes"]).contains("takes no value"));
        assert!(err(&["codex"]).contains("after `--`"));
        assert!(err(&["--value", "x"]).contains("stdin"));
    }
}
