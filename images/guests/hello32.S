/*
 * hello32: a Multiboot v1 (ELF32) test guest. It runs in 32-bit protected mode without
 * paging (the only 32-bit mode every host can run), prints a marker and the command line
 * the loader passed over COM1, checks the Multiboot magic, and exits through port 0xf4:
 * 0x10 on success (fugu exits (0x10 << 1) | 1 = 33), 0x11 if the loader looked wrong.
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
        cmp     $0x2BADB002, %eax
        jne     bad
        mov     %ebx, %edi              /* multiboot info */
        mov     $msg_hello, %esi
        call    puts
        testl   $4, (%edi)              /* cmdline present? */
        jz      1f
        mov     $msg_cmd, %esi
        call    puts
        mov     16(%edi), %esi
        call    puts
        mov     $msg_nl, %esi
        call    puts
1:      mov     $0x10, %al
        out     %al, $DEBUG_EXIT
        hlt
bad:    mov     $msg_bad, %esi
        call    puts
        mov     $0x11, %al
        out     %al, $DEBUG_EXIT
        hlt

/* puts: print the NUL-terminated string at %esi, waiting for THR empty. */
        COM1_PUTS puts, %eax, %edx

        .section .rodata
msg_hello: .asciz "fugu-guest: hello from 32-bit protected mode\n"
msg_cmd:   .asciz "fugu-guest: cmdline="
msg_nl:    .asciz "\n"
msg_bad:   .asciz "fugu-guest: FAIL bad multiboot magic\n"

        .bss
        .align 16
        .skip 4096
stack_top:
