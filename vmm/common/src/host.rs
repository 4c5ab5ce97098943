//! What fugu and the xtask both know about hosts whose KVM emulates guest kernel code (no
//! VMX/SVM, e.g. `kvm_pvm`; see DESIGN.md "The hosts").

/// Linux command-line switches for an emulating host, found by booting Debian's 6.1 kernels
/// there. fugu adds them itself (vmm/src/host_compat.rs); image command lines do not carry
/// them; a peer VMM that boots the same kernel there (QEMU in the bench) needs them added.
/// `clearcpuid` takes feature numbers (word * 32 + bit), which every 6.1 kernel accepts
/// (names need CONFIG_X86_FEATURE_NAMES): 308 SMAP (CLAC/STAC), 141 CX16 (LOCK CMPXCHG16B),
/// 158 RDRAND, 151 POPCNT, 306 RDSEED, 534 RDPID, 311 CLFLUSHOPT, 312 CLWB, 590 SERIALIZE,
/// 297 ERMS and 580 FSRM (string operations the emulator handles byte by byte at best).
pub const LINUX_SWITCHES: &[&str] = &[
    "noxsave",
    "nofsgsbase",
    "nopcid",
    "noinvpcid",
    "nopku",
    "clearcpuid=308,141,158,151,306,534,311,312,590,297,580",
    "reboot=k",
];
