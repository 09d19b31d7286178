/* A stand-in for libpmem.so.1, which Debian's QEMU links for memory backends on persistent
 * memory (`pmem=on`) only; h8s never asks for one. The real library brings libndctl, libdaxctl,
 * libkmod and libcrypto along: 0.5 MiB of private memory in every QEMU process (BENCHMARKS.md,
 * "VM templates"). Built into the cache by scripts/setup.d/25-qemu-lib.sh.
 *
 * QEMU calls these only for a `pmem=on` backend; should that ever happen, the stand-in stops
 * QEMU loudly rather than skip a persistence guarantee. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

static void unreachable(const char *what)
{
    fprintf(stderr, "h8s libpmem stand-in: %s called (a pmem=on memory backend?)\n", what);
    abort();
}

void pmem_persist(const void *addr, size_t len)
{
    (void)addr;
    (void)len;
    unreachable("pmem_persist");
}

void *pmem_memcpy_persist(void *dest, const void *src, size_t len)
{
    (void)dest;
    (void)src;
    (void)len;
    unreachable("pmem_memcpy_persist");
    return NULL;
}
