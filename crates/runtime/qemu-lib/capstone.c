/* A stand-in for libcapstone.so.4, which Debian's QEMU links for its debug disassembler only
 * (`-d in_asm`, the monitor's `x/i`); h8s uses neither. The real library's relocated
 * instruction tables cost every QEMU process 1.3 MiB of private memory (BENCHMARKS.md,
 * "VM templates"). Built into the cache by scripts/setup.d/25-qemu-lib.sh; the runtime puts it
 * before the system's (docs/runtime.md, "QEMU's libraries").
 *
 * cs_open reports "architecture not supported", so QEMU falls back to its own disassembler;
 * nothing else is reached without a handle. Signatures as in capstone 4's capstone.h. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef size_t csh;
enum { CS_ERR_OK = 0, CS_ERR_ARCH = 2, CS_ERR_HANDLE = 3 };

int cs_open(int arch, int mode, csh *handle)
{
    (void)arch;
    (void)mode;
    if (handle)
        *handle = 0;
    return CS_ERR_ARCH;
}

int cs_close(csh *handle)
{
    if (handle)
        *handle = 0;
    return CS_ERR_OK;
}

int cs_option(csh handle, int type, size_t value)
{
    (void)handle;
    (void)type;
    (void)value;
    return CS_ERR_HANDLE;
}

void *cs_malloc(csh handle)
{
    (void)handle;
    return NULL;
}

bool cs_disasm_iter(csh handle, const uint8_t **code, size_t *size, uint64_t *address, void *insn)
{
    (void)handle;
    (void)code;
    (void)size;
    (void)address;
    (void)insn;
    return false;
}
