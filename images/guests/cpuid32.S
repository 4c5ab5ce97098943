/*
 * cpuid32: a Multiboot test guest for CPUID honesty. It prints the feature leaves it sees
 * (1, 7.0, 0x80000001, 0x80000008) over COM1, then runs each instruction whose feature bit is
 * set: XGETBV (after setting CR4.OSXSAVE; XCR0 must enable x87), CLWB, INVPCID (type 2) and
 * RDPRU. A VMM that advertises what the host cannot run ends here with an unhandled
 * instruction; one that hides it prints "hidden". Exits 0x10 (fugu status 33) when done,
 * 0x11 when XCR0 is wrong.
 */
#include "common.inc"
        .set MB_MAGIC, 0x1BADB002
        .set MB_FLAGS, 0x00000003
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .text
        .code32
        .globl _start
_start:
        mov     $stack_top, %esp

        mov     $1, %eax
        xor     %ecx, %ecx
        cpuid
        mov     %ecx, leaf1_ecx
        mov     $msg_leaf1, %esi
        call    puts
        mov     %ecx, %eax
        call    puthex
        mov     $msg_edx, %esi
        call    puts
        mov     %edx, %eax
        call    puthex
        mov     $msg_nl, %esi
        call    puts

        mov     $7, %eax
        xor     %ecx, %ecx
        cpuid
        mov     %ebx, leaf7_ebx
        mov     %ecx, %edi
        mov     $msg_leaf7, %esi
        call    puts
        mov     %ebx, %eax
        call    puthex
        mov     $msg_ecx, %esi
        call    puts
        mov     %edi, %eax
        call    puthex
        mov     $msg_edx, %esi
        call    puts
        mov     %edx, %eax
        call    puthex
        mov     $msg_nl, %esi
        call    puts

        mov     $0x80000000, %eax
        cpuid
        mov     %eax, ext_max
        mov     $0x80000001, %eax
        cpuid
        mov     %edx, %edi
        mov     $msg_ext1, %esi
        call    puts
        mov     %ecx, %eax
        call    puthex
        mov     $msg_edx, %esi
        call    puts
        mov     %edi, %eax
        call    puthex
        mov     $msg_nl, %esi
        call    puts
        cmpl    $0x80000008, ext_max
        jb      1f
        mov     $0x80000008, %eax
        cpuid
        mov     %ebx, ext8_ebx
1:
        /* XSAVE (1:ECX bit 26): enable it, XGETBV(0) must report x87 state enabled. */
        testl   $1 << 26, leaf1_ecx
        jz      no_xsave
        mov     %cr4, %eax
        or      $1 << 18, %eax
        mov     %eax, %cr4
        xor     %ecx, %ecx
        xgetbv
        test    $1, %eax
        jz      fail
        mov     $msg_xgetbv, %esi
        call    puts
        jmp     2f
no_xsave:
        mov     $msg_no_xsave, %esi
        call    puts
2:
        /* CLWB (7:EBX bit 24): write back a line of this guest's data. */
        testl   $1 << 24, leaf7_ebx
        jz      no_clwb
        clwb    scratch
        mov     $msg_clwb, %esi
        call    puts
        jmp     3f
no_clwb:
        mov     $msg_no_clwb, %esi
        call    puts
3:
        /* INVPCID (7:EBX bit 10), type 2: every context, globals included. */
        testl   $1 << 10, leaf7_ebx
        jz      no_invpcid
        mov     $2, %eax
        invpcid descriptor, %eax
        mov     $msg_invpcid, %esi
        call    puts
        jmp     4f
no_invpcid:
        mov     $msg_no_invpcid, %esi
        call    puts
4:
        /* RDPRU (8000_0008h:EBX bit 4), register 0 (MPERF). */
        testl   $1 << 4, ext8_ebx
        jz      no_rdpru
        xor     %ecx, %ecx
        .byte   0x0f, 0x01, 0xfd        /* rdpru */
        mov     $msg_rdpru, %esi
        call    puts
        jmp     5f
no_rdpru:
        mov     $msg_no_rdpru, %esi
        call    puts
5:
        mov     $msg_ok, %esi
        call    puts
        mov     $0x10, %al
        out     %al, $DEBUG_EXIT
        hlt
fail:   mov     $msg_fail, %esi
        call    puts
        mov     $0x11, %al
        out     %al, $DEBUG_EXIT
        hlt

/* puthex: print %eax as 8 hex digits. */
puthex:
        push    %eax
        push    %ecx
        push    %esi
        mov     $hexbuf + 8, %esi
        mov     $8, %ecx
6:      dec     %esi
        push    %eax
        and     $0xf, %eax
        mov     hexdigits(%eax), %al
        mov     %al, (%esi)
        pop     %eax
        shr     $4, %eax
        loop    6b
        call    puts
        pop     %esi
        pop     %ecx
        pop     %eax
        ret

        COM1_PUTS puts, %eax, %edx

        .section .rodata
hexdigits:      .ascii "0123456789abcdef"
msg_leaf1:      .asciz "fugu-guest: cpuid 1 ecx="
msg_leaf7:      .asciz "fugu-guest: cpuid 7 ebx="
msg_ext1:       .asciz "fugu-guest: cpuid 80000001 ecx="
msg_ecx:        .asciz " ecx="
msg_edx:        .asciz " edx="
msg_nl:         .asciz "\n"
msg_xgetbv:     .asciz "fugu-guest: xsave: xgetbv ran, x87 enabled in XCR0\n"
msg_no_xsave:   .asciz "fugu-guest: xsave hidden\n"
msg_clwb:       .asciz "fugu-guest: clwb ran\n"
msg_no_clwb:    .asciz "fugu-guest: clwb hidden\n"
msg_invpcid:    .asciz "fugu-guest: invpcid ran\n"
msg_no_invpcid: .asciz "fugu-guest: invpcid hidden\n"
msg_rdpru:      .asciz "fugu-guest: rdpru ran\n"
msg_no_rdpru:   .asciz "fugu-guest: rdpru hidden\n"
msg_ok:         .asciz "fugu-guest: cpuid ok\n"
msg_fail:       .asciz "fugu-guest: FAIL xgetbv: x87 not enabled in XCR0\n"

        .data
        .align 16
descriptor:     .quad 0, 0
hexbuf:         .asciz "00000000"
leaf1_ecx:      .long 0
leaf7_ebx:      .long 0
ext_max:        .long 0
ext8_ebx:       .long 0
        .align 64
scratch:        .skip 64

        .bss
        .align 16
        .skip 4096
stack_top:
