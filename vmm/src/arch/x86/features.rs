//! `--cpu-features`: named CPUID feature bits a user adds to or removes from the guest's
//! CPUID, in the spirit of QEMU's `-cpu ...,+feat,-feat`.
//!
//! Edits apply last, after fugu's own choices (nesting hidden, host adaptation's hidden
//! features, the topology), so `-x2apic` removes what fugu would offer and `+clwb` brings back
//! what host adaptation hid. A bit the host's KVM does not offer is not added: the guest
//! would fault using it, so the edit is dropped and reported.

use crate::hypervisor::CpuidEntry;

/// Which CPUID output register holds a feature bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    Ebx,
    Ecx,
    Edx,
}

/// A named feature: its leaf, subleaf, register and bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Feature {
    name: &'static str,
    leaf: u32,
    subleaf: u32,
    reg: Reg,
    bit: u8,
}

const fn f(name: &'static str, leaf: u32, subleaf: u32, reg: Reg, bit: u8) -> Feature {
    Feature {
        name,
        leaf,
        subleaf,
        reg,
        bit,
    }
}

/// The names understood, as Linux's /proc/cpuinfo spells them (QEMU's spelling where Linux
/// has none).
const FEATURES: &[Feature] = &[
    f("fpu", 1, 0, Reg::Edx, 0),
    f("vme", 1, 0, Reg::Edx, 1),
    f("de", 1, 0, Reg::Edx, 2),
    f("pse", 1, 0, Reg::Edx, 3),
    f("tsc", 1, 0, Reg::Edx, 4),
    f("msr", 1, 0, Reg::Edx, 5),
    f("pae", 1, 0, Reg::Edx, 6),
    f("mce", 1, 0, Reg::Edx, 7),
    f("cx8", 1, 0, Reg::Edx, 8),
    f("apic", 1, 0, Reg::Edx, 9),
    f("sep", 1, 0, Reg::Edx, 11),
    f("mtrr", 1, 0, Reg::Edx, 12),
    f("pge", 1, 0, Reg::Edx, 13),
    f("mca", 1, 0, Reg::Edx, 14),
    f("cmov", 1, 0, Reg::Edx, 15),
    f("pat", 1, 0, Reg::Edx, 16),
    f("pse36", 1, 0, Reg::Edx, 17),
    f("clflush", 1, 0, Reg::Edx, 19),
    f("mmx", 1, 0, Reg::Edx, 23),
    f("fxsr", 1, 0, Reg::Edx, 24),
    f("sse", 1, 0, Reg::Edx, 25),
    f("sse2", 1, 0, Reg::Edx, 26),
    f("ht", 1, 0, Reg::Edx, 28),
    f("pni", 1, 0, Reg::Ecx, 0),
    f("pclmulqdq", 1, 0, Reg::Ecx, 1),
    f("monitor", 1, 0, Reg::Ecx, 3),
    f("vmx", 1, 0, Reg::Ecx, 5),
    f("ssse3", 1, 0, Reg::Ecx, 9),
    f("fma", 1, 0, Reg::Ecx, 12),
    f("cx16", 1, 0, Reg::Ecx, 13),
    f("pdcm", 1, 0, Reg::Ecx, 15),
    f("pcid", 1, 0, Reg::Ecx, 17),
    f("sse4_1", 1, 0, Reg::Ecx, 19),
    f("sse4_2", 1, 0, Reg::Ecx, 20),
    f("x2apic", 1, 0, Reg::Ecx, 21),
    f("movbe", 1, 0, Reg::Ecx, 22),
    f("popcnt", 1, 0, Reg::Ecx, 23),
    f("tsc_deadline_timer", 1, 0, Reg::Ecx, 24),
    f("aes", 1, 0, Reg::Ecx, 25),
    f("xsave", 1, 0, Reg::Ecx, 26),
    f("avx", 1, 0, Reg::Ecx, 28),
    f("f16c", 1, 0, Reg::Ecx, 29),
    f("rdrand", 1, 0, Reg::Ecx, 30),
    f("hypervisor", 1, 0, Reg::Ecx, 31),
    f("fsgsbase", 7, 0, Reg::Ebx, 0),
    f("bmi1", 7, 0, Reg::Ebx, 3),
    f("hle", 7, 0, Reg::Ebx, 4),
    f("avx2", 7, 0, Reg::Ebx, 5),
    f("smep", 7, 0, Reg::Ebx, 7),
    f("bmi2", 7, 0, Reg::Ebx, 8),
    f("erms", 7, 0, Reg::Ebx, 9),
    f("invpcid", 7, 0, Reg::Ebx, 10),
    f("rtm", 7, 0, Reg::Ebx, 11),
    f("mpx", 7, 0, Reg::Ebx, 14),
    f("avx512f", 7, 0, Reg::Ebx, 16),
    f("rdseed", 7, 0, Reg::Ebx, 18),
    f("adx", 7, 0, Reg::Ebx, 19),
    f("smap", 7, 0, Reg::Ebx, 20),
    f("clflushopt", 7, 0, Reg::Ebx, 23),
    f("clwb", 7, 0, Reg::Ebx, 24),
    f("sha_ni", 7, 0, Reg::Ebx, 29),
    f("umip", 7, 0, Reg::Ecx, 2),
    f("pku", 7, 0, Reg::Ecx, 3),
    f("waitpkg", 7, 0, Reg::Ecx, 5),
    f("gfni", 7, 0, Reg::Ecx, 8),
    f("vaes", 7, 0, Reg::Ecx, 9),
    f("vpclmulqdq", 7, 0, Reg::Ecx, 10),
    f("la57", 7, 0, Reg::Ecx, 16),
    f("rdpid", 7, 0, Reg::Ecx, 22),
    f("fsrm", 7, 0, Reg::Edx, 4),
    f("md_clear", 7, 0, Reg::Edx, 10),
    f("serialize", 7, 0, Reg::Edx, 14),
    f("arch_capabilities", 7, 0, Reg::Edx, 29),
    f("ssbd", 7, 0, Reg::Edx, 31),
    f("lahf_lm", 0x8000_0001, 0, Reg::Ecx, 0),
    f("svm", 0x8000_0001, 0, Reg::Ecx, 2),
    f("abm", 0x8000_0001, 0, Reg::Ecx, 5),
    f("sse4a", 0x8000_0001, 0, Reg::Ecx, 6),
    f("3dnowprefetch", 0x8000_0001, 0, Reg::Ecx, 8),
    f("syscall", 0x8000_0001, 0, Reg::Edx, 11),
    f("nx", 0x8000_0001, 0, Reg::Edx, 20),
    f("pdpe1gb", 0x8000_0001, 0, Reg::Edx, 26),
    f("rdtscp", 0x8000_0001, 0, Reg::Edx, 27),
    f("lm", 0x8000_0001, 0, Reg::Edx, 29),
    f("rdpru", 0x8000_0008, 0, Reg::Ebx, 4),
    f("wbnoinvd", 0x8000_0008, 0, Reg::Ebx, 9),
];

/// One `+name` or `-name` of `--cpu-features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit {
    feature: Feature,
    pub add: bool,
}

impl Edit {
    #[cfg(test)]
    pub fn name(&self) -> &'static str {
        self.feature.name
    }
}

/// The edits of one `--cpu-features` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditList(pub Vec<Edit>);

/// Every name `--cpu-features` understands, for messages and help.
pub fn names() -> impl Iterator<Item = &'static str> {
    FEATURES.iter().map(|f| f.name)
}

/// A `--cpu-features` name (as given) that fugu does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown CPU feature '{0}' (known: {known})",
    known = names().collect::<Vec<_>>().join(" ")
)]
pub struct UnknownFeature(pub String);

/// Parse `+a,-b,c` (a bare name adds); names are case-insensitive, `.` and `-` inside a name
/// read as `_` (`sse4.2` = `sse4_2`). A later edit of the same name wins.
pub fn parse(list: &str) -> Result<Vec<Edit>, UnknownFeature> {
    let mut out: Vec<Edit> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (add, name) = match item.as_bytes()[0] {
            b'+' => (true, &item[1..]),
            b'-' => (false, &item[1..]),
            _ => (true, item),
        };
        let key = name.to_ascii_lowercase().replace(['.', '-'], "_");
        let Some(feature) = FEATURES.iter().find(|f| f.name == key) else {
            return Err(UnknownFeature(name.to_string()));
        };
        out.retain(|e| e.feature != *feature);
        out.push(Edit {
            feature: *feature,
            add,
        });
    }
    Ok(out)
}

fn register(e: &mut CpuidEntry, reg: Reg) -> &mut u32 {
    match reg {
        Reg::Ebx => &mut e.ebx,
        Reg::Ecx => &mut e.ecx,
        Reg::Edx => &mut e.edx,
    }
}

/// Whether KVM's supported CPUID (`kvm`) has the feature's bit.
fn offered(kvm: &[CpuidEntry], f: &Feature) -> bool {
    kvm.iter()
        .filter(|e| e.function == f.leaf && e.index == f.subleaf)
        .any(|e| {
            let mut e = *e;
            *register(&mut e, f.reg) & (1 << f.bit) != 0
        })
}

/// Leaf 1 ECX bits a KVM that emulates guest kernel code (kvm_pvm) shows the guest from the
/// host CPU whatever KVM_SET_CPUID2 says (measured with images/guests/cpuid32.S and every
/// feature removed): the ISA extensions (SSE3 to SSE4.2, PCLMULQDQ, FMA, MOVBE, POPCNT, AES,
/// XSAVE, AVX, F16C, RDRAND). All of leaf 1 EDX and leaf 7 pass through the same way; the
/// other leaf 1 ECX bits (x2APIC, TSC deadline, CX16, PDCM, hypervisor) and the extended
/// leaves follow the table.
const EMULATING_HOST_LEAF1_ECX: u32 = 0x76d8_1203;

/// Whether an emulating host ignores the removal of `f` (see [`EMULATING_HOST_LEAF1_ECX`]).
fn passed_through_by_emulating_hosts(f: &Feature) -> bool {
    match (f.leaf, f.reg) {
        (1, Reg::Edx) | (7, _) => true,
        (1, Reg::Ecx) => EMULATING_HOST_LEAF1_ECX & (1 << f.bit) != 0,
        _ => false,
    }
}

/// The removals a host whose KVM emulates guest kernel code will not honour, one line each.
pub fn ignored_removals(edits: &[Edit], emulating_host: bool) -> Vec<String> {
    if !emulating_host {
        return Vec::new();
    }
    edits
        .iter()
        .filter(|e| !e.add && passed_through_by_emulating_hosts(&e.feature))
        .map(|e| {
            format!(
                "--cpu-features -{}: this host's KVM emulates guest kernel code and shows the \
                 guest the host CPU's own bit for it: the guest still sees it",
                e.feature.name
            )
        })
        .collect()
}

/// Apply `edits` to one vCPU's CPUID `entries`. `kvm` is what the host's KVM supports: an
/// addition it lacks is dropped. Returns one line per dropped edit, for the user.
pub fn apply(entries: &mut [CpuidEntry], edits: &[Edit], kvm: &[CpuidEntry]) -> Vec<String> {
    let mut dropped = Vec::new();
    for edit in edits {
        let f = &edit.feature;
        if edit.add && !offered(kvm, f) {
            dropped.push(format!(
                "--cpu-features +{}: the host's KVM does not offer it; the guest does not see it",
                f.name
            ));
            continue;
        }
        for e in entries
            .iter_mut()
            .filter(|e| e.function == f.leaf && e.index == f.subleaf)
        {
            let r = register(e, f.reg);
            if edit.add {
                *r |= 1 << f.bit;
            } else {
                *r &= !(1 << f.bit);
            }
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn names_are_unique_and_bits_distinct() {
        for (i, a) in FEATURES.iter().enumerate() {
            for b in &FEATURES[i + 1..] {
                assert_ne!(a.name, b.name);
                assert!(
                    (a.leaf, a.subleaf, a.reg, a.bit) != (b.leaf, b.subleaf, b.reg, b.bit),
                    "{} and {} are the same bit",
                    a.name,
                    b.name
                );
            }
            assert!(a.bit < 32);
        }
    }

    #[test]
    fn parse_spellings_and_errors() {
        let e = parse("-x2apic, +SSE4.2,clwb,-sse4-2").unwrap();
        let got: Vec<_> = e.iter().map(|e| (e.name(), e.add)).collect();
        assert_eq!(got, [("x2apic", false), ("clwb", true), ("sse4_2", false)]);
        let err = parse("+x2apic,+warp-drive").unwrap_err().to_string();
        assert!(err.contains("unknown CPU feature 'warp-drive'"), "{err}");
        assert!(err.contains("x2apic"), "{err}");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn emulating_hosts_ignore_removals_of_passed_through_bits() {
        let e = parse("-sse4_2,-x2apic,-clwb,-nx").unwrap();
        let w = ignored_removals(&e, true);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("-sse4_2") && w[1].contains("-clwb"), "{w:?}");
        assert!(ignored_removals(&e, false).is_empty());
    }

    #[test]
    fn edits_change_only_their_bit_and_additions_need_kvm() {
        let kvm = [
            entry(1, 0, 0, (1 << 21) | (1 << 20), 0),
            entry(7, 0, 1 << 24, 0, 0),
        ];
        // What fugu offers: host adaptation hid CLWB.
        let mut mine = [
            entry(1, 0, 0, (1 << 21) | (1 << 20) | (1 << 31), 0),
            entry(7, 0, 0, 0, 0),
        ];
        let dropped = apply(&mut mine, &parse("-x2apic,+clwb,+avx512f").unwrap(), &kvm);
        assert_eq!(mine[0].ecx, (1 << 20) | (1 << 31));
        assert_eq!(mine[1].ebx, 1 << 24);
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert!(dropped[0].contains("+avx512f"), "{dropped:?}");
    }
}
