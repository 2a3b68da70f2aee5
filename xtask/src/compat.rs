//! The API's compatibility gate: `openapi.json` against the document of the
//! version deployed clients were written for. A removed path, operation or
//! success status, a removed response field or enum value, a response
//! type changed, a request narrowed (a type, a limit, a pattern, a field
//! removed while unknown fields are refused) or a new required request
//! field or parameter fails it, unless `openapi-breaking.txt` lists that
//! finding as intended.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::Value;
use testkit::paths::project_root;
use testkit::progress::status;

/// Findings accepted as intended, one per line (`#` starts a comment).
const ACCEPTED: &str = "openapi-breaking.txt";

/// How deep schemas are followed (they hold no cycles today; this bounds a
/// future one).
const MAX_DEPTH: usize = 12;

/// The commit whose `openapi.json` is the base, and why that one:
/// `COMPAT_BASE` when set; on a pull request the base branch; else the
/// newest release tag (`v*`); else the parent commit.
pub(crate) fn base() -> anyhow::Result<(String, String)> {
    if let Ok(base) = std::env::var("COMPAT_BASE") {
        return Ok((base, "COMPAT_BASE".to_owned()));
    }
    if let Ok(branch) = std::env::var("GITHUB_BASE_REF")
        && !branch.is_empty()
    {
        return Ok((
            format!("origin/{branch}"),
            "the pull request's base branch".to_owned(),
        ));
    }
    if let Some(tag) = git(&["describe", "--tags", "--abbrev=0", "--match", "v*"]) {
        return Ok((tag, "the newest release tag".to_owned()));
    }
    if git(&["rev-parse", "--verify", "--quiet", "HEAD~1"]).is_some() {
        return Ok((
            "HEAD~1".to_owned(),
            "the parent commit (no release tag v* yet)".to_owned(),
        ));
    }
    bail!("no base to compare openapi.json with: set COMPAT_BASE to a commit")
}

/// `git args` in the repository, its output when it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(project_root())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The base's `openapi.json`, and which base it is; `None` when the base
/// has no such file.
pub(crate) fn base_document() -> anyhow::Result<Option<(Value, String)>> {
    let (base, why) = base()?;
    let Some(text) = git(&["show", &format!("{base}:openapi.json")]) else {
        status(&format!(
            "{base} ({why}) has no openapi.json: nothing to compare"
        ));
        return Ok(None);
    };
    let document =
        serde_json::from_str(&text).with_context(|| format!("{base}:openapi.json is not JSON"))?;
    Ok(Some((document, format!("{base} ({why})"))))
}

/// Fails on a change of `openapi.json` that breaks clients of the base.
pub(crate) fn check() -> anyhow::Result<()> {
    let Some((base, named)) = base_document()? else {
        return Ok(());
    };
    let path = project_root().join("openapi.json");
    let current: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .context("openapi.json is not JSON")?;
    let accepted: BTreeSet<String> = std::fs::read_to_string(project_root().join(ACCEPTED))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let findings = breaking_changes(&base, &current);
    let unaccepted: Vec<&String> = findings
        .iter()
        .filter(|finding| !accepted.contains(*finding))
        .collect();
    if !unaccepted.is_empty() {
        let list: String = unaccepted
            .iter()
            .map(|finding| format!("\n  - {finding}"))
            .collect();
        bail!(
            "openapi.json breaks clients written for {named}:{list}\nIf that is intended, \
             copy each line into {ACCEPTED} with the reason in a comment above it."
        );
    }
    status(&format!(
        "openapi.json keeps what clients of {named} use ({} intended breaks listed in {ACCEPTED})",
        findings.len()
    ));
    Ok(())
}

/// Every change from `base` to `current` that breaks a client written for
/// `base`, one line each.
pub(crate) fn breaking_changes(base: &Value, current: &Value) -> Vec<String> {
    let mut findings = Vec::new();
    let empty = serde_json::Map::new();
    let paths = |document: &'_ Value| document["paths"].as_object().cloned().unwrap_or_default();
    let (base_paths, current_paths) = (paths(base), paths(current));
    for (path, base_item) in &base_paths {
        let Some(current_item) = current_paths.get(path) else {
            findings.push(format!("path {path} removed"));
            continue;
        };
        for (method, base_operation) in base_item.as_object().unwrap_or(&empty) {
            let name = format!("{} {path}", method.to_uppercase());
            let Some(current_operation) = current_item.get(method) else {
                findings.push(format!("{name} removed"));
                continue;
            };
            let documents = Documents { base, current };
            documents.operation(&name, base_operation, current_operation, &mut findings);
        }
    }
    // In one order whatever serde_json's maps keep (sorted, or as written
    // when another crate turns on its `preserve_order`).
    findings.sort();
    findings
}

/// The two documents, for resolving `$ref`s.
#[derive(Clone, Copy)]
struct Documents<'a> {
    base: &'a Value,
    current: &'a Value,
}

/// `schema` itself, or what its `$ref` points to in `document`.
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => reference.strip_prefix("#/").map_or(schema, |pointer| {
            document.pointer(&format!("/{pointer}")).unwrap_or(schema)
        }),
        None => schema,
    }
}

/// A schema's types (`type` as one name or a list).
fn types(schema: &Value) -> BTreeSet<String> {
    match &schema["type"] {
        Value::String(name) => BTreeSet::from([name.clone()]),
        Value::Array(names) => names
            .iter()
            .filter_map(|name| name.as_str().map(str::to_owned))
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// A schema's `enum` values.
fn enum_values(schema: &Value) -> Vec<&Value> {
    schema["enum"]
        .as_array()
        .map(|values| values.iter().collect())
        .unwrap_or_default()
}

impl Documents<'_> {
    fn operation(self, name: &str, base: &Value, current: &Value, findings: &mut Vec<String>) {
        let empty = serde_json::Map::new();
        // Responses: a success status gone, or what a success sends changed.
        let responses = |operation: &'_ Value| {
            operation["responses"]
                .as_object()
                .cloned()
                .unwrap_or_default()
        };
        let current_responses = responses(current);
        for (status, base_response) in responses(base) {
            if !status.starts_with('2') {
                continue;
            }
            let Some(current_response) = current_responses.get(&status) else {
                findings.push(format!("{name}: status {status} removed"));
                continue;
            };
            for (media, base_content) in base_response["content"].as_object().unwrap_or(&empty) {
                let where_ = format!("{name} {status} {media}");
                match current_response["content"].get(media) {
                    None => findings.push(format!("{where_}: removed")),
                    Some(current_content) => self.response_schema(
                        &where_,
                        &base_content["schema"],
                        &current_content["schema"],
                        0,
                        findings,
                    ),
                }
            }
        }
        // The request body: what was accepted must still be.
        let base_body = &base["requestBody"]["content"];
        for (media, base_content) in base_body.as_object().unwrap_or(&empty) {
            let where_ = format!("{name} request {media}");
            match current["requestBody"]["content"].get(media) {
                None => findings.push(format!("{where_}: no longer accepted")),
                Some(current_content) => self.request_schema(
                    &where_,
                    &base_content["schema"],
                    &current_content["schema"],
                    0,
                    findings,
                ),
            }
        }
        if base["requestBody"].is_null() && current["requestBody"]["required"] == true {
            findings.push(format!("{name}: a request body is now required"));
        }
        self.parameters(name, base, current, findings);
    }

    fn parameters(self, name: &str, base: &Value, current: &Value, findings: &mut Vec<String>) {
        let list = |operation: &'_ Value| {
            operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        };
        let key = |parameter: &Value| {
            format!(
                "{} parameter {}",
                parameter["in"].as_str().unwrap_or("?"),
                parameter["name"].as_str().unwrap_or("?")
            )
        };
        let base_parameters = list(base);
        let current_parameters = list(current);
        for parameter in &current_parameters {
            let known = base_parameters.iter().any(|old| key(old) == key(parameter));
            if !known && parameter["required"] == true {
                findings.push(format!("{name}: new required {}", key(parameter)));
            }
        }
        for old in &base_parameters {
            match current_parameters.iter().find(|new| key(new) == key(old)) {
                None => findings.push(format!("{name}: {} removed", key(old))),
                Some(new) => {
                    if new["required"] == true && old["required"] != true {
                        findings.push(format!("{name}: {} is now required", key(old)));
                    }
                    let where_ = format!("{name} {}", key(old));
                    self.request_schema(&where_, &old["schema"], &new["schema"], 0, findings);
                }
            }
        }
    }

    /// What a response sends: every field and enum value of the base still
    /// sent, with the same types.
    fn response_schema(
        self,
        where_: &str,
        base: &Value,
        current: &Value,
        depth: usize,
        findings: &mut Vec<String>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let (base, current) = (resolve(self.base, base), resolve(self.current, current));
        let (base_types, current_types) = (types(base), types(current));
        if !base_types.is_empty() && base_types != current_types {
            findings.push(format!(
                "{where_}: type {base_types:?} changed to {current_types:?}"
            ));
        }
        self.enums(where_, base, current, findings);
        let empty = serde_json::Map::new();
        for (field, base_field) in base["properties"].as_object().unwrap_or(&empty) {
            let inner = format!("{where_}: {field}");
            match current["properties"].get(field) {
                None => findings.push(format!("{where_}: field {field} removed")),
                Some(current_field) => {
                    self.response_schema(&inner, base_field, current_field, depth + 1, findings);
                }
            }
        }
        if !base["items"].is_null() {
            let inner = format!("{where_}[]");
            self.response_schema(
                &inner,
                &base["items"],
                &current["items"],
                depth + 1,
                findings,
            );
        }
    }

    /// What a request may send: everything the base accepted still is.
    fn request_schema(
        self,
        where_: &str,
        base: &Value,
        current: &Value,
        depth: usize,
        findings: &mut Vec<String>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let (base, current) = (resolve(self.base, base), resolve(self.current, current));
        let (base_types, current_types) = (types(base), types(current));
        if !current_types.is_empty() && !base_types.is_subset(&current_types) {
            findings.push(format!(
                "{where_}: type narrowed from {base_types:?} to {current_types:?}"
            ));
        }
        self.enums(where_, base, current, findings);
        for (limit, tighter) in [
            ("maxLength", Tighter::Lower),
            ("maximum", Tighter::Lower),
            ("maxItems", Tighter::Lower),
            ("minLength", Tighter::Higher),
            ("minimum", Tighter::Higher),
            ("minItems", Tighter::Higher),
        ] {
            let narrowed = match (base[limit].as_f64(), current[limit].as_f64()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(old), Some(new)) => match tighter {
                    Tighter::Lower => new < old,
                    Tighter::Higher => new > old,
                },
            };
            if narrowed {
                findings.push(format!(
                    "{where_}: {limit} narrowed from {} to {}",
                    base[limit], current[limit]
                ));
            }
        }
        if !current["pattern"].is_null() && current["pattern"] != base["pattern"] {
            findings.push(format!("{where_}: pattern changed"));
        }
        let required = |schema: &Value| -> BTreeSet<String> {
            schema["required"]
                .as_array()
                .map(|names| {
                    names
                        .iter()
                        .filter_map(|name| name.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        for field in required(current).difference(&required(base)) {
            findings.push(format!("{where_}: new required field {field}"));
        }
        let empty = serde_json::Map::new();
        let closed = current["additionalProperties"] == false;
        for (field, base_field) in base["properties"].as_object().unwrap_or(&empty) {
            let inner = format!("{where_}: {field}");
            match current["properties"].get(field) {
                None if closed => findings.push(format!(
                    "{where_}: field {field} removed, and unknown fields are refused"
                )),
                None => {}
                Some(current_field) => {
                    self.request_schema(&inner, base_field, current_field, depth + 1, findings);
                }
            }
        }
        if !base["items"].is_null() && !current["items"].is_null() {
            let inner = format!("{where_}[]");
            self.request_schema(
                &inner,
                &base["items"],
                &current["items"],
                depth + 1,
                findings,
            );
        }
    }

    fn enums(self, where_: &str, base: &Value, current: &Value, findings: &mut Vec<String>) {
        let current_values = enum_values(current);
        if current_values.is_empty() {
            return;
        }
        for value in enum_values(base) {
            if !current_values.contains(&value) {
                findings.push(format!("{where_}: enum value {value} removed"));
            }
        }
    }
}

/// Which way a limit tightens.
#[derive(Clone, Copy)]
enum Tighter {
    Lower,
    Higher,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The committed document, changed by `edit`.
    fn edited(edit: impl FnOnce(&mut Value)) -> (Value, Value) {
        let text = std::fs::read_to_string(project_root().join("openapi.json")).expect("reads");
        let base: Value = serde_json::from_str(&text).expect("JSON");
        let mut current = base.clone();
        edit(&mut current);
        (base, current)
    }

    fn schema<'a>(document: &'a mut Value, name: &str) -> &'a mut Value {
        &mut document["components"]["schemas"][name]
    }

    #[test]
    fn the_committed_document_breaks_nothing_against_itself() {
        let (base, current) = edited(|_| {});
        assert_eq!(breaking_changes(&base, &current), Vec::<String>::new());
    }

    #[test]
    fn a_renamed_response_field_is_named() {
        let (base, current) = edited(|document| {
            let properties = &mut schema(document, "DataRecord")["properties"];
            let greeting = properties["greeting"].take();
            let object = properties.as_object_mut().expect("an object");
            object.remove("greeting");
            object.insert("salutation".to_owned(), greeting);
        });
        let findings = breaking_changes(&base, &current);
        assert!(
            findings
                .contains(&"POST /data 201 application/json: field greeting removed".to_owned()),
            "{findings:#?}"
        );
        assert!(
            findings.contains(
                &"GET /data 200 application/json: items[]: field greeting removed".to_owned()
            ),
            "{findings:#?}"
        );
    }

    #[test]
    fn a_new_required_request_field_a_narrowed_limit_and_a_removed_path_are_named() {
        let (base, current) = edited(|document| {
            let request = schema(document, "NewDataRequest");
            request["properties"]["mood"] = json!({"type": "string"});
            request["required"]
                .as_array_mut()
                .expect("a list")
                .push(json!("mood"));
            request["properties"]["notes"]["maxLength"] = json!(64);
            document["paths"]
                .as_object_mut()
                .expect("paths")
                .remove("/health/ready");
        });
        let findings = breaking_changes(&base, &current);
        for expected in [
            "POST /data request application/json: new required field mood",
            "POST /data request application/json: notes: maxLength narrowed from 128 to 64",
            "path /health/ready removed",
        ] {
            assert!(
                findings.contains(&expected.to_owned()),
                "{expected}: {findings:#?}"
            );
        }
    }

    #[test]
    fn a_removed_enum_value_and_a_changed_type_are_named_and_additions_are_not() {
        let base = json!({"paths": {"/x": {"get": {"responses": {"200": {"content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "kind": {"type": "string", "enum": ["a", "b"]},
                "count": {"type": "integer"}}}}}}}}}}});
        let mut current = base.clone();
        let properties = &mut current["paths"]["/x"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["properties"];
        properties["kind"]["enum"] = json!(["a", "c"]);
        properties["count"]["type"] = json!("string");
        properties["added"] = json!({"type": "string"});
        assert_eq!(
            breaking_changes(&base, &current),
            [
                "GET /x 200 application/json: count: type {\"integer\"} changed to {\"string\"}",
                "GET /x 200 application/json: kind: enum value \"b\" removed",
            ]
        );
    }
}
