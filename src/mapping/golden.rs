//! Golden tests of the shipped mappings: for every `mappings/tests/<mapping>/<case>.input.json`
//! (a `{snapshot, entry, now}` document, see [`super::cli::parse_json_input`]), the mapping
//! `mappings/<mapping>.toml` must turn the named entry and the snapshot's groups into exactly
//! `<case>.expected.json`. Regenerate the expected files after an intended change with
//! `IRONBRIDGE_UPDATE_GOLDEN=1 cargo test --lib mapping::golden` and review the diff.
//!
//! What does not live here: unit tests of single filters and rules (beside their code).

use super::cli::read_json_input;
use super::Mapping;
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings")
}

/// What one golden case produces.
fn run_case(mapping: &Mapping, input: &Path) -> Json {
    let input = read_json_input(input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let snapshot = input.snapshot.expect("golden inputs carry a snapshot");
    let now = input.now.expect("golden inputs fix `now`");
    let prepared = match mapping.prepare(&snapshot, now) {
        Ok(p) => p,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    let evaluation = match prepared.evaluate(&input.entry) {
        Ok(ev) => serde_json::to_value(ev).expect("evaluation serializes"),
        Err(e) => json!({ "error": e.to_string() }),
    };
    let groups = serde_json::to_value(prepared.groups()).expect("groups serialize");
    json!({ "evaluation": evaluation, "groups": groups })
}

#[test]
fn shipped_mappings_match_their_golden_files() {
    let update = std::env::var_os("IRONBRIDGE_UPDATE_GOLDEN").is_some();
    let mut mappings: Vec<PathBuf> = std::fs::read_dir(root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    mappings.sort();
    assert_eq!(mappings.len(), 4, "four shipped mappings: {mappings:?}");
    let mut failures = Vec::new();
    let mut cases = 0;
    for mp in &mappings {
        let name = mp.file_stem().unwrap().to_string_lossy().to_string();
        // Golden files name the mapping by its path relative to the repository.
        let mapping = Mapping::load(Path::new(&format!("mappings/{name}.toml")))
            .or_else(|_| Mapping::load(mp))
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = root().join("tests").join(&name);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".input.json"))
            .collect();
        inputs.sort();
        assert!(
            inputs.len() >= 3,
            "{name}: at least three golden cases, found {}",
            inputs.len()
        );
        for input in inputs {
            cases += 1;
            let expected_path = PathBuf::from(
                input
                    .to_string_lossy()
                    .replace(".input.json", ".expected.json"),
            );
            let got = run_case(&mapping, &input);
            if update {
                let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
                std::fs::write(&expected_path, text).unwrap();
                continue;
            }
            let expected: Json = std::fs::read_to_string(&expected_path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
            if got != expected {
                failures.push(format!(
                    "{}\n--- expected\n{}\n--- got\n{}",
                    input.display(),
                    serde_json::to_string_pretty(&expected).unwrap(),
                    serde_json::to_string_pretty(&got).unwrap()
                ));
            }
        }
    }
    assert!(cases >= 12);
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ (IRONBRIDGE_UPDATE_GOLDEN=1 regenerates):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
