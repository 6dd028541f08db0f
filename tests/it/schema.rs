//! The manifest JSON Schema: the committed file is what `schema manifest` prints, and every
//! manifest in `manifests/` validates against it with an independent validator (Python's
//! `jsonschema`; skipped with a message when it is not installed).

use std::path::Path;

use crate::helpers::{qc, tempdir};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn generated() -> String {
    let home = tempdir();
    let out = qc(home.path()).args(["schema", "manifest"]).output().expect("the binary runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let committed = std::fs::read_to_string(root().join("schema/manifest.schema.json")).expect("schema file");
    assert_eq!(committed, generated(), "run `qc-offboard schema manifest > schema/manifest.schema.json`");
}

/// Validate YAML documents (converted to JSON here, as the manifest loader reads them: dates
/// stay text) against the schema; the validator's verdict per document.
fn validate(schema: &str, docs: &[(String, String)]) -> Option<Vec<bool>> {
    const SCRIPT: &str = "import json, sys\n\
        from jsonschema import Draft202012Validator\n\
        schema = json.load(open(sys.argv[1]))\n\
        Draft202012Validator.check_schema(schema)\n\
        v = Draft202012Validator(schema)\n\
        print(json.dumps([v.is_valid(json.load(open(p))) for p in sys.argv[2:]]))\n";
    let probe = std::process::Command::new("python3").args(["-c", "import jsonschema"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        println!("skipped: python3 with jsonschema is not installed (.ci/run installs it)");
        return None;
    }
    let dir = tempdir();
    let schema_path = dir.path().join("schema.json");
    std::fs::write(&schema_path, schema).unwrap();
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", SCRIPT]).arg(&schema_path);
    for (i, (name, yaml)) in docs.iter().enumerate() {
        let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        let path = dir.path().join(format!("{i}.json"));
        std::fs::write(&path, value.to_string()).unwrap();
        cmd.arg(path);
    }
    let out = cmd.output().expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).expect("verdicts"))
}

#[test]
fn every_example_manifest_validates_and_a_wrong_shape_does_not() {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(root().join("manifests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            docs.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
        }
    }
    assert!(docs.len() >= 3, "{docs:?}");
    let examples = docs.len();
    docs.push(("unknown field".into(), "version: 1\nclusters: [{id: cl-a, zone: sh1a, userz: [bob]}]\n".into()));
    docs.push(("list as a user".into(), "version: 1\nclusters: [{id: cl-a, zone: sh1a, users: [[bob]]}]\n".into()));
    let Some(verdicts) = validate(&generated(), &docs) else { return };
    for (i, (name, _)) in docs.iter().enumerate() {
        assert_eq!(verdicts[i], i < examples, "{name}");
    }
}
