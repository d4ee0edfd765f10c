//! `scripts/setup` on machines we make up: stand-in `ldconfig`, `apt-get`, `sudo` and
//! `pkg-config` first on PATH, and a library folder of our own (`SAFETEL_SETUP_LIB_DIRS`), so
//! the probes see exactly the files each case puts there. The stand-in `apt-get` records what it
//! was asked and, for `install`, puts the libclang that `libclang-dev` would bring into the
//! folder. A probe that is fooled by a look-alike (LLVM's `libclang-cpp.so.14`) fails here.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

struct FakeMachine {
    dir: tempfile::TempDir,
}

impl FakeMachine {
    /// `ld_cache` are the libraries the stand-in `ldconfig -p` lists (in a folder of their own);
    /// `libs` the files in the searched library folder; `openssl` whether `pkg-config --exists openssl` succeeds.
    fn new(ld_cache: &[&str], libs: &[&str], openssl: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let machine = FakeMachine { dir };
        std::fs::create_dir_all(machine.bin()).unwrap();
        std::fs::create_dir_all(machine.libs()).unwrap();
        std::fs::create_dir_all(machine.ld_cached()).unwrap();
        for lib in libs {
            std::fs::write(machine.libs().join(lib), b"").unwrap();
        }
        let cache: String = ld_cache
            .iter()
            .map(|name| {
                let path = machine.ld_cached().join(name);
                std::fs::write(&path, b"").unwrap();
                format!("\t{name} (libc6,x86-64) => {}\n", path.to_str().unwrap())
            })
            .collect();
        machine.script(
            "ldconfig",
            &format!("printf '%d libs found in cache\\n' 1\nprintf '{cache}'\n"),
        );
        let log = machine.apt_log();
        let libs = machine.libs();
        machine.script(
            "apt-get",
            &format!(
                "echo \"$*\" >> '{}'\ncase \"$1\" in install) touch '{}/libclang-14.so' ;; esac\n",
                log.display(),
                libs.display()
            ),
        );
        machine.script("sudo", "exec \"$@\"\n");
        machine.script("pkg-config", if openssl { "exit 0\n" } else { "exit 1\n" });
        machine
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn libs(&self) -> PathBuf {
        self.dir.path().join("lib")
    }

    /// Where the libraries only the ld cache knows about live (not a searched folder).
    fn ld_cached(&self) -> PathBuf {
        self.dir.path().join("ld-cached")
    }

    fn apt_log(&self) -> PathBuf {
        self.dir.path().join("apt-get.log")
    }

    fn script(&self, name: &str, body: &str) {
        let path = self.bin().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Runs `scripts/setup` (no options) and returns its stderr and what apt-get was asked.
    fn setup(&self) -> (String, Vec<String>) {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = format!(
            "{}:{}",
            self.bin().display(),
            std::env::var("PATH").unwrap()
        );
        let out = Command::new("bash")
            .arg(repo.join("scripts/setup"))
            .env("PATH", path)
            .env("SAFETEL_SETUP_LIB_DIRS", self.libs())
            .env_remove("LIBCLANG_PATH")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "scripts/setup failed: {stderr}");
        let asked = std::fs::read_to_string(self.apt_log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (stderr, asked)
    }
}

fn installs(asked: &[String]) -> Vec<String> {
    asked
        .iter()
        .filter_map(|l| l.strip_prefix("install "))
        .flat_map(|l| l.split_whitespace().filter(|w| !w.starts_with('-')))
        .map(str::to_string)
        .collect()
}

#[test]
fn only_libclang_cpp_is_not_libclang_so_and_setup_installs_libclang_dev() {
    let machine = FakeMachine::new(
        &["libclang-cpp.so.14"],
        &["libclang-cpp.so.14", "libclang.so.1", "libclangBasic.a"],
        true,
    );
    let (stderr, asked) = machine.setup();
    assert_eq!(installs(&asked), ["libclang-dev"], "{stderr}");
    assert!(asked.iter().any(|l| l.starts_with("update")), "{asked:?}");
    assert!(stderr.contains("setup: ok"), "{stderr}");
}

#[test]
fn a_machine_with_everything_gets_nothing_installed() {
    for (ld_cache, libs) in [
        (&[][..], &["libclang-14.so"][..]),
        (&[][..], &["libclang.so"][..]),
        (&["libclang-14.so"][..], &[][..]),
    ] {
        let machine = FakeMachine::new(ld_cache, libs, true);
        let (stderr, asked) = machine.setup();
        assert!(asked.is_empty(), "{ld_cache:?} {libs:?}: asked {asked:?}");
        assert!(stderr.contains("setup: ok"), "{stderr}");
    }
}

#[test]
fn missing_openssl_headers_are_installed_with_nothing_else() {
    let machine = FakeMachine::new(&[], &["libclang-14.so"], false);
    let (stderr, asked) = machine.setup();
    assert_eq!(installs(&asked), ["libssl-dev"], "{stderr}");
}
