//! The benchmark's own tiny guests, generated as bytes: Multiboot v1 kernels in the a.out
//! kludge format (header at offset 0, loaded at 1 MiB, entered at 1 MiB + 32 in 32-bit
//! protected mode). fugu and QEMU both boot them with `--kernel` / `-kernel`.

const BASE: u32 = 0x10_0000;
const MAGIC: u32 = 0x1BAD_B002;
/// Page-aligned modules + memory info, and the a.out kludge addresses are valid.
const FLAGS: u32 = 0x0001_0002;

/// The port the exit loop writes to: no device claims it in fugu (nor does KVM in-kernel).
pub const LOOP_PORT: u8 = 0x80;

fn multiboot(code: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(32 + code.len());
    for w in [
        MAGIC,
        FLAGS,
        0u32.wrapping_sub(MAGIC).wrapping_sub(FLAGS),
        BASE,      // header_addr
        BASE,      // load_addr
        0,         // load_end_addr: the whole file
        0,         // bss_end_addr: none
        BASE + 32, // entry
    ] {
        b.extend_from_slice(&w.to_le_bytes());
    }
    b.extend_from_slice(code);
    b
}

/// `count` writes to [`LOOP_PORT`], then 0x10 to the debug-exit port 0xf4 (fugu exits 33).
pub fn exit_loop(count: u32) -> Vec<u8> {
    let mut code = vec![0xb9]; // mov ecx, count
    code.extend_from_slice(&count.to_le_bytes());
    code.extend_from_slice(&[
        0xe3, 0x05, // jecxz done
        0xe6, LOOP_PORT, // loop: out LOOP_PORT, al
        0x49,      // dec ecx
        0x75, 0xfb, // jnz loop
        0xb0, 0x10, // done: mov al, 0x10
        0xe6, 0xf4, // out 0xf4, al
        0xf4, // hlt
        0xeb, 0xfd, // jmp hlt
    ]);
    multiboot(&code)
}

/// Prints `marker` on COM1, then spins forever (no exits): a VM that only costs memory.
pub fn spin(marker: &str) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for &c in marker.as_bytes() {
        code.extend_from_slice(&[0xb0, c, 0xee]); // mov al, c; out dx, al
    }
    code.extend_from_slice(&[0xeb, 0xfe]); // jmp $
    multiboot(&code)
}

/// A master boot record (512 bytes, real mode at 0:7C00) that prints `marker` on COM1 and
/// writes 0x10 to the debug-exit port 0xf4.
pub fn mbr(marker: &str) -> Vec<u8> {
    const MSG: u16 = 26;
    let at = (0x7c00 + MSG).to_le_bytes();
    let mut s = vec![
        0xfa, // cli
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xbe, at[0], at[1], // mov si, msg
        0xac,  // next: lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz done
        0xee, // out dx, al
        0xeb, 0xf8, // jmp next
        0xb0, 0x10, // done: mov al, 0x10
        0xe6, 0xf4, // out 0xf4, al
        0xf4, // hlt
        0xeb, 0xfd, // jmp hlt
    ];
    debug_assert_eq!(s.len(), MSG as usize);
    s.extend_from_slice(marker.as_bytes());
    s.push(0);
    assert!(s.len() <= 510, "MBR marker too long");
    s.resize(510, 0);
    s.extend_from_slice(&[0x55, 0xaa]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(b: &[u8], i: usize) -> u32 {
        u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap())
    }

    #[test]
    fn headers_are_valid_multiboot() {
        for k in [exit_loop(0), exit_loop(123_456), spin("spin\n")] {
            assert_eq!(word(&k, 0), MAGIC);
            assert_eq!(
                word(&k, 0)
                    .wrapping_add(word(&k, 1))
                    .wrapping_add(word(&k, 2)),
                0
            );
            assert_eq!(word(&k, 7), BASE + 32);
        }
    }

    #[test]
    fn exit_loop_branches_land_on_instructions() {
        let k = exit_loop(7);
        let code = &k[32..];
        assert_eq!(&code[1..5], &7u32.to_le_bytes());
        // jecxz at 5 (2 bytes) skips the 5-byte loop body to `done` at 12.
        assert_eq!((code[5], 7 + code[6] as usize), (0xe3, 12));
        assert_eq!(&code[12..16], &[0xb0, 0x10, 0xe6, 0xf4]);
        // jnz at 10 (2 bytes) goes back to the out at 7.
        assert_eq!((code[10], 12 + code[11] as i8 as isize), (0x75, 7));
        assert_eq!(&code[7..9], &[0xe6, LOOP_PORT]);
    }

    #[test]
    fn mbr_is_a_boot_sector_pointing_at_its_marker() {
        let m = mbr("hi\n");
        assert_eq!(m.len(), 512);
        assert_eq!(&m[510..], &[0x55, 0xaa]);
        let si = u16::from_le_bytes([m[9], m[10]]) as usize - 0x7c00;
        assert_eq!(&m[si..si + 4], b"hi\n\0");
        // jz at 14 skips to `done` at 19; jmp at 17 goes back to lodsb at 11.
        assert_eq!(16 + m[15] as usize, 19);
        assert_eq!(19 + m[18] as i8 as isize, 11);
        assert_eq!(m[11], 0xac);
    }

    #[test]
    fn spin_prints_its_marker() {
        let k = spin("ab");
        assert_eq!(
            &k[32..],
            &[0x66, 0xba, 0xf8, 0x03, 0xb0, b'a', 0xee, 0xb0, b'b', 0xee, 0xeb, 0xfe]
        );
    }
}
