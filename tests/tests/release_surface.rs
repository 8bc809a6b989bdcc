//! The programs users run carry no test machinery: built on their own (as
//! `cargo build --release -p s3block-fuse` builds the mount program), they
//! enable neither the store's nor the cache's `testing` feature nor the
//! mount program's `fault-injection`, and the only code that reads
//! `S3BLOCK_INJECT_FAULTS` is compiled under the store's `testing` feature.
//!
//! This package's own `rel-*` programs do inject faults: it turns the
//! features on, which is why the check asks cargo how the programs resolve
//! alone rather than looking at a binary of this workspace build (cargo
//! unifies features across the packages it builds together).

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::path::{Path, PathBuf};
use std::process::Command;

/// The features that bring test machinery in.
const TEST_FEATURES: [&str; 3] = [
    "s3block-store feature \"testing\"",
    "s3block-cache feature \"testing\"",
    "s3block-fuse feature \"fault-injection\"",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace holds the tests package").to_owned()
}

/// `cargo tree` of `package` as it builds on its own: normal and build
/// dependencies with their features, one per line.
fn features_of(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args(["tree", "-p", package, "-e", "normal,build,features", "--prefix", "none"])
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_programs_built_alone_enable_no_test_feature() {
    for program in ["s3block-fuse", "s3block-nbd", "s3block-cli"] {
        let tree = features_of(program);
        assert!(tree.contains("s3block-store feature \"default\""), "{program}: unexpected tree:\n{tree}");
        for feature in TEST_FEATURES {
            assert!(!tree.contains(feature), "{program} built alone enables {feature}:\n{tree}");
        }
    }
    // The check sees features: this package's programs do inject faults.
    let tests = features_of("s3block-tests");
    assert!(tests.contains(TEST_FEATURES[0]) && tests.contains(TEST_FEATURES[2]), "{tests}");
}

/// The `.rs` files under `dir`, its subdirectories (modules such as the
/// cache's `frontend/`) included, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Lines of code (comments left out) in the `.rs` files under `dir`, with
/// their file and the code line before each.
fn code_lines(dir: &Path) -> Vec<(PathBuf, String, String)> {
    let mut found = Vec::new();
    let files = rust_files(dir);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut previous = String::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("//")) {
            found.push((file.clone(), previous.clone(), line.to_owned()));
            previous = line.to_owned();
        }
    }
    found
}

#[test]
fn only_code_behind_the_testing_feature_reads_the_fault_variable() {
    const GATE: &str = "#[cfg(feature = \"testing\")]";
    let root = workspace();
    // Every crate the mount program and the NBD server are built from.
    for krate in ["s3block-core", "s3block-store", "s3block-cache", "s3block-fuse", "s3block-nbd"] {
        // A file's unit tests (`#[cfg(test)] mod tests {`, last in the file
        // by convention) are never built into a program: from there on the
        // file may use the fault store.
        let mut in_tests: Option<PathBuf> = None;
        for (file, previous, line) in code_lines(&root.join(krate).join("src")) {
            if previous == "#[cfg(test)]" && line == "mod tests {" {
                in_tests = Some(file.clone());
            }
            if in_tests.as_ref() == Some(&file) {
                continue;
            }
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            // The modules that exist only with the feature (their `mod` lines
            // in lib.rs are checked like any other line).
            if krate == "s3block-store" && ["faultenv.rs", "fault.rs", "conformance.rs"].contains(&name) {
                continue;
            }
            assert!(
                !line.contains("S3BLOCK_INJECT_FAULTS"),
                "{} reads the fault variable outside the store's faultenv module: {line}",
                file.display()
            );
            let uses = [
                "faultenv",
                "INJECT_FAULTS_ENV",
                "FaultStore",
                "FaultConfig",
                "FaultSpec",
                "InjectedFault",
                "mod fault;",
                "mod conformance;",
                " fault::",
                "crate::fault::",
            ];
            if uses.iter().any(|u| line.contains(u)) {
                assert!(
                    previous == GATE || previous.starts_with("#[cfg(all(feature = \"testing\""),
                    "{}: `{line}` is not behind {GATE} (the line before it is `{previous}`)",
                    file.display()
                );
            }
        }
    }
}
