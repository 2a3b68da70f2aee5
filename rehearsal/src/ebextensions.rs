//! What a bundle's `.ebextensions/*.config` files say, read as Elastic
//! Beanstalk reads them: YAML (or JSON) files taken in name order, whose
//! `option_settings` (later files override earlier ones), `files` and
//! `container_commands` the bundle check and the rehearsal need.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

/// The environment properties' namespace.
pub const PROPERTIES: &str = "aws:elasticbeanstalk:application:environment";

/// One `container_commands` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCommand {
    /// The config file it comes from.
    pub file: String,
    /// Its key, which orders it.
    pub name: String,
    /// The shell command.
    pub command: String,
    /// Runs on the leader only, before every other container command.
    pub leader_only: bool,
    /// A command that must succeed for this one to run.
    pub test: Option<String>,
    /// A failure does not fail the deployment.
    pub ignore_errors: bool,
    /// Working directory; the staging folder when unset.
    pub cwd: Option<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
}

/// One `files` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// The config file it comes from.
    pub file: String,
    /// Absolute path on the instance.
    pub path: String,
    /// Inline content, when given.
    pub content: Option<String>,
    /// URL to download, when given.
    pub source: Option<String>,
    /// Octal mode, e.g. `000644`.
    pub mode: Option<String>,
    /// The owning user and group, when given (cfn-init's default: root).
    pub owner: Option<(String, String)>,
    /// `source` as written, before functions are resolved.
    pub source_spec: Option<Value>,
}

/// The configuration files of a bundle, merged.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `namespace` → option → value; a later file's value wins.
    pub options: BTreeMap<String, BTreeMap<String, String>>,
    /// Every container command, files in name order, names in order.
    pub container_commands: Vec<ContainerCommand>,
    /// Every file to place, in file and then path order.
    pub files: Vec<FileEntry>,
    /// Config files that hold a `commands` section (run before the bundle
    /// is extracted, from `/`).
    pub commands: Vec<String>,
    /// `Mappings`: map → key → name → value.
    pub mappings: BTreeMap<String, Value>,
}

/// Sections Elastic Beanstalk knows in a config file.
const SECTIONS: &[&str] = &[
    "option_settings",
    "container_commands",
    "commands",
    "files",
    "packages",
    "groups",
    "users",
    "sources",
    "services",
    "Resources",
    "Outputs",
    "Mappings",
];

/// The partition the model's instances run in (`Ref: AWS::Partition`).
pub const PARTITION: &str = "aws";

/// The partitions a partition-dependent value must cover.
pub const PARTITIONS: [&str; 3] = ["aws", "aws-us-gov", "aws-cn"];

impl Config {
    /// Parses `(file name, text)` pairs, in any order.
    pub fn parse(mut files: Vec<(String, String)>) -> anyhow::Result<Config> {
        files.sort();
        let mut config = Config::default();
        for (name, text) in &files {
            let value: Value = yaml_serde::from_str(text)
                .with_context(|| format!(".ebextensions/{name} is not valid YAML"))?;
            config
                .add(name, &value)
                .with_context(|| format!(".ebextensions/{name}"))?;
        }
        Ok(config)
    }

    /// Adds config file `file`, parsed as `value`, over what earlier files
    /// said.
    fn add(&mut self, file: &str, value: &Value) -> anyhow::Result<()> {
        let sections = value
            .as_object()
            .context("a config file must be a mapping")?;
        for key in sections.keys() {
            ensure!(SECTIONS.contains(&key.as_str()), "unknown section {key}");
        }
        // First: the file's other sections may look values up in them.
        if let Some(mappings) = sections.get("Mappings") {
            let mappings = mappings.as_object().context("Mappings must be a mapping")?;
            self.mappings.extend(
                mappings
                    .iter()
                    .map(|(name, map)| (name.clone(), map.clone())),
            );
        }
        if let Some(options) = sections.get("option_settings") {
            self.add_options(options)?;
        }
        if let Some(commands) = sections.get("container_commands") {
            self.add_container_commands(file, commands)?;
        }
        if let Some(files) = sections.get("files") {
            self.add_files(file, files)?;
        }
        if sections.contains_key("commands") {
            self.commands.push(file.to_owned());
        }
        Ok(())
    }

    /// Sets the options of an `option_settings` section, in either of its
    /// shapes (namespace → option → value, or a list of entries).
    fn add_options(&mut self, options: &Value) -> anyhow::Result<()> {
        match options {
            Value::Object(namespaces) => {
                for (namespace, options) in namespaces {
                    let options = options
                        .as_object()
                        .with_context(|| format!("option_settings {namespace} is not a mapping"))?;
                    for (name, value) in options {
                        self.set(namespace, name, value)?;
                    }
                }
            }
            Value::Array(entries) => {
                for entry in entries {
                    let field = |key: &str| {
                        entry[key]
                            .as_str()
                            .with_context(|| format!("an option_settings entry lacks {key}"))
                    };
                    self.set(field("namespace")?, field("option_name")?, &entry["value"])?;
                }
            }
            _ => bail!("option_settings must be a mapping or a list"),
        }
        Ok(())
    }

    /// Adds the `container_commands` section of config file `file`, in name
    /// order.
    fn add_container_commands(&mut self, file: &str, commands: &Value) -> anyhow::Result<()> {
        let commands = commands
            .as_object()
            .context("container_commands must be a mapping")?;
        let mut names: Vec<&String> = commands.keys().collect();
        names.sort();
        for name in names {
            let spec = &commands[name];
            let text = |key: &str| spec[key].as_str().map(str::to_owned);
            let truthy = |key: &str| match &spec[key] {
                Value::Bool(flag) => *flag,
                Value::String(text) => text.eq_ignore_ascii_case("true"),
                _ => false,
            };
            let env = spec["env"]
                .as_object()
                .map(|env| {
                    env.iter()
                        .map(|(key, value)| (key.clone(), scalar(value)))
                        .collect()
                })
                .unwrap_or_default();
            self.container_commands.push(ContainerCommand {
                file: file.to_owned(),
                name: name.clone(),
                command: text("command")
                    .with_context(|| format!("container command {name} has no command"))?,
                leader_only: truthy("leader_only"),
                test: text("test"),
                ignore_errors: truthy("ignoreErrors"),
                cwd: text("cwd"),
                env,
            });
        }
        Ok(())
    }

    /// Adds the `files` section of config file `file`, in path order.
    fn add_files(&mut self, file: &str, files: &Value) -> anyhow::Result<()> {
        let files = files.as_object().context("files must be a mapping")?;
        let mut paths: Vec<&String> = files.keys().collect();
        paths.sort();
        for path in paths {
            let spec = &files[path];
            ensure!(
                path.starts_with('/'),
                "files: {path} is not an absolute path"
            );
            let source = match &spec["source"] {
                Value::Null => None,
                source => Some(
                    self.resolve(source, PARTITION)
                        .with_context(|| format!("files: {path} source"))?,
                ),
            };
            // cfn-init writes inline content only when it is not empty;
            // empty content counts as none, and a file with neither fails
            // the deployment ("File specified without source or content",
            // its FileTool).
            let content = spec["content"].as_str().filter(|text| !text.is_empty());
            ensure!(
                content.is_some() || !spec["source"].is_null() || spec["content"].is_null(),
                "files: {path} has empty content, which cfn-init refuses (\"File specified \
                 without source or content\"): give it some"
            );
            let entry = FileEntry {
                file: file.to_owned(),
                path: path.clone(),
                content: content.map(str::to_owned),
                source,
                mode: spec["mode"].as_str().map(str::to_owned),
                owner: spec["owner"].as_str().map(|owner| {
                    let group = spec["group"].as_str().unwrap_or(owner);
                    (owner.to_owned(), group.to_owned())
                }),
                source_spec: (!spec["source"].is_null()).then(|| spec["source"].clone()),
            };
            ensure!(
                entry.content.is_some() != entry.source.is_some(),
                "files: {path} needs exactly one of content and source"
            );
            self.files.push(entry);
        }
        Ok(())
    }

    /// A string, or the functions CloudFormation resolves in a config
    /// file's values that this model knows: `Fn::FindInMap` over this
    /// file's `Mappings`, with `Ref: AWS::Partition` as `partition`.
    pub fn resolve(&self, value: &Value, partition: &str) -> anyhow::Result<String> {
        if let Some(text) = value.as_str() {
            return Ok(text.to_owned());
        }
        if let Some(reference) = value.get("Ref") {
            ensure!(
                reference == "AWS::Partition",
                "Ref {reference} is not one the rehearsal knows (only AWS::Partition)"
            );
            return Ok(partition.to_owned());
        }
        let Some(Value::Array(arguments)) = value.get("Fn::FindInMap") else {
            bail!("{value} is neither a string nor a function the rehearsal knows");
        };
        let [map, key, name] = arguments.as_slice() else {
            bail!("Fn::FindInMap takes a map, a key and a name: {value}");
        };
        let (map, key, name) = (
            self.resolve(map, partition)?,
            self.resolve(key, partition)?,
            self.resolve(name, partition)?,
        );
        self.mappings
            .get(&map)
            .and_then(|map| map.get(&key))
            .and_then(|entry| entry.get(&name))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("Fn::FindInMap: Mappings {map} has no {key} {name}"))
    }

    /// Sets option `name` of `namespace` to the single `value`; a later
    /// file's value wins.
    fn set(&mut self, namespace: &str, name: &str, value: &Value) -> anyhow::Result<()> {
        ensure!(
            !matches!(value, Value::Object(_) | Value::Array(_)),
            "option {namespace} {name} must be a single value"
        );
        self.options
            .entry(namespace.to_owned())
            .or_default()
            .insert(name.to_owned(), scalar(value));
        Ok(())
    }

    /// The options of `namespace` (empty when the bundle sets none).
    pub fn namespace(&self, namespace: &str) -> BTreeMap<String, String> {
        self.options.get(namespace).cloned().unwrap_or_default()
    }

    /// One option's value.
    pub fn option(&self, namespace: &str, name: &str) -> Option<&str> {
        self.options.get(namespace)?.get(name).map(String::as_str)
    }

    /// The environment properties.
    pub fn environment(&self) -> BTreeMap<String, String> {
        self.namespace(PROPERTIES)
    }

    /// The container commands an instance runs, in Elastic Beanstalk's
    /// order: on the leader the leader-only ones first ("Leader-only
    /// container commands are run before other container commands"), then
    /// the others; elsewhere only the others.
    pub fn container_commands_for(&self, leader: bool) -> Vec<&ContainerCommand> {
        let leader_only = self
            .container_commands
            .iter()
            .filter(|command| leader && command.leader_only);
        let others = self
            .container_commands
            .iter()
            .filter(|command| !command.leader_only);
        leader_only.chain(others).collect()
    }
}

/// A YAML scalar as Elastic Beanstalk passes it on: text.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(files: &[(&str, &str)]) -> Config {
        Config::parse(
            files
                .iter()
                .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
                .collect(),
        )
        .expect("parses")
    }

    #[test]
    fn later_files_override_earlier_options_in_either_form() {
        let config = parse(&[
            (
                "02-b.config",
                "option_settings:\n  - namespace: ns\n    option_name: A\n    value: 2\n",
            ),
            (
                "01-a.config",
                "option_settings:\n  ns:\n    A: \"1\"\n    B: true\n",
            ),
        ]);
        assert_eq!(config.option("ns", "A"), Some("2"));
        assert_eq!(config.option("ns", "B"), Some("true"));
    }

    #[test]
    fn leader_only_commands_come_first_on_the_leader_and_never_elsewhere() {
        let config = parse(&[(
            "05.config",
            "container_commands:\n  00_all:\n    command: a\n  01_lead:\n    command: b\n    leader_only: true\n",
        )]);
        let order = |leader| {
            config
                .container_commands_for(leader)
                .iter()
                .map(|command| command.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(order(true), ["01_lead", "00_all"]);
        assert_eq!(order(false), ["00_all"]);
    }

    #[test]
    fn unknown_sections_and_bad_files_are_refused() {
        for bad in [
            "container_command:\n  a:\n    command: x\n",
            "files:\n  relative/path:\n    content: x\n",
            "container_commands:\n  a:\n    leader_only: true\n",
            // cfn-init refuses a file whose content is empty.
            "files:\n  /var/log/x.log:\n    content: \"\"\n",
        ] {
            assert!(
                Config::parse(vec![("x.config".to_owned(), bad.to_owned())]).is_err(),
                "{bad}"
            );
        }
    }
}
