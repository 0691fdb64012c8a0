//! The README is part of the contract, so these tests read it: its tables must list exactly what
//! the code has — every flag of every role with its env var and default (clap's, which come from
//! the config types), every close code the server sends, and every error code with its status.
//! A flag, code or default added, removed or changed on one side only fails here.

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;
use tickstream::cli::Cli;
use tickstream_api::ErrorCode;
use tickstream_gateway::close::CloseCode;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README.md")
}

/// The cells of every row of the first table after the line `heading` (header and rule skipped).
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let after =
        doc.split_once(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("no `{heading}` in README")).1;
    after
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim().trim_matches('|').split('|').map(|c| c.trim().to_owned()).collect())
        .collect()
}

/// The backticked spans of a cell, in order.
fn ticks(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// What the README says of one flag: its env var (if it names one) and its default.
#[derive(Debug, Clone, PartialEq)]
struct Doc {
    env: Option<String>,
    default: Option<String>,
}

/// A default cell's text: `none` or an empty cell is no default; `off` is a switch.
fn default_of(text: &str) -> Option<String> {
    match text {
        "" | "none" => None,
        t => Some(t.to_owned()),
    }
}

/// A cell's default for `role`: `\`X\`` for every role, unless `(role: Y)` says otherwise.
fn default_for(cell: &str, role: &str) -> Option<String> {
    if let Some((_, paren)) = cell.split_once('(') {
        for part in paren.trim_end_matches(')').split(';') {
            if let Some((roles, value)) = part.split_once(':')
                && roles.split(',').any(|r| r.trim() == role)
            {
                let value = value.trim();
                let value = value.split_once(" =").map_or(value, |(v, _)| v);
                return default_of(value.trim_matches('`'));
            }
        }
    }
    default_of(ticks(cell).first().map_or(cell.trim(), String::as_str))
}

/// Every flag of every role as the README documents it.
fn documented() -> BTreeMap<(String, String), Doc> {
    let doc = readme();
    let mut out = BTreeMap::new();
    // `## Configuration`: serve's flags (the other roles share those they have, checked below).
    for row in table(&doc, "## Configuration") {
        let flag = ticks(&row[0]).remove(0);
        let doc = Doc { env: ticks(&row[1]).first().cloned(), default: default_for(&row[2], "serve") };
        out.insert(("serve".to_owned(), flag), doc);
    }
    // The role table of "Running several nodes": `| roles | flag | env | default | meaning |`.
    let roles_heading = "Role flags (all with env vars; `tickstream <role> --help`):";
    for row in table(&doc, roles_heading) {
        let flag = ticks(&row[1]).remove(0);
        for role in row[0].split(',').map(str::trim) {
            let d = Doc { env: ticks(&row[2]).first().cloned(), default: default_for(&row[3], role) };
            out.insert((role.to_owned(), flag.clone()), d);
        }
    }
    // The load generator: `| flags | defaults | meaning |`, several flags to a row.
    for row in table(&doc, "## Load testing: `tickstream load`") {
        let flags: Vec<String> = ticks(&row[0])
            .iter()
            .flat_map(|t| t.split(' ').filter(|w| w.starts_with("--")).map(str::to_owned).collect::<Vec<_>>())
            .collect();
        let defaults: Vec<Option<String>> =
            row[1].split(',').map(|d| default_of(d.trim().trim_matches('`'))).collect();
        let env = ticks(&row[2]).into_iter().find(|t| t.starts_with("TICKSTREAM_"));
        for (i, flag) in flags.into_iter().enumerate() {
            let default = defaults.get(i).or(defaults.last()).cloned().flatten();
            out.insert(("load".to_owned(), flag), Doc { env: env.clone(), default });
        }
    }
    out
}

/// Every flag of every role as clap has it.
fn implemented() -> BTreeMap<(String, String), Doc> {
    let mut out = BTreeMap::new();
    for sub in Cli::command().get_subcommands() {
        for arg in sub.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if arg.is_hide_set() || ["help", "version"].contains(&long) {
                continue;
            }
            let default: Vec<String> =
                arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
            // A switch is documented as `off`.
            let switch = !arg.get_action().takes_values();
            let doc = Doc {
                env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                default: if switch {
                    Some("off".into())
                } else {
                    (!default.is_empty()).then(|| default.join(","))
                },
            };
            out.insert((sub.get_name().to_owned(), format!("--{long}")), doc);
        }
    }
    out
}

/// Equal as text, or as durations (`60s` and clap's `1m` are the same default).
fn same_default(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a == b
                || matches!(
                    (tickstream_api::parse_duration(a), tickstream_api::parse_duration(b)),
                    (Ok(x), Ok(y)) if x == y
                )
        }
        (a, b) => a == b,
    }
}

#[test]
fn every_flag_is_documented_with_its_env_and_default() {
    let documented = documented();
    let implemented = implemented();
    let mut problems = Vec::new();
    for ((role, flag), have) in &implemented {
        // A role's flag is documented in its own row, or (shared with serve) in serve's table.
        let Some(doc) = documented.get(&(role.clone(), flag.clone())).or_else(|| {
            let serve = implemented.get(&("serve".to_owned(), flag.clone()))?;
            (serve == have).then(|| documented.get(&("serve".to_owned(), flag.clone()))).flatten()
        }) else {
            problems.push(format!("{role} {flag}: not in the README"));
            continue;
        };
        // The load generator's table has no env column; its rows name an env var when it has one.
        let env_matches = doc.env == have.env || (role == "load" && doc.env.is_none());
        if !env_matches || !same_default(&doc.default, &have.default) {
            problems.push(format!("{role} {flag}: README says {doc:?}, the code has {have:?}"));
        }
    }
    for (role, flag) in documented.keys() {
        if !implemented.contains_key(&(role.clone(), flag.clone())) {
            problems.push(format!("{role} {flag}: in the README but not a flag"));
        }
    }
    assert!(problems.is_empty(), "README and flags disagree:\n{}", problems.join("\n"));
}

#[test]
fn close_code_table_lists_exactly_the_codes_the_server_sends() {
    let documented: BTreeSet<u16> = table(&readme(), "### Close codes")
        .iter()
        .map(|row| row[0].parse().unwrap_or_else(|_| panic!("close code {:?}", row[0])))
        .collect();
    // 1000 (the client's own, echoed) and 1006 (a metrics label: no frame at all) are not ours.
    let mut sent: BTreeSet<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
    sent.extend([1000, 1006]);
    assert_eq!(documented, sent);
}

#[test]
fn error_code_table_lists_exactly_the_codes_with_their_status() {
    let documented: BTreeMap<String, String> = table(&readme(), "### Error codes")
        .iter()
        .map(|row| (ticks(&row[0]).remove(0), row[1].clone()))
        .collect();
    let implemented: BTreeMap<String, String> = ErrorCode::ALL
        .iter()
        .map(|&c| (c.as_str().to_owned(), tickstream_gateway::error::status_of(c).as_u16().to_string()))
        .collect();
    assert_eq!(documented, implemented);
    // And every code the route and WebSocket tables mention is one of them.
    let doc = readme();
    let api = doc.split_once("## REST API").map(|x| x.1).unwrap_or_default();
    let api = api.split_once("### Close codes").map(|x| x.0).unwrap_or_default();
    for word in ticks(api) {
        let looks_like_code = word.contains('_') && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        let other_names = ["max_rate_hz", "session_id", "expires_in_s", "created_at", "created_at_ms"];
        if looks_like_code && !other_names.contains(&word.as_str()) {
            assert!(
                ErrorCode::parse(&word).is_some(),
                "README mentions `{word}`, which is not an error code"
            );
        }
    }
}
