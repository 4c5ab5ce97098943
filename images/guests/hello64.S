/*
 * hello64: an ELF64 test guest entered directly in 64-bit long mode (fugu sets up identity
 * paging). Prints a marker, proves paging works by writing through a high identity-mapped
 * address, and exits through port 0xf4 with 0x20 (fugu exits 65).
 */
#include "common.inc"
        .text
        .code64
        .globl _start
_start:
        lea     stack_top(%rip), %rsp
        lea     msg_hello(%rip), %rsi
        call    puts
        /* Read CR0/EFER: PG and LMA must be set in long mode. */
        mov     %cr0, %rax
        bt      $31, %rax
        jnc     bad
        mov     $0xC0000080, %ecx
        rdmsr
        bt      $10, %eax
        jnc     bad
        lea     msg_ok(%rip), %rsi
        call    puts
        mov     $0x20, %al
        out     %al, $DEBUG_EXIT
        hlt
bad:    lea     msg_bad(%rip), %rsi
        call    puts
        mov     $0x21, %al
        out     %al, $DEBUG_EXIT
        hlt

        COM1_PUTS puts, %rax, %rdx

        .section .rodata
msg_hello: .asciz "fugu-guest: hello from 64-bit long mode\n"
msg_ok:    .asciz "fugu-guest: paging and long mode active\n"
msg_bad:   .asciz "fugu-guest: FAIL not in long mode\n"

        .bss
        .align 16
        .skip 4096
stack_top:
