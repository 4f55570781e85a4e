//! Replays every input the fuzzers once found a problem with (fuzz/regressions/TARGET/), and the
//! hostile samples kept beside them, through the same entry points (src/fuzzing.rs).

use std::path::Path;

use release_coordinator::fuzzing;

/// A fuzz target: its name (its folder) and its entry point.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 6] = [
    ("trigger", fuzzing::trigger),
    ("config", fuzzing::config),
    ("comment", fuzzing::comment),
    ("github_payload", fuzzing::github_payload),
    ("gitlab_payload", fuzzing::gitlab_payload),
    ("yaml_edit", fuzzing::yaml_edit),
];

#[test]
fn every_kept_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (target, run) in TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
            .collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} fails again", f.display());
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len(), "only {replayed} inputs kept");
}
