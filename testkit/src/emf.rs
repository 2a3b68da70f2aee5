//! A checker for CloudWatch Embedded Metric Format lines, written from
//! AWS's specification ("Specification: Embedded metric format", CloudWatch
//! User Guide, with its JSON schema): what CloudWatch Logs would refuse to
//! turn into metrics, it refuses with the rule that was broken.

use serde_json::Value;

/// The units a metric definition may name (the schema's pattern).
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// One metric value a line carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// When, in milliseconds since 1970 (`_aws.Timestamp`).
    pub timestamp: u64,
    /// The metric's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its unit (`None` when the definition names none).
    pub unit: String,
    /// The dimension sets, each as (name, value) pairs.
    pub dimensions: Vec<Vec<(String, String)>>,
    /// Its values: one for a number, each element for an array.
    pub values: Vec<f64>,
}

impl Metric {
    /// The value of dimension `key` in the metric's first dimension set.
    pub fn dimension(&self, key: &str) -> Option<&str> {
        self.dimensions
            .first()?
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// Checks one log event against the specification and returns the metrics
/// CloudWatch would extract from it; `Err` names the broken rule.
pub fn parse(line: &str) -> Result<Vec<Metric>, String> {
    let root: Value = serde_json::from_str(line)
        .map_err(|error| format!("the event must be one JSON object and nothing else: {error}"))?;
    let root = root
        .as_object()
        .ok_or("the root node must be a JSON object")?;
    let aws = root
        .get("_aws")
        .and_then(Value::as_object)
        .ok_or("the root node must have an object member _aws")?;
    only(aws, &["Timestamp", "CloudWatchMetrics"], "_aws")?;
    let timestamp = aws
        .get("Timestamp")
        .and_then(Value::as_u64)
        .ok_or("_aws.Timestamp must be an integer: milliseconds since 1970")?;
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .ok_or("_aws.CloudWatchMetrics must be an array")?;
    let mut metrics = Vec::new();
    for directive in directives {
        let directive = directive
            .as_object()
            .ok_or("a MetricDirective must be an object")?;
        only(
            directive,
            &["Namespace", "Dimensions", "Metrics"],
            "MetricDirective",
        )?;
        let namespace = text(directive.get("Namespace"), 255, "Namespace")?;
        let sets = directive
            .get("Dimensions")
            .and_then(Value::as_array)
            .filter(|sets| !sets.is_empty())
            .ok_or("Dimensions must be a non-empty array of DimensionSets")?;
        let mut dimensions = Vec::new();
        for set in sets {
            let set = set.as_array().ok_or("a DimensionSet must be an array")?;
            if set.len() > 9 {
                return Err("a DimensionSet must not hold more than 9 keys".into());
            }
            let mut pairs = Vec::new();
            for key in set {
                let key = text(Some(key), 255, "a dimension key")?;
                let value = root.get(&key).and_then(Value::as_str).ok_or_else(|| {
                    format!("dimension {key} must be a string member of the root")
                })?;
                pairs.push((key, value.to_owned()));
            }
            dimensions.push(pairs);
        }
        let definitions = directive
            .get("Metrics")
            .and_then(Value::as_array)
            .ok_or("Metrics must be an array")?;
        if definitions.len() > 100 {
            return Err("Metrics must not hold more than 100 definitions".into());
        }
        for definition in definitions {
            let definition = definition
                .as_object()
                .ok_or("a MetricDefinition must be an object")?;
            only(definition, &["Name", "Unit"], "MetricDefinition")?;
            let name = text(definition.get("Name"), 255, "a metric Name")?;
            let unit = match definition.get("Unit") {
                None => "None".to_owned(),
                Some(unit) => {
                    let unit = unit.as_str().unwrap_or_default();
                    if !UNITS.contains(&unit) {
                        return Err(format!("{name}: Unit {unit:?} is not a CloudWatch unit"));
                    }
                    unit.to_owned()
                }
            };
            let values = match root.get(&name) {
                Some(Value::Number(number)) => vec![number.as_f64().unwrap_or(f64::NAN)],
                Some(Value::Array(items)) if items.len() <= 100 => items
                    .iter()
                    .map(|item| item.as_f64().ok_or(()))
                    .collect::<Result<_, ()>>()
                    .map_err(|()| format!("{name}: every element must be a number"))?,
                Some(Value::Array(_)) => {
                    return Err(format!(
                        "{name}: an array must not hold more than 100 values"
                    ));
                }
                _ => {
                    return Err(format!(
                        "{name} must be a root member holding a number or an array of numbers"
                    ));
                }
            };
            metrics.push(Metric {
                timestamp,
                namespace: namespace.clone(),
                name,
                unit,
                dimensions: dimensions.clone(),
                values,
            });
        }
    }
    Ok(metrics)
}

/// Refuses members of `object` outside `known` (the specification's objects
/// "MUST NOT contain any additional members").
fn only(object: &serde_json::Map<String, Value>, known: &[&str], what: &str) -> Result<(), String> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(format!("{what} must not have a member {key}")),
        None => Ok(()),
    }
}

/// A string of 1 to `longest` characters.
fn text(value: Option<&Value>, longest: usize, what: &str) -> Result<String, String> {
    value
        .and_then(Value::as_str)
        .filter(|text| (1..=longest).contains(&text.chars().count()))
        .map(str::to_owned)
        .ok_or_else(|| format!("{what} must be a string of 1 to {longest} characters"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's own example from the specification.
    const EXAMPLE: &str = r#"{"_aws":{"Timestamp":1574109732004,"CloudWatchMetrics":[{"Namespace":"lambda-function-metrics","Dimensions":[["functionVersion"]],"Metrics":[{"Name":"time","Unit":"Milliseconds"}]}]},"functionVersion":"$LATEST","time":100,"requestId":"989ffbf8-9ace-4817-a57c-e4dd734019ee"}"#;

    #[test]
    fn the_specifications_example_passes() {
        let metrics = parse(EXAMPLE).expect("valid");
        assert_eq!(metrics.len(), 1);
        assert_eq!(metrics[0].values, [100.0]);
        assert_eq!(
            metrics[0].dimensions,
            [[("functionVersion".to_owned(), "$LATEST".to_owned())]]
        );
    }

    #[test]
    fn each_broken_rule_is_refused() {
        // (what the example becomes, what the refusal must name)
        let cases = [
            (format!("web: {EXAMPLE}"), "one JSON object"),
            (EXAMPLE.replace("1574109732004", "\"now\""), "Timestamp"),
            (
                EXAMPLE.replace("\"Milliseconds\"", "\"ms\""),
                "not a CloudWatch unit",
            ),
            (
                EXAMPLE.replace("\"time\":100", "\"time\":{\"Values\":[1],\"Counts\":[2]}"),
                "time must be a root member holding a number",
            ),
            (
                EXAMPLE.replace("\"$LATEST\"", "7"),
                "dimension functionVersion must be a string",
            ),
            (
                EXAMPLE.replace("\"Metrics\":[", "\"Resolution\":1,\"Metrics\":["),
                "must not have a member Resolution",
            ),
            (
                EXAMPLE.replace("\"time\":100", &format!("\"time\":{:?}", vec![1; 101])),
                "more than 100 values",
            ),
        ];
        for (line, rule) in cases {
            let error = parse(&line).expect_err(&line);
            assert!(error.contains(rule), "{line}: {error}");
        }
    }
}
