/*
 * acpi32: a Multiboot v1 (ELF32) test guest that reads fugu's ACPI tables as an OS does, in
 * 32-bit protected mode without paging. It scans 0xE0000-0xFFFFF for the RSDP, checks every
 * checksum on the way (RSDP, RSDT, each table it lists, the DSDT), prints each table's
 * signature, counts the enabled local APICs in the MADT, checks that the PM timer named by
 * the FADT counts, and then powers the machine off through the FADT's PM1a control block
 * (SLP_TYP 5 from \_S5, SLP_EN): fugu ends with status 0. Any failure prints a reason and
 * exits through port 0xf4 with 0x11 (fugu exits 35); still running after the power-off
 * write: 0x12 (37).
 *
 * With a command line that starts with "button", it first enables the power-button event
 * (PM1 enable PWRBTN), says so, and polls PM1 status until the host presses the button
 * (`kill -PWR`), then clears the status and powers off as above.
 *
 * With a command line that starts with "hold", it says so and spins for good without
 * enabling the power button: a guest that ignores it (fugud's stop must then force the VM).
 */
#include "common.inc"
#define PUSH(x) push %e##x
#define POP(x) pop %e##x
        MULTIBOOT_HEADER

        .text
        .code32
        .globl _start
_start:
        mov     $stack_top, %esp
        movb    $0, button
        cmp     $0x2BADB002, %eax
        jne     1f
        testl   $4, (%ebx)              /* Multiboot cmdline present? */
        jz      1f
        mov     16(%ebx), %eax
        /* The loader's name for this kernel comes first (argv[0], as QEMU's -kernel and fugu
           pass it); the mode is the first argument after it. */
4:      movb    (%eax), %cl
        test    %cl, %cl
        jz      5f
        inc     %eax
        cmp     $0x20, %cl
        jne     4b
5:      cmpl    $0x646c6f68, (%eax)     /* "hold" */
        je      hold
        cmpl    $0x74747562, (%eax)     /* "butt" */
        jne     1f
        cmpw    $0x6e6f, 4(%eax)        /* "on" */
        jne     1f
        movb    $1, button
1:
        /* Find "RSD PTR " on a 16-byte boundary. */
        mov     $0xe0000, %ebx
1:      cmpl    $0x20445352, (%ebx)
        jne     2f
        cmpl    $0x20525450, 4(%ebx)
        je      3f
2:      add     $16, %ebx
        cmp     $0x100000, %ebx
        jb      1b
        mov     $msg_norsdp, %esi
        jmp     fail
3:      mov     $msg_rsdp, %esi
        call    puts
        mov     %ebx, %eax
        call    puthex32
        call    newline
        mov     %ebx, %esi
        mov     $20, %ecx
        call    checksum
        jnz     bad_sum
        mov     16(%ebx), %ebx          /* the RSDT */
        mov     %ebx, %esi
        call    table_ok
        mov     4(%ebx), %ecx
        sub     $36, %ecx
        shr     $2, %ecx                /* entries */
        lea     36(%ebx), %edi
next_table:
        test    %ecx, %ecx
        jz      tables_done
        mov     (%edi), %esi
        call    table_ok
        cmpl    $0x50434146, (%esi)     /* "FACP" */
        jne     1f
        mov     %esi, fadt
1:      cmpl    $0x43495041, (%esi)     /* "APIC" */
        jne     2f
        call    count_lapics
2:      add     $4, %edi
        dec     %ecx
        jmp     next_table
tables_done:
        mov     fadt, %ebx
        test    %ebx, %ebx
        jnz     1f
        mov     $msg_nofadt, %esi
        jmp     fail
1:      mov     40(%ebx), %esi          /* the DSDT */
        call    table_ok
        /* The PM timer must count. */
        mov     76(%ebx), %edx
        in      %dx, %eax
        mov     %eax, %ebp
        mov     $100000, %ecx
2:      in      %dx, %eax
        cmp     %eax, %ebp
        jne     3f
        loop    2b
        mov     $msg_timer, %esi
        jmp     fail
3:      mov     $msg_cpus, %esi
        call    puts
        mov     lapics, %eax
        call    puthex8
        call    newline
        cmpb    $0, button
        je      5f
        /* Enable the power-button event, then wait for the host to press it. */
        mov     56(%ebx), %edx          /* PM1a_EVT_BLK: status, then enable */
        add     $2, %edx
        mov     $0x100, %ax
        out     %ax, %dx
        sub     $2, %edx
        mov     $msg_wait, %esi
        call    puts
4:      pause
        in      %dx, %ax
        test    $0x100, %ax
        jz      4b
        mov     $0x100, %ax             /* write 1 to clear */
        out     %ax, %dx
        in      %dx, %ax
        test    $0x100, %ax
        jz      6f
        mov     $msg_noclear, %esi
        jmp     fail
6:      mov     $msg_pressed, %esi
        call    puts
5:
        mov     $msg_ok, %esi
        call    puts
        /* Soft-off: SLP_TYP 5, SLP_EN. */
        mov     64(%ebx), %edx
        mov     $((5 << 10) | (1 << 13)), %ax
        out     %ax, %dx
        mov     $msg_alive, %esi
        call    puts
        mov     $0x12, %al
        out     %al, $DEBUG_EXIT
        hlt

bad_sum:
        mov     $msg_sum, %esi
hold:   mov     $msg_hold, %esi
        call    puts
1:      pause
        jmp     1b
fail:   call    puts
        mov     $0x11, %al
        out     %al, $DEBUG_EXIT
        hlt

/* table_ok: the table at %esi: print its signature, check its checksum; fails otherwise. */
table_ok:
        PUSH(ax)
        PUSH(cx)
        PUSH(si)
        mov     %esi, %ecx
        mov     $msg_table, %esi
        call    puts
        mov     %ecx, %esi
        mov     $4, %ecx
1:      lodsb
        call    putc
        loop    1b
        call    newline
        POP(si)
        mov     4(%esi), %ecx
        cmp     $36, %ecx
        jb      bad_sum
        call    checksum
        jnz     bad_sum
        POP(cx)
        POP(ax)
        ret

/* checksum: ZF set when the %ecx bytes at %esi sum to 0 (mod 256). */
checksum:
        PUSH(ax)
        PUSH(cx)
        PUSH(si)
        xor     %ah, %ah
1:      lodsb
        add     %al, %ah
        loop    1b
        test    %ah, %ah
        POP(si)
        POP(cx)
        POP(ax)
        ret

/* count_lapics: add the MADT at %esi's enabled processor local APICs to `lapics`. */
count_lapics:
        PUSH(ax)
        PUSH(cx)
        PUSH(si)
        mov     4(%esi), %ecx
        add     %esi, %ecx              /* end */
        add     $44, %esi
1:      cmp     %ecx, %esi
        jae     3f
        cmpb    $0, (%esi)
        jne     2f
        testb   $1, 4(%esi)
        jz      2f
        incl    lapics
2:      movzbl  1(%esi), %eax
        test    %eax, %eax
        jz      3f                      /* a zero-length entry would loop forever */
        add     %eax, %esi
        jmp     1b
3:      POP(si)
        POP(cx)
        POP(ax)
        ret

newline:
        PUSH(si)
        mov     $msg_nl, %esi
        call    puts
        POP(si)
        ret

#include "console.inc"

        .section .rodata
msg_rsdp:   .asciz "fugu-guest: ACPI RSDP at "
msg_table:  .asciz "fugu-guest: ACPI table "
msg_cpus:   .asciz "fugu-guest: MADT enabled local APICs: "
msg_hold:   .asciz "fugu-guest: holding, the power button is ignored\n"
msg_ok:     .asciz "fugu-guest: acpi ok, powering off through PM1a_CNT\n"
msg_alive:  .asciz "fugu-guest: FAIL still running after the S5 write\n"
msg_norsdp: .asciz "fugu-guest: FAIL no RSDP in 0xE0000-0xFFFFF\n"
msg_nofadt: .asciz "fugu-guest: FAIL no FADT in the RSDT\n"
msg_sum:    .asciz "fugu-guest: FAIL bad table checksum or length\n"
msg_timer:  .asciz "fugu-guest: FAIL the PM timer does not count\n"
msg_wait:   .asciz "fugu-guest: waiting for the power button\n"
msg_pressed: .asciz "fugu-guest: power button pressed\n"
msg_noclear: .asciz "fugu-guest: FAIL PWRBTN_STS did not clear\n"
msg_nl:     .asciz "\n"

        .data
        .align 4
fadt:   .long 0
lapics: .long 0
button: .byte 0

        .bss
        .align 16
        .skip 4096
stack_top:
