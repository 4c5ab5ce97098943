/*
 * hello32: a Multiboot v1 (ELF32) test guest. It runs in 32-bit protected mode without
 * paging (the only 32-bit mode every host can run), prints a marker and the command line
 * the loader passed over COM1, sums the RAM the Multiboot memory map reports above 4 GiB
 * (printed in MiB, hex), checks the Multiboot magic, and exits through port 0xf4:
 * 0x10 on success (fugu exits (0x10 << 1) | 1 = 33), 0x11 if the loader looked wrong.
 */
#include "common.inc"
        MULTIBOOT_HEADER

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
1:      testl   $1 << 6, (%edi)         /* memory map present? */
        jz      3f
        mov     48(%edi), %esi          /* mmap_addr */
        mov     44(%edi), %ecx          /* mmap_length */
        add     %esi, %ecx              /* end */
        xor     %ebx, %ebx              /* MiB above 4 GiB */
2:      cmp     %ecx, %esi
        jae     4f
        cmpl    $1, 20(%esi)            /* type: usable RAM */
        jne     5f
        cmpl    $0, 8(%esi)             /* base above 4 GiB (high dword set)? */
        je      5f
        mov     12(%esi), %eax          /* length, low dword */
        shr     $20, %eax
        mov     16(%esi), %edx          /* length, high dword */
        shl     $12, %edx
        or      %edx, %eax
        add     %eax, %ebx
5:      mov     (%esi), %eax            /* entry size, not counting itself */
        lea     4(%esi,%eax), %esi
        jmp     2b
4:      push    %esi
        mov     $msg_above, %esi
        call    puts
        mov     %ebx, %eax
        call    puthex32
        mov     $msg_mib, %esi
        call    puts
        pop     %esi
3:      mov     $0x10, %al
        out     %al, $DEBUG_EXIT
        hlt
bad:    mov     $msg_bad, %esi
        call    puts
        mov     $0x11, %al
        out     %al, $DEBUG_EXIT
        hlt

#define PUSH(x) push %e##x
#define POP(x) pop %e##x
#include "console.inc"


        .section .rodata
msg_hello: .asciz "fugu-guest: hello from 32-bit protected mode\n"
msg_cmd:   .asciz "fugu-guest: cmdline="
msg_nl:    .asciz "\n"
msg_bad:   .asciz "fugu-guest: FAIL bad multiboot magic\n"
msg_above: .asciz "fugu-guest: RAM above 4 GiB (MiB, hex): "
msg_mib:   .asciz "\n"


        .bss
        .align 16
        .skip 4096
stack_top:
