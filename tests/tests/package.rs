//! The Debian package and the boot paths.
//!
//! - The package: built with cargo-deb from this build's programs
//!   (stripped copies of the test package's `rel-*` binaries, so no
//!   release build is needed; `scripts/package.sh` builds the release one
//!   from the same metadata), installed with `dpkg --root` into an empty
//!   root, and checked there: the programs run, the units name files that
//!   exist, `systemd-analyze verify` accepts the FUSE unit, the man pages,
//!   completions and examples are in place, Depends names fuse3. Then the
//!   FUSE unit's command lines run from that root, as systemd would run
//!   them, against a `file://` volume: mount, loop device, detach, stop.
//! - fstab: `mount -a -T FILE` with an s3block line mounts a volume through
//!   mount(8) and fuse3's helper, and a second line mounts ext4 on its file
//!   through a loop device; the data is there after a remount.
//!
//! Both need root, /dev/fuse and losetup; the package also cargo-deb
//! (`scripts/package.sh install`) and dpkg-dev. Under `CI=true` a missing
//! one fails the test, naming it.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use s3block_testkit::in_ci;
use s3block_testkit::kernel::{kernel_available, on_path};

const CLI: &str = env!("CARGO_BIN_EXE_rel-s3block");
const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const NBD: &str = env!("CARGO_BIN_EXE_rel-s3block-nbd");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace holds the tests package").to_owned()
}

/// Skips (or fails under CI) naming what is missing.
fn missing(what: &str) -> bool {
    let message = format!("cannot run this test: missing {what}");
    assert!(!in_ci(), "CI=true and {message}");
    eprintln!("SKIPPED (not under CI): {message}");
    true
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The cargo-deb binary: `S3BLOCK_CARGO_DEB`, else where
/// `scripts/package.sh install` puts it.
fn cargo_deb() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("S3BLOCK_CARGO_DEB") {
        return Some(PathBuf::from(path));
    }
    let cached = PathBuf::from(std::env::var_os("HOME")?).join(".cache/s3block/cargo-deb/bin/cargo-deb");
    cached.exists().then_some(cached)
}

/// Runs `cmd`, failing the test with its output unless it succeeds;
/// returns its stdout.
fn check(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until no process's command line contains `needle` (a mount
/// program that is storing and releasing its lock after the unmount).
fn wait_gone(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let alive = std::fs::read_dir("/proc").unwrap().filter_map(Result::ok).any(|entry| {
            let name = entry.file_name();
            name.to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                && std::fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
                && !std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| s.contains(") Z "))
        });
        if !alive {
            return;
        }
        assert!(Instant::now() < deadline, "a process naming {needle} still runs after 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_mounted(dir: &Path) -> bool {
    s3block_testkit::kernel::is_mounted(dir)
}

/// Unmounts (lazily) whatever is still mounted on these directories when
/// a test fails half-way.
struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            if is_mounted(dir) {
                let _ = Command::new("umount").arg("-l").arg(dir).status();
            }
        }
    }
}

// --- the package -----------------------------------------------------------

/// Builds the .deb from this build's programs; returns its path (in `stage`).
fn build_package(cargo_deb: &Path, stage: &Path) -> PathBuf {
    // cargo-deb reads the programs from the target directory's release/
    // (its name for the build), here a staging directory.
    let release = stage.join("release");
    std::fs::create_dir_all(&release).unwrap();
    for (from, name) in [(CLI, "s3block"), (FUSE, "s3block-fuse"), (NBD, "s3block-nbd")] {
        // Stripped copies: the debug binaries are 150 MB each.
        check(Command::new("strip").arg("-o").arg(release.join(name)).arg(from));
    }
    s3block_docgen::write_all(&release.join("s3block-docs")).unwrap();
    let deb = stage.join("s3block.deb");
    let started = Instant::now();
    check(
        Command::new(cargo_deb)
            .current_dir(workspace())
            .env("CARGO_TARGET_DIR", stage)
            .args(["deb", "-p", "s3block-cli", "--no-build", "--no-strip", "--fast", "--quiet", "--output"])
            .arg(&deb),
    );
    eprintln!(
        "cargo deb: {:.1} s, {} KiB",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&deb).unwrap().len() / 1024
    );
    deb
}

/// Installs `deb` with dpkg into `root`, an empty directory with a dpkg
/// database of nothing (so fuse3 and libc are forced past).
fn install(deb: &Path, root: &Path) {
    let db = root.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(db.join(dir)).unwrap();
    }
    std::fs::write(db.join("status"), "").unwrap();
    std::fs::write(db.join("available"), "").unwrap();
    check(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--log=/dev/null", "--force-depends", "--install"])
            .arg(deb),
    );
    let status = std::fs::read_to_string(db.join("status")).unwrap();
    assert!(
        status.contains("Package: s3block\n") && status.contains("Status: install ok installed"),
        "{status}"
    );
}

/// The words of a unit's `Key=` lines (first match of each line), with
/// systemd's `-`, `@`, `+` and `!` prefixes dropped from the program.
fn unit_lines<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    unit.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).collect()
}

fn program_of(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or_default().trim_start_matches(['-', '@', '+', '!'])
}

#[test]
fn debian_package_installs_programs_units_pages_and_completions() {
    if !is_root() && missing("root (dpkg --root, mounts and loop devices)") {
        return;
    }
    for tool in ["dpkg", "dpkg-deb", "dpkg-shlibdeps", "strip", "systemd-analyze"] {
        if !on_path(tool) && missing(&format!("{tool} (not on PATH; scripts/test.sh installs it)")) {
            return;
        }
    }
    let Some(cargo_deb) = cargo_deb() else {
        missing("cargo-deb (run scripts/package.sh install, or set S3BLOCK_CARGO_DEB)");
        return;
    };
    if !kernel_available(&["losetup"]) {
        return;
    }
    let stage = tempfile::tempdir().unwrap();
    let deb = build_package(&cargo_deb, stage.path());

    // The control file.
    let control = check(Command::new("dpkg-deb").arg("--field").arg(&deb));
    assert!(control.contains("Package: s3block\n"), "{control}");
    let depends = control.lines().find(|l| l.starts_with("Depends: ")).unwrap_or_else(|| panic!("{control}"));
    assert!(depends.contains("fuse3") && depends.contains("libc6"), "{depends}");

    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    install(&deb, root);

    // The programs run from the root.
    for name in ["s3block", "s3block-fuse", "s3block-nbd"] {
        let path = root.join("usr/bin").join(name);
        let version = check(Command::new(&path).arg("--version"));
        assert!(
            version.starts_with(name) && version.contains(env!("CARGO_PKG_VERSION")),
            "{name}: {version}"
        );
    }
    let helper = root.join("usr/lib/s3block/s3block-volume");
    assert!(
        std::fs::metadata(&helper).unwrap().permissions().mode() & 0o111 != 0,
        "{helper:?} is not executable"
    );

    // The units name programs that exist: the package's in the root, the
    // others' (mkdir, nbd-client, ...) from their Debian packages.
    let units = root.join("usr/lib/systemd/system");
    for unit in ["s3block@.service", "s3block-nbd@.service", "s3block-nbd-client@.service"] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap_or_else(|e| panic!("{unit}: {e}"));
        let mut programs = 0;
        for key in ["ExecStartPre", "ExecStart", "ExecStartPost", "ExecStop"] {
            for line in unit_lines(&text, key) {
                let program = program_of(line);
                assert!(program.starts_with('/'), "{unit}: {key} names no absolute path: {line}");
                if program.contains("s3block") {
                    let installed = root.join(program.trim_start_matches('/'));
                    assert!(
                        installed.is_file(),
                        "{unit}: {key} names {program}, which the package does not install"
                    );
                    programs += 1;
                } else {
                    let known = ["/bin/mkdir", "/bin/sh", "/sbin/modprobe", "/usr/sbin/nbd-client"];
                    assert!(known.contains(&program), "{unit}: {key} names {program}, from no known package");
                }
            }
        }
        // The client unit runs only nbd-client; the others, the package's programs.
        let expected = if unit.starts_with("s3block-nbd-client") { 0 } else { 1 };
        assert!(programs >= expected, "{unit} runs none of the package's programs:\n{text}");
    }
    verify_fuse_unit(root, &units.join("s3block@.service"));

    // Man pages (gzipped by cargo-deb), completions, examples.
    let man = root.join("usr/share/man/man1");
    for page in ["s3block", "s3block-fuse", "s3block-nbd", "s3block-create", "s3block-cache-inspect"] {
        let path = man.join(format!("{page}.1.gz"));
        assert!(path.is_file(), "no man page {}", path.display());
    }
    for name in ["s3block", "s3block-fuse", "s3block-nbd"] {
        for path in [
            format!("usr/share/bash-completion/completions/{name}"),
            format!("usr/share/zsh/vendor-completions/_{name}"),
            format!("usr/share/fish/vendor_completions.d/{name}.fish"),
        ] {
            let text = std::fs::read_to_string(root.join(&path)).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(text.contains(name), "{path} does not complete {name}");
        }
    }
    for example in ["s3block-volume.conf.example", "s3block-nbd.conf.example", "fstab.example"] {
        assert!(root.join("usr/share/doc/s3block/examples").join(example).is_file(), "no example {example}");
    }

    run_fuse_unit(root, &units.join("s3block@.service"));
}

/// `systemd-analyze verify` of the installed FUSE unit. It runs without a
/// running systemd but looks for the programs on this machine, not in the
/// root: the only complaints allowed are programs missing here that the
/// root holds.
fn verify_fuse_unit(root: &Path, unit: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("s3block@test.service");
    std::fs::copy(unit, &copy).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let program = line
            .split_once("Command ")
            .and_then(|(_, rest)| rest.split_once(" is not executable"))
            .map(|(program, _)| program)
            .unwrap_or_else(|| panic!("systemd-analyze verify: {line}\n{stderr}"));
        assert!(root.join(program.trim_start_matches('/')).is_file(), "systemd-analyze verify: {line}");
    }
}

/// The unit's `EnvironmentFile` as systemd reads it: `KEY=VALUE` lines.
fn read_environment(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// A unit's command line as systemd expands it: `%i`, `${VAR}` as one
/// word, `$VAR` split on spaces; the package's programs taken from `root`.
fn expand(line: &str, instance: &str, env: &HashMap<String, String>, root: &Path) -> Vec<String> {
    let line = line.trim_start_matches(['-', '@', '+', '!']).replace("%i", instance);
    let mut words = Vec::new();
    for word in line.split_whitespace() {
        if let Some(name) = word.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            words.extend(
                env.get(name).map(String::as_str).unwrap_or_default().split_whitespace().map(str::to_owned),
            );
            continue;
        }
        let mut word = word.to_owned();
        for (key, value) in env {
            word = word.replace(&format!("${{{key}}}"), value);
        }
        words.push(word);
    }
    if words[0].contains("s3block") {
        words[0] = root.join(words[0].trim_start_matches('/')).display().to_string();
    }
    words
}

/// Runs the FUSE unit's command lines from the root as systemd would for
/// `s3block@pkgtest`: the mount (waiting for READY=1 with Type=notify, or
/// for the program to return with Type=forking), the loop device, then the
/// stop (detach, then SIGTERM to the mount program), against a file://
/// volume. The volume helper reads its configuration from
/// `S3BLOCK_CONF_DIR` instead of /etc/s3block.
fn run_fuse_unit(root: &Path, unit: &Path) {
    let unit_text = std::fs::read_to_string(unit).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("store");
    let fuse_dir = scratch.path().join("run/vol");
    // The packaged example, with this test's store, directory and options
    // in place of its own (quoted as the example quotes them).
    let example =
        std::fs::read_to_string(root.join("usr/share/doc/s3block/examples/s3block-volume.conf.example"))
            .unwrap();
    let mut conf = String::new();
    for line in example.lines() {
        let line = match line.split_once('=').map(|(k, _)| k) {
            Some("STORE") => format!("STORE=file://{}", store.display()),
            Some("FUSE_DIR") => format!("FUSE_DIR={}", fuse_dir.display()),
            Some("OPTIONS") => {
                let quote = if line.starts_with("OPTIONS=\"") { "\"" } else { "" };
                let log = scratch.path().join("mount.log");
                format!("OPTIONS={quote}--size=64M --cache-size=8M --log-file={}{quote}", log.display())
            }
            _ => line.to_owned(),
        };
        conf.push_str(&line);
        conf.push('\n');
    }
    std::fs::write(scratch.path().join("pkgtest.conf"), &conf).unwrap();
    let mut env = read_environment(&conf);
    env.insert("S3BLOCK_CONF_DIR".into(), scratch.path().display().to_string());
    let _unmount = Unmount(vec![fuse_dir.clone()]);
    let run = |key: &str| {
        for line in unit_lines(&unit_text, key) {
            let argv = expand(line, "pkgtest", &env, root);
            check(Command::new(&argv[0]).args(&argv[1..]).envs(&env));
        }
    };
    let log = || std::fs::read_to_string(scratch.path().join("mount.log")).unwrap_or_default();

    run("ExecStartPre");
    let start = unit_lines(&unit_text, "ExecStart");
    assert_eq!(start.len(), 1, "one ExecStart: {start:?}");
    let argv = expand(start[0], "pkgtest", &env, root);
    let notify = unit_text.lines().any(|l| l == "Type=notify");
    let mut main: Option<Child> = None;
    if notify {
        let socket_path = scratch.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .envs(&env)
            .env("NOTIFY_SOCKET", &socket_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = socket.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1")
            {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{argv:?} exited ({status}) before READY=1; log:\n{}", log());
            }
            assert!(Instant::now() < deadline, "no READY=1 from {argv:?} in 60 s; log:\n{}", log());
        }
        main = Some(child);
    } else {
        check(Command::new(&argv[0]).args(&argv[1..]).envs(&env).stdout(Stdio::null()).stderr(Stdio::null()));
    }
    let file = fuse_dir.join("file");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 << 20, "log:\n{}", log());

    run("ExecStartPost");
    let loops = check(Command::new("losetup").arg("-j").arg(&file));
    assert!(loops.contains("/dev/loop"), "no loop device on {}: {loops}", file.display());

    run("ExecStop");
    let loops = check(Command::new("losetup").arg("-j").arg(&file));
    assert!(loops.trim().is_empty(), "the loop device is still attached: {loops}");
    // systemd then sends SIGTERM to the main process.
    let needle = fuse_dir.display().to_string();
    match main.as_mut() {
        Some(child) => {
            check(Command::new("kill").args(["-TERM", &child.id().to_string()]));
            let status = child.wait().unwrap();
            assert!(status.success(), "s3block-fuse after SIGTERM: {status}; log:\n{}", log());
        }
        None => {
            check(Command::new("pkill").args(["-TERM", "-f", &needle]));
        }
    }
    wait_gone(&needle);
    assert!(!is_mounted(&fuse_dir), "{} is still mounted", fuse_dir.display());
    let log = log();
    assert!(log.contains("mounted") && !log.contains("ERROR"), "the mount's log:\n{log}");
}

// --- fstab -----------------------------------------------------------------

/// `mount -a -T fstab` with stdout and stderr in a file: the mount program
/// goes to the background holding them, so a pipe would never close.
fn mount_all(fstab: &Path, scratch: &Path) {
    let out = scratch.join("mount-a.out");
    let file = std::fs::File::create(&out).unwrap();
    let status = Command::new("mount")
        .arg("-a")
        .arg("-T")
        .arg(fstab)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "mount -a -T {}: {status}\n{}",
        fstab.display(),
        std::fs::read_to_string(&out).unwrap()
    );
}

fn unmount(dir: &Path) {
    check(Command::new("umount").arg(dir));
}

#[test]
fn fstab_lines_mount_the_volume_and_a_filesystem_on_it() {
    if !is_root() && missing("root (mount -a)") {
        return;
    }
    if !kernel_available(&["mount", "mkfs.ext4", "losetup", "mount.fuse3"]) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let (store, fuse_dir, fs_dir) = (s.join("store"), s.join("fuse"), s.join("fs"));
    for dir in [&fuse_dir, &fs_dir] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let _unmount = Unmount(vec![fuse_dir.clone(), fs_dir.clone()]);
    // The README's lines, with the program named by path (`fuse` type,
    // PROGRAM#STORE): mount(8) runs helpers without PATH, so the
    // `fuse.s3block-fuse` form finds only /usr/bin or /usr/local/bin.
    let fuse_line = format!(
        "{FUSE}#file://{}  {}  fuse  _netdev,size=64M,cache-size=8M,x-systemd.requires=network-online.target,nofail  0 0\n",
        store.display(),
        fuse_dir.display()
    );
    let fs_line = format!(
        "{}/file  {}  ext4  loop,_netdev,discard,x-systemd.requires-mounts-for={}  0 0\n",
        fuse_dir.display(),
        fs_dir.display(),
        fuse_dir.display()
    );
    let fstab = s.join("fstab");
    let needle = format!("file://{}", store.display());

    // 1. The volume alone, then ext4 made on its file.
    std::fs::write(&fstab, format!("# s3block test\n{fuse_line}")).unwrap();
    mount_all(&fstab, s);
    assert!(is_mounted(&fuse_dir), "mount -a did not mount {}", fuse_dir.display());
    let file = fuse_dir.join("file");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 << 20);
    check(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&file));
    unmount(&fuse_dir);
    wait_gone(&needle);

    // 2. Both lines, in order: the volume, then the filesystem on it.
    std::fs::write(&fstab, format!("{fuse_line}{fs_line}")).unwrap();
    mount_all(&fstab, s);
    assert!(is_mounted(&fuse_dir) && is_mounted(&fs_dir), "mount -a mounted not both");
    let data = s3block_testkit::kernel::pattern(19, 1 << 20);
    std::fs::write(fs_dir.join("data"), &data).unwrap();
    unmount(&fs_dir);
    unmount(&fuse_dir);
    wait_gone(&needle);

    // 3. Mounted again from the same lines, the data is there.
    mount_all(&fstab, s);
    assert_eq!(std::fs::read(fs_dir.join("data")).unwrap(), data, "the file differs after a remount");
    unmount(&fs_dir);
    unmount(&fuse_dir);
    wait_gone(&needle);
}
