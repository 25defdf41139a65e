//! Edits of one container definition that merge into what the user wrote: an entry is changed
//! where it is, a missing one goes last, nothing else moves, so running them twice changes
//! nothing the second time.

use serde_json::{Map, Value, json};

/// A JSON object (a task or container definition), in its original field order.
pub(super) type Object = Map<String, Value>;

/// The array under `key`. Made (last in the object) when absent; a value of another type is
/// invalid for ECS anyway and becomes an empty array where it was.
fn array_mut<'a>(obj: &'a mut Object, key: &str) -> &'a mut Vec<Value> {
    let slot = obj.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    match slot {
        Value::Array(a) => a,
        _ => unreachable!("made an array just above"),
    }
}

/// The object under `key`, made (last) when absent or not an object.
fn object_mut<'a>(obj: &'a mut Object, key: &str) -> &'a mut Object {
    let slot = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(o) => o,
        _ => unreachable!("made an object just above"),
    }
}

/// `v[key]` as a string, if it is one.
pub(super) fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Whether the container defines variable `name`, in `environment` or as one of its
/// `secrets` (both become environment variables of the container).
pub(super) fn defines_env(c: &Object, name: &str) -> bool {
    ["environment", "secrets"].iter().any(|key| {
        c.get(*key)
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|e| str_field(e, "name") == Some(name)))
    })
}

/// Sets variable `name` in `environment`: its value where it is, or a new entry last.
pub(super) fn set_env(c: &mut Object, name: &str, value: &str) {
    let env = array_mut(c, "environment");
    match env.iter_mut().find(|e| str_field(e, "name") == Some(name)) {
        Some(Value::Object(e)) => {
            e.insert("value".to_owned(), json!(value));
        }
        _ => env.push(json!({"name": name, "value": value})),
    }
}

/// Adds variable `name` unless the container already defines it: a user's value wins.
pub(super) fn add_env_if_absent(c: &mut Object, name: &str, value: &str) {
    if !defines_env(c, name) {
        set_env(c, name, value);
    }
}

/// Makes the container wait for `target` to be `HEALTHY`: an entry for `target` keeps its
/// place and gets that condition; otherwise a new entry goes last.
pub(super) fn depend_on_healthy(c: &mut Object, target: &str) {
    let deps = array_mut(c, "dependsOn");
    match deps
        .iter_mut()
        .find(|d| str_field(d, "containerName") == Some(target))
    {
        Some(Value::Object(d)) => {
            d.insert("condition".to_owned(), json!("HEALTHY"));
        }
        _ => deps.push(json!({"containerName": target, "condition": "HEALTHY"})),
    }
}

/// Links `target` under its own name (bridge mode), so the container resolves the host name
/// `target`. `"target"` and `"target:target"` both do; `"target:other"` does not (Docker
/// adds only the alias to `/etc/hosts`, and ECS's Docker name is not `target`).
pub(super) fn ensure_link(c: &mut Object, target: &str) {
    let links = array_mut(c, "links");
    let aliased = format!("{target}:{target}");
    if !links
        .iter()
        .any(|l| l.as_str() == Some(target) || l.as_str() == Some(aliased.as_str()))
    {
        links.push(json!(target));
    }
}

/// Sets a Docker label.
pub(super) fn set_label(c: &mut Object, key: &str, value: &str) {
    object_mut(c, "dockerLabels").insert(key.to_owned(), json!(value));
}

/// A Docker label's value.
pub(super) fn label<'a>(c: &'a Object, key: &str) -> Option<&'a str> {
    c.get("dockerLabels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

/// Adds globs to the comma-separated label `key`, after the ones it has, skipping those
/// already there. An unchanged label is left byte for byte as it was.
pub(super) fn merge_list_label(c: &mut Object, key: &str, globs: &[String]) {
    let current = label(c, key).unwrap_or_default().to_owned();
    let mut items: Vec<&str> = current
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let before = items.len();
    for g in globs {
        if !items.contains(&g.as_str()) {
            items.push(g);
        }
    }
    if items.len() != before {
        let joined = items.join(",");
        set_label(c, key, &joined);
    }
}

/// Mounts `volume` at `path`: the first entry with that volume or that path becomes this
/// mount where it is, later ones go (two mounts on one path are an error in Docker).
pub(super) fn set_mount(c: &mut Object, volume: &str, path: &str, read_only: bool) {
    let ours = json!({"sourceVolume": volume, "containerPath": path, "readOnly": read_only});
    let mounts = array_mut(c, "mountPoints");
    let matches = |m: &Value| {
        str_field(m, "sourceVolume") == Some(volume) || str_field(m, "containerPath") == Some(path)
    };
    match mounts.iter().position(matches) {
        Some(first) => {
            mounts[first] = ours;
            let mut i = 0;
            mounts.retain(|m| {
                i += 1;
                i - 1 == first || !matches(m)
            });
        }
        None => mounts.push(ours),
    }
}

/// Points `dependsOn` and `links` entries naming container `old` at `new` (the companion
/// renamed to its contract name). A link keeps the host name it gave: `old` becomes
/// `new:old`. A `dependsOn` entry that then repeats an earlier one goes.
pub(super) fn rename_references(c: &mut Object, old: &str, new: &str) {
    if let Some(Value::Array(deps)) = c.get_mut("dependsOn") {
        for d in deps.iter_mut() {
            if let Value::Object(d) = d
                && d.get("containerName").and_then(Value::as_str) == Some(old)
            {
                d.insert("containerName".to_owned(), json!(new));
            }
        }
        let mut seen = 0;
        deps.retain(|d| {
            let ours = str_field(d, "containerName") == Some(new);
            seen += usize::from(ours);
            !ours || seen == 1
        });
    }
    if let Some(Value::Array(links)) = c.get_mut("links") {
        for l in links.iter_mut() {
            let Some(s) = l.as_str() else { continue };
            let (name, alias) = s.split_once(':').unwrap_or((s, s));
            if name == old {
                *l = json!(format!("{new}:{alias}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Object {
        match v {
            Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn mounts_replace_in_place_and_drop_duplicates() {
        let mut c = obj(json!({"mountPoints": [
            {"sourceVolume": "data", "containerPath": "/data"},
            {"sourceVolume": "old", "containerPath": "/run/collector"},
            {"sourceVolume": "s", "containerPath": "/x"},
            {"sourceVolume": "s", "containerPath": "/y"},
        ]}));
        set_mount(&mut c, "s", "/run/collector", true);
        assert_eq!(
            Value::Object(c),
            json!({"mountPoints": [
                {"sourceVolume": "data", "containerPath": "/data"},
                {"sourceVolume": "s", "containerPath": "/run/collector", "readOnly": true},
            ]})
        );
    }

    #[test]
    fn list_label_merges_without_duplicates_and_keeps_unchanged_text() {
        let cases: &[(Option<&str>, &[&str], Option<&str>)] = &[
            (None, &["/a/*.log"], Some("/a/*.log")),
            (Some("/a/*.log, /b"), &["/b"], Some("/a/*.log, /b")),
            (
                Some("/a/*.log"),
                &["/b", "/a/*.log", "/c"],
                Some("/a/*.log,/b,/c"),
            ),
        ];
        for (before, globs, after) in cases {
            let mut c = obj(match before {
                Some(b) => json!({"dockerLabels": {"collector.logs": b}}),
                None => json!({}),
            });
            let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
            merge_list_label(&mut c, "collector.logs", &globs);
            assert_eq!(
                label(&c, "collector.logs"),
                *after,
                "{before:?} + {globs:?}"
            );
        }
    }

    #[test]
    fn renamed_companion_keeps_link_host_names_and_one_dependency() {
        let mut c = obj(json!({
            "dependsOn": [
                {"containerName": "shim", "condition": "START"},
                {"containerName": "db", "condition": "START"},
                {"containerName": "collector-companion", "condition": "HEALTHY"},
            ],
            "links": ["shim", "shim:metrics", "db"],
        }));
        rename_references(&mut c, "shim", "collector-companion");
        assert_eq!(
            Value::Object(c),
            json!({
                "dependsOn": [
                    {"containerName": "collector-companion", "condition": "START"},
                    {"containerName": "db", "condition": "START"},
                ],
                "links": ["collector-companion:shim", "collector-companion:metrics", "db"],
            })
        );
    }
}
