//! The config file (`--config FILE`, `TICKSTREAM_CONFIG`) and `tickstream config print`.
//!
//! A TOML file whose keys are a role's long flag names (`heartbeat-interval = "30s"`,
//! `max-sessions = 1000`, `engine = ["http://a:50051"]`), at the top level (for every role that
//! has the flag) or in a table named for the role (`[gateway]`, which wins over the top level).
//! It sits between clap's derive types (`cli.rs`) and `main`: before parsing, the file's values
//! become the matching clap `Arg`s' *defaults*, so flags and env vars still win (flags > env >
//! file > defaults) and every value goes through the flag's own value parser. Nothing here
//! names a flag: any flag of any role works in the file with no code here.
//!
//! Errors name the file and the key: a key that is no role's flag, a key in `[role]` that is not
//! that role's, a TOML type that the flag cannot take, or a value its parser refuses. Every
//! value in the file is checked, also those for other roles, so one file can serve a whole stack.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// The id of the flag naming the file; a role has a config file when it has this flag.
const CONFIG: &str = "config";

/// Not settable in a file (the file itself, clap's own).
const NOT_SETTINGS: [&str; 3] = [CONFIG, "help", "version"];

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {}: not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("config file {}: unknown key `{key}` ({why})", path.display())]
    UnknownKey { path: PathBuf, key: String, why: String },
    #[error("config file {}: `{key}` must be {expected}, not {found}", path.display())]
    WrongType { path: PathBuf, key: String, expected: String, found: &'static str },
    #[error("config file {}: `{key}` = {value}: {reason}", path.display())]
    InvalidValue { path: PathBuf, key: String, value: String, reason: String },
}

/// What parsing the command line can end with.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// clap's own (including `--help` and `--version`): [`clap::Error::exit`] prints it.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    File(#[from] ConfigFileError),
}

/// The settings a file gives one role: clap arg id → values, as they would be typed.
#[derive(Debug, Clone)]
pub struct FileValues {
    pub path: PathBuf,
    values: BTreeMap<String, Vec<String>>,
}

/// A parsed command line, with what is needed to say where each setting came from.
#[derive(Debug)]
pub struct Parsed {
    pub cli: Cli,
    matches: ArgMatches,
    file: Option<FileValues>,
}

/// The roles that take a config file: the subcommands with a `--config` flag.
pub fn roles(cli: &Command) -> Vec<&Command> {
    cli.get_subcommands().filter(|s| s.get_arguments().any(|a| a.get_id() == CONFIG)).collect()
}

/// The flag of `role` that the file key `key` sets.
fn setting<'a>(role: &'a Command, key: &str) -> Option<&'a Arg> {
    role.get_arguments().find(|a| a.get_long() == Some(key) && !NOT_SETTINGS.contains(&a.get_id().as_str()))
}

/// Parses `argv` (program name first) as clap would, after applying the role's config file.
///
/// # Errors
/// clap's (usage, `--help`), or the config file's.
pub fn parse_from(argv: impl IntoIterator<Item = impl Into<OsString>>) -> Result<Parsed, ParseError> {
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let mut command = Cli::command();
    let mut file = None;
    if let Some((role, path)) = requested(&command, &argv) {
        let values = load(&command, &role, &path)?;
        command = apply(command, &role, &values);
        file = Some(values);
    }
    let matches = command.try_get_matches_from_mut(&argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Parsed { cli, matches, file })
}

/// The role and the config file `argv` names (`--config F`, `--config=F`), else the role's
/// env var (`TICKSTREAM_CONFIG`). The role is the first argument: `tickstream` has no options
/// of its own but `--help`/`--version`.
fn requested(cli: &Command, argv: &[OsString]) -> Option<(String, PathBuf)> {
    let role = argv.get(1)?.to_str()?;
    let arg = cli.find_subcommand(role)?.get_arguments().find(|a| a.get_id() == CONFIG)?;
    let flag = format!("--{}", arg.get_long()?);
    let mut rest = argv.iter().skip(2);
    while let Some(a) = rest.next() {
        match a.to_str() {
            Some("--") => break,
            Some(a) if a == flag => return rest.next().map(|p| (role.to_owned(), p.into())),
            Some(a) => {
                if let Some(path) = a.strip_prefix(&flag).and_then(|r| r.strip_prefix('=')) {
                    return Some((role.to_owned(), path.into()));
                }
            }
            None => {}
        }
    }
    let from_env = std::env::var_os(arg.get_env()?).filter(|v| !v.is_empty())?;
    Some((role.to_owned(), from_env.into()))
}

/// Reads `path` and checks it against every role of `cli`; the values for `role`.
///
/// # Errors
/// See [`ConfigFileError`].
pub fn load(cli: &Command, role: &str, path: &Path) -> Result<FileValues, ConfigFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigFileError::Read { path: path.to_owned(), source })?;
    from_text(cli, role, path, &text)
}

fn from_text(cli: &Command, role: &str, path: &Path, text: &str) -> Result<FileValues, ConfigFileError> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigFileError::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let roles = roles(cli);
    let names: Vec<&str> = roles.iter().map(|r| r.get_name()).collect();
    let unknown = |key: String, why: String| ConfigFileError::UnknownKey { path: path.to_owned(), key, why };
    let mut top = Vec::new();
    let mut tables = BTreeMap::new();
    for (key, value) in &doc {
        match value {
            toml::Value::Table(t) if names.contains(&key.as_str()) => {
                tables.insert(key.as_str(), t);
            }
            _ if roles.iter().any(|r| setting(r, key).is_some()) => top.push((key.as_str(), value)),
            _ => {
                let why = format!("not a flag of any role, nor a table [{}]", names.join("], ["));
                return Err(unknown(key.clone(), why));
            }
        }
    }
    for (name, table) in &tables {
        let cmd = roles.iter().find(|r| r.get_name() == *name).copied();
        if let Some(key) = table.keys().find(|k| cmd.and_then(|c| setting(c, k)).is_none()) {
            return Err(unknown(format!("{name}.{key}"), format!("not a flag of `{name}`")));
        }
    }
    let mut out = FileValues { path: path.to_owned(), values: BTreeMap::new() };
    for cmd in &roles {
        let name = cmd.get_name();
        let scoped = tables.get(name).into_iter().flat_map(|t| t.iter().map(move |(k, v)| (k.as_str(), v)));
        let own: Vec<(String, &str, &toml::Value)> = top
            .iter()
            .map(|&(k, v)| (k.to_owned(), k, v))
            .chain(scoped.map(|(k, v)| (format!("{name}.{k}"), k, v)))
            .collect();
        // The top level first, so the role's table overrides it.
        for (shown, key, value) in own {
            let Some(arg) = setting(cmd, key) else { continue };
            let values = convert(path, &shown, arg, value)?;
            if name == role {
                out.values.insert(arg.get_id().to_string(), values);
            }
        }
    }
    Ok(out)
}

/// Gives each arg the file's value as its default.
fn apply(cli: Command, role: &str, file: &FileValues) -> Command {
    cli.mut_subcommand(role, |mut sub| {
        for (id, values) in &file.values {
            let values = values.clone();
            sub = sub.mut_arg(id, move |a| a.default_values(values));
        }
        sub
    })
}

/// The TOML type a flag takes, from its clap action and value parser.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Integer,
    Float,
    Text,
}

impl Kind {
    fn of(arg: &Arg) -> Self {
        use std::any::TypeId;
        if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            return Self::Bool;
        }
        if matches!(arg.get_action(), ArgAction::Count) {
            return Self::Integer;
        }
        let t = arg.get_value_parser().type_id();
        let integers = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<isize>(),
        ];
        if integers.iter().any(|&i| t == i) {
            Self::Integer
        } else if t == TypeId::of::<f64>() || t == TypeId::of::<f32>() {
            Self::Float
        } else if t == TypeId::of::<bool>() {
            Self::Bool
        } else {
            Self::Text
        }
    }

    /// What the file must hold, for an error message.
    fn expected(self, arg: &Arg) -> String {
        use std::any::TypeId;
        let t = arg.get_value_parser().type_id();
        let one = match self {
            Self::Bool => "true or false".to_owned(),
            Self::Integer => "an integer".to_owned(),
            Self::Float => "a number".to_owned(),
            Self::Text if t == TypeId::of::<std::time::Duration>() => {
                "a duration string such as \"30s\"".to_owned()
            }
            Self::Text if t == TypeId::of::<std::net::SocketAddr>() => {
                "an address string such as \"127.0.0.1:8080\"".to_owned()
            }
            Self::Text => match possible_values(arg) {
                Some(names) => format!("one of the strings {}", names.join(", ")),
                None => "a string".to_owned(),
            },
        };
        if takes_many(arg) { format!("{one}, or an array of them") } else { one }
    }
}

fn possible_values(arg: &Arg) -> Option<Vec<String>> {
    let values = arg.get_value_parser().possible_values()?;
    Some(values.map(|v| format!("\"{}\"", v.get_name())).collect())
}

fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
        || arg.get_value_delimiter().is_some()
        || arg.get_num_args().is_some_and(|n| n.max_values() > 1)
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// A TOML value as the flag's command-line values, checked by the flag's own value parser.
fn convert(path: &Path, key: &str, arg: &Arg, value: &toml::Value) -> Result<Vec<String>, ConfigFileError> {
    let kind = Kind::of(arg);
    let wrong = |found| ConfigFileError::WrongType {
        path: path.to_owned(),
        key: key.to_owned(),
        expected: kind.expected(arg),
        found,
    };
    let items: Vec<&toml::Value> = match value {
        toml::Value::Array(items) if takes_many(arg) && !items.is_empty() => items.iter().collect(),
        toml::Value::Array(items) if items.is_empty() => return Err(wrong("an empty array")),
        toml::Value::Array(_) => return Err(wrong("an array")),
        one => vec![one],
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let text = match (kind, item) {
            (Kind::Bool, toml::Value::Boolean(b)) => b.to_string(),
            (Kind::Integer | Kind::Float, toml::Value::Integer(i)) => i.to_string(),
            (Kind::Float, toml::Value::Float(f)) => f.to_string(),
            (Kind::Text, toml::Value::String(s)) => s.clone(),
            (_, other) => return Err(wrong(type_name(other))),
        };
        check(arg, &text).map_err(|reason| ConfigFileError::InvalidValue {
            path: path.to_owned(),
            key: key.to_owned(),
            value: match item {
                toml::Value::String(s) => serde_json::Value::String(s.clone()).to_string(),
                _ => text.clone(),
            },
            reason,
        })?;
        out.push(text);
    }
    Ok(out)
}

/// Runs `arg`'s value parser on `text`, alone (an arg rebuilt from its parser, so the role's
/// other args, their relations and the environment play no part).
fn check(arg: &Arg, text: &str) -> Result<(), String> {
    use std::error::Error as _;
    let probe =
        Arg::new("value").long("value").action(ArgAction::Set).value_parser(arg.get_value_parser().clone());
    let cmd = Command::new("config").no_binary_name(true).arg(probe);
    match cmd.try_get_matches_from([format!("--value={text}")]) {
        Ok(_) => Ok(()),
        Err(e) => Err(match (e.source(), possible_values(arg)) {
            (Some(source), _) => source.to_string(),
            (None, Some(names)) => format!("expected one of {}", names.join(", ")),
            (None, None) => e.kind().to_string(),
        }),
    }
}

mod print;
pub use print::{ConfigAction, ConfigArgs, PrintArgs, Report, redact_url};

#[cfg(test)]
mod tests;
