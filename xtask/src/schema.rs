//! docs/output.schema.json, the contract of both programs' `--output json`, and the check of
//! their JSON Lines against it.
//!
//! A line passes when it is one JSON object that the schema (draft 2020-12) accepts: parsing
//! alone would accept `{}` or a count written as a string. The schema is validated against the
//! draft's meta-schema when it is loaded, so a broken schema fails loudly rather than accept
//! everything.

use std::collections::BTreeSet;

use jsonschema::Validator;
use serde_json::Value;

/// Where the schema lives, from the project root.
pub const SCHEMA_PATH: &str = "docs/output.schema.json";

/// The compiled schema.
pub struct OutputSchema {
    validator: Validator,
}

impl OutputSchema {
    /// Reads and compiles docs/output.schema.json.
    pub fn load() -> Result<OutputSchema, String> {
        let path = crate::project_root().join(SCHEMA_PATH);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let schema: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        OutputSchema::new(&schema).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Compiles `schema`, after checking it against draft 2020-12's meta-schema.
    pub fn new(schema: &Value) -> Result<OutputSchema, String> {
        jsonschema::draft202012::meta::validate(schema)
            .map_err(|e| format!("not a valid draft 2020-12 schema: {e}"))?;
        let validator = jsonschema::draft202012::new(schema)
            .map_err(|e| format!("cannot compile the schema: {e}"))?;
        Ok(OutputSchema { validator })
    }

    /// Why `line` is not a valid line of `--output json`, if it is not.
    pub fn check_line(&self, line: &str) -> Result<Value, String> {
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line:?}"))?;
        let errors: Vec<String> = self
            .validator
            .iter_errors(&value)
            .take(3)
            .map(|e| format!("{e} at `{}`", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(value)
        } else {
            Err(format!("{}: {line}", errors.join("; ")))
        }
    }

    /// Checks every line of a program's stdout (`who` names it in the problems), adding the
    /// kinds of the valid lines to `seen`. Returns the problems and the valid lines.
    pub fn check_stdout(
        &self,
        who: &str,
        stdout: &[String],
        seen: &mut BTreeSet<String>,
    ) -> (Vec<String>, Vec<Value>) {
        let mut problems = Vec::new();
        let mut valid = Vec::new();
        for line in stdout {
            match self.check_line(line) {
                Ok(value) => {
                    seen.insert(kind(&value));
                    valid.push(value);
                }
                Err(problem) => problems.push(format!("{who} --output json: {problem}")),
            }
        }
        (problems, valid)
    }
}

/// A line's kind: its `event`, with its `outcome` when it has one (`datagram/counted`), and
/// `/base64` when it carries bytes that are not UTF-8.
pub fn kind(value: &Value) -> String {
    let mut kind = value["event"].as_str().unwrap_or("?").to_owned();
    if let Some(outcome) = value["outcome"].as_str() {
        kind.push('/');
        kind.push_str(outcome);
    }
    let base64 = ["", "request", "reply"].iter().any(|member| match *member {
        "" => value.get("base64").is_some(),
        member => value[member].get("base64").is_some(),
    });
    if base64 {
        kind.push_str("/base64");
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Result<OutputSchema, String> {
        OutputSchema::load()
    }

    #[test]
    fn an_empty_object_and_wrong_types_fail() -> Result<(), String> {
        let schema = schema()?;
        for bad in [
            "{}",
            // A count as a string.
            r#"{"event":"listening","address":"127.0.0.1:"}"#,
            r#"{"event":"exit","code":"0","end":"finished"}"#,
            // A member the event does not have.
            r#"{"event":"exit","code":0,"end":"finished","extra":1}"#,
            // Both text and base64, and neither.
            r#"{"event":"datagram","peer":"127.0.0.1:1","local":"127.0.0.1:2","bytes":1,"outcome":"counted","access":1,"text":"a","base64":"YQ==","truncated":false}"#,
            r#"{"event":"datagram","peer":"127.0.0.1:1","local":"127.0.0.1:2","bytes":1,"outcome":"counted","access":1,"truncated":false}"#,
            // An outcome's member on another outcome.
            r#"{"event":"datagram","peer":"127.0.0.1:1","local":"127.0.0.1:2","bytes":1,"outcome":"rate_limited","id":3}"#,
            "[1]",
            "not json",
        ] {
            assert!(schema.check_line(bad).is_err(), "accepted {bad}");
        }
        Ok(())
    }

    /// One line of every kind the programs write, as they write it: the kinds a spawned run
    /// cannot reach from loopback (busy needs a full reply cache) are checked here.
    #[test]
    fn every_kind_of_line_passes() -> Result<(), String> {
        let schema = schema()?;
        let peer = r#""peer":"127.0.0.1:54321","local":"[::1]:5000""#;
        for good in [
            r#"{"event":"listening","address":"[::1]:5000"}"#.to_owned(),
            format!(
                r#"{{"event":"datagram",{peer},"bytes":2,"outcome":"counted","access":1,"text":"hi","truncated":false}}"#
            ),
            format!(
                r#"{{"event":"datagram",{peer},"bytes":9000,"outcome":"counted","access":2,"base64":"//4=","truncated":true}}"#
            ),
            format!(
                r#"{{"event":"datagram",{peer},"bytes":50,"outcome":"resent","access":2,"id":9007199254740991}}"#
            ),
            format!(r#"{{"event":"datagram",{peer},"bytes":50,"outcome":"done","id":1}}"#),
            format!(r#"{{"event":"datagram",{peer},"bytes":50,"outcome":"busy","id":1}}"#),
            format!(
                r#"{{"event":"datagram",{peer},"bytes":5,"outcome":"refused","code":"bad_json","message":"x"}}"#
            ),
            format!(
                r#"{{"event":"datagram",{peer},"bytes":5,"outcome":"ignored","kind":"reply"}}"#
            ),
            format!(r#"{{"event":"datagram",{peer},"bytes":5,"outcome":"rate_limited"}}"#),
            format!(
                r#"{{"event":"datagram",{peer},"bytes":5,"outcome":"loop","cause":"repeats"}}"#
            ),
            r#"{"event":"summary","received":1,"counted":1,"duplicates":0,"malformed":0,"rate_limited":0,"busy":0,"loops":0,"group_ignored":0,"truncated":0,"peers":1,"peers_capped":false,"lines_dropped":0,"amplification_dropped":0,"send_failures":0,"kernel_dropped":0,"sink":{"datagrams":1,"bytes":14,"lost":0,"reordered":0,"duplicated":0}}"#.to_owned(),
            r#"{"event":"exit","code":130,"end":"interrupted","error":"interrupted by SIGINT"}"#.to_owned(),
        ] {
            schema.check_line(&good)?;
        }
        Ok(())
    }
}
