/*
 * cpuid32: a Multiboot test guest for CPUID honesty: cpuid_checks (cpuid32.inc) prints the
 * feature leaves it sees and runs XGETBV, CLWB, INVPCID and RDPRU where they are shown.
 * Exits 0x10 (fugu status 33) when done, 0x11 when a check failed.
 */
#include "common.inc"
        MULTIBOOT_HEADER

        .text
        .code32
        .globl _start
_start:
        mov     $stack_top, %esp
        call    cpuid_checks
        jc      fail
        mov     $msg_ok, %esi
        call    puts
        mov     $0x10, %al
        out     %al, $DEBUG_EXIT
        hlt
fail:   mov     $0x11, %al
        out     %al, $DEBUG_EXIT
        hlt

#define PUSH(x) push %e##x
#define POP(x) pop %e##x
#include "console.inc"
#include "cpuid32.inc"

        .section .rodata
msg_ok:         .asciz "fugu-guest: cpuid ok\n"

        .bss
        .align 16
        .skip 4096
stack_top:
