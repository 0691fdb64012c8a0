//! `tickstream config print [--config F] <role> [flags…]`: a role's effective configuration,
//! each setting with its value and where it came from (flag, env, file, default), secrets
//! redacted. The output is itself a valid config file: values as TOML, sources as comments.
//! Like the rest of the config file, it walks clap's arguments and names no flag.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, CommandFactory};

use super::{Kind, ParseError, Parsed, parse_from, roles};
use crate::cli::{Cli, Command as Role};

/// `tickstream config …`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConfigAction {
    /// Print a role's effective configuration: every setting, its value and where it came from
    /// (flag, env, file, default), secrets redacted. Exits 1 if the role would refuse it.
    Print(PrintArgs),
}

/// `tickstream config print`.
#[derive(Debug, Clone, clap::Args)]
pub struct PrintArgs {
    /// Config file (TOML), as the role's own `--config` (TICKSTREAM_CONFIG is read too).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The role: serve, engine, gateway or feed.
    pub role: String,
    /// The role's flags, as on its command line.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// What `config print` found.
#[derive(Debug)]
pub struct Report {
    /// The configuration, one `key = value  # source` line per setting.
    pub text: String,
    /// Why the role would refuse to start with it (its `validate()`), if it would.
    pub invalid: Option<String>,
}

/// Substrings of a flag name that make its value a secret.
const SECRET: [&str; 4] = ["secret", "token", "password", "key-file"];

impl PrintArgs {
    /// Parses the role's command line exactly as the role would, and describes the outcome.
    ///
    /// # Errors
    /// A role without a config file, or what the role's own command line would fail with.
    pub fn run(&self) -> Result<Report, ParseError> {
        let cli = Cli::command();
        let names: Vec<&str> = roles(&cli).iter().map(|r| r.get_name()).collect();
        if !names.contains(&self.role.as_str()) {
            let why =
                format!("`{}` is not a role with a configuration; roles: {}\n", self.role, names.join(", "));
            return Err(clap::Error::raw(ErrorKind::InvalidValue, why).into());
        }
        let mut argv: Vec<OsString> = vec!["tickstream".into(), self.role.clone().into()];
        if let Some(path) = &self.config {
            argv.extend(["--config".into(), path.into()]);
        }
        argv.extend(self.args.iter().cloned());
        let parsed = parse_from(argv)?;
        let invalid = match &parsed.cli.command {
            Role::Serve(a) => a.validate().err(),
            Role::Engine(a) => a.validate().err(),
            Role::Gateway(a) => a.validate().err(),
            Role::Feed(a) => a.validate().err(),
            _ => None,
        };
        Ok(Report { text: render(&parsed, &self.role), invalid })
    }
}

fn render(parsed: &Parsed, role: &str) -> String {
    let mut out = format!("# tickstream {role}: effective configuration (flag > env > file > default)\n");
    if let Some(file) = &parsed.file {
        out.push_str(&format!("# config file: {}\n", file.path.display()));
    }
    // The pristine command, for the declaration order (`mut_arg` moves an arg to the end).
    let pristine = Cli::command();
    let (Some(cmd), Some(matches)) =
        (pristine.find_subcommand(role), parsed.matches.subcommand_matches(role))
    else {
        return out;
    };
    let mut rows: Vec<(String, String)> = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(key) = arg.get_long() else { continue };
        if ["help", "version"].contains(&id) {
            continue;
        }
        let source = match matches.value_source(id) {
            None => {
                rows.push((format!("# {key}"), "not set".to_owned()));
                continue;
            }
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => {
                format!("env {}", arg.get_env().map(|e| e.to_string_lossy()).unwrap_or_default())
            }
            Some(_) if parsed.file.as_ref().is_some_and(|f| f.values.contains_key(id)) => "file".to_owned(),
            Some(_) => "default".to_owned(),
        };
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        rows.push((format!("{key} = {}", toml_value(arg, &raw)), source));
    }
    let width = rows.iter().map(|(left, _)| left.len()).max().unwrap_or(0);
    for (left, source) in rows {
        out.push_str(&format!("{left:width$}  # {source}\n"));
    }
    out
}

/// The value as TOML: bare for booleans and numbers, quoted strings otherwise, an array for a
/// flag that takes several; secrets replaced, URL passwords hidden.
pub(super) fn toml_value(arg: &Arg, raw: &[String]) -> String {
    let name = arg.get_long().unwrap_or_default().replace('_', "-").to_ascii_lowercase();
    if SECRET.iter().any(|s| name.contains(s)) && raw.iter().any(|v| !v.is_empty()) {
        return "\"<redacted>\"".to_owned();
    }
    let kind = Kind::of(arg);
    let one = |v: &String| match kind {
        Kind::Bool | Kind::Integer | Kind::Float => v.clone(),
        // JSON string escapes are valid TOML basic-string escapes.
        Kind::Text => serde_json::Value::String(redact_url(v)).to_string(),
    };
    match raw {
        [single] if !super::takes_many(arg) => one(single),
        many => format!("[{}]", many.iter().map(one).collect::<Vec<_>>().join(", ")),
    }
}

/// `scheme://user:password@host…` with the password replaced by `<redacted>`, in each item of
/// a comma-separated list (`--redis` shards); anything else unchanged.
pub fn redact_url(value: &str) -> String {
    value.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else { return value.to_owned() };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else { return value.to_owned() };
    let Some(colon) = authority[..at].find(':') else { return value.to_owned() };
    format!("{scheme}://{}:<redacted>{}", &authority[..colon], &rest[at..])
}
