//! The processor architecture of the bundle's `api` and of the instance
//! types an environment is created with. An x86_64 binary does not run on
//! a Graviton (arm64) instance, nor the reverse, and Elastic Beanstalk
//! finds out only when the first instance fails to start it, after the
//! environment, its load balancer and its instances were made.

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, bail};

/// An architecture Elastic Beanstalk runs instances of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arch {
    /// Intel and AMD instance types (`t3`, `m7i`, `c7a`, ...).
    #[default]
    X86_64,
    /// AWS Graviton instance types (`t4g`, `m7g`, `c7gn`, ...).
    Arm64,
}

/// ELF's `e_machine` values (the System V ABI's registry).
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

impl Arch {
    /// The name EC2 gives it (`ProcessorInfo.SupportedArchitectures`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The instance type a new environment gets when none is given: the
    /// same size on each architecture (2 vCPUs, 2 GiB, burstable).
    pub fn default_instance_type(self) -> &'static str {
        match self {
            Arch::X86_64 => "t3.small",
            Arch::Arm64 => "t4g.small",
        }
    }

    /// Reads the architecture off an ELF file's first 20 bytes: a 64-bit
    /// little-endian executable for x86-64 or AArch64.
    pub fn of_elf(header: &[u8]) -> anyhow::Result<Arch> {
        let Some(header) = header.get(..20).filter(|h| h.starts_with(b"\x7fELF")) else {
            bail!("not an ELF executable");
        };
        if header[4] != 2 || header[5] != 1 {
            bail!("not a 64-bit little-endian ELF executable");
        }
        match u16::from_le_bytes([header[18], header[19]]) {
            EM_X86_64 => Ok(Arch::X86_64),
            EM_AARCH64 => Ok(Arch::Arm64),
            other => bail!(
                "an ELF executable for machine {other}, neither x86-64 ({EM_X86_64}) nor AArch64 \
                 ({EM_AARCH64})"
            ),
        }
    }

    /// The architecture of the `api` at the root of a bundle.
    pub fn of_bundle(bundle: &Path) -> anyhow::Result<Arch> {
        let shown = bundle.display();
        let file =
            std::fs::File::open(bundle).with_context(|| format!("opening the bundle {shown}"))?;
        let mut archive = zip::ZipArchive::new(file)
            .with_context(|| format!("the bundle {shown} is not a zip archive"))?;
        let mut api = archive.by_name("api").with_context(|| {
            format!(
                "the bundle {shown} has no `api` at its root (`cargo xtask bundle` puts it there)"
            )
        })?;
        let mut header = [0; 20];
        api.read_exact(&mut header)
            .with_context(|| format!("reading `api` in the bundle {shown}"))?;
        Arch::of_elf(&header).with_context(|| format!("`api` in the bundle {shown}"))
    }

    /// The architecture of an EC2 instance type, from its name: the family
    /// (before the `.`) is a series of letters, a generation and then
    /// attributes, among which `g` means AWS Graviton (`t4g`, `c7gn`,
    /// `im4gn`, `g5g`; not `g4dn`, whose `g` is its series), and `a1` is
    /// Graviton's first generation. AWS documents the naming convention in
    /// "Amazon EC2 instance type naming conventions"; `aws ec2
    /// describe-instance-types` (`ProcessorInfo.SupportedArchitectures`)
    /// is the authority, but this check runs before any AWS call.
    pub fn of_instance_type(instance_type: &str) -> Arch {
        let family = instance_type
            .trim()
            .split('.')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let attributes = family
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .trim_start_matches(|c: char| c.is_ascii_digit());
        if family == "a1" || attributes.contains('g') {
            Arch::Arm64
        } else {
            Arch::X86_64
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graviton_families_are_told_from_intel_and_amd_ones() {
        for arm in [
            "t4g.small",
            "m6g.large",
            "m6gd.xlarge",
            "c6gn.large",
            "c7gn.medium",
            "r8g.large",
            "x2gd.medium",
            "im4gn.large",
            "is4gen.medium",
            "g5g.xlarge",
            "hpc7g.4xlarge",
            "a1.large",
            "T4G.Small",
        ] {
            assert_eq!(Arch::of_instance_type(arm), Arch::Arm64, "{arm}");
        }
        for x86 in [
            "t3.small",
            "t3a.medium",
            "m7i.large",
            "m7i-flex.large",
            "c7a.large",
            "g4dn.xlarge",
            "g6e.xlarge",
            "gr6.4xlarge",
            "inf2.xlarge",
            "u7i-12tb.224xlarge",
            "r7iz.large",
        ] {
            assert_eq!(Arch::of_instance_type(x86), Arch::X86_64, "{x86}");
        }
    }

    #[test]
    fn the_machine_comes_from_the_elf_header() {
        let mut header = *b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0\x3e\0";
        assert_eq!(Arch::of_elf(&header).expect("x86-64"), Arch::X86_64);
        header[18] = 183;
        assert_eq!(Arch::of_elf(&header).expect("aarch64"), Arch::Arm64);
        header[18] = 40; // 32-bit Arm
        let refused = Arch::of_elf(&header).expect_err("arm").to_string();
        assert!(refused.contains("machine 40"), "{refused}");
        header[4] = 1;
        let refused = Arch::of_elf(&header).expect_err("32-bit").to_string();
        assert!(refused.contains("64-bit"), "{refused}");
        let refused = Arch::of_elf(b"#!/bin/sh\nexec ./x\n").expect_err("script");
        assert!(refused.to_string().contains("not an ELF"), "{refused}");
        assert!(Arch::of_elf(b"\x7fELF").is_err(), "too short");
    }

    /// A zip at a path of its own with `entries`, removed when dropped.
    struct Zip(std::path::PathBuf);

    impl Zip {
        fn new(name: &str, entries: &[(&str, &[u8])]) -> Zip {
            use std::io::Write as _;
            let path =
                std::env::temp_dir().join(format!("deploy-arch-{name}-{}.zip", std::process::id()));
            let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).expect("creates"));
            for (entry, bytes) in entries {
                zip.start_file(*entry, zip::write::SimpleFileOptions::default())
                    .expect("starts");
                zip.write_all(bytes).expect("writes");
            }
            zip.finish().expect("finishes");
            Zip(path)
        }
    }

    impl Drop for Zip {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_bundle_of_this_machines_binary_is_x86_64_and_a_broken_one_is_refused() {
        let mut binary =
            std::fs::read(std::env::current_exe().expect("own path")).expect("readable");
        binary.truncate(4096); // the header is what is read; zipping all of it takes a minute
        let bundle = Zip::new(
            "x86",
            &[("Procfile", b"web: ./api serve\n"), ("api", &binary)],
        );
        assert_eq!(Arch::of_bundle(&bundle.0).expect("reads"), Arch::X86_64);

        let without = Zip::new("no-api", &[("public/api", &binary)]);
        let refused = format!("{:#}", Arch::of_bundle(&without.0).expect_err("no api"));
        assert!(refused.contains("has no `api` at its root"), "{refused}");
        let script = Zip::new("script", &[("api", b"#!/bin/sh\n")]);
        let refused = format!("{:#}", Arch::of_bundle(&script.0).expect_err("a script"));
        assert!(refused.contains("reading `api`"), "{refused}");
        let not_zip = std::env::current_exe().expect("own path");
        let refused = format!("{:#}", Arch::of_bundle(&not_zip).expect_err("not a zip"));
        assert!(refused.contains("is not a zip archive"), "{refused}");
    }
}
