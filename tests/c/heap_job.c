/* C code for tests/c_heap.rs, compiled at test time with the cc crate into a shared library
 * that the test loads with dlopen. Every allocation goes through the process's malloc family
 * (the `malloc` feature's interposer). */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* One job's C allocations: 100 B freed in the job; calloc(10, 20) grown to 500 B with
 * realloc, strdup of 17 characters (18 B), posix_memalign(64, 256) kept for the caller.
 * Allocated: 100 + 200 + 500 + 18 + 256 = 1074 B in 5 blocks; kept: 774 B in 3. */
int heap_job(void **kept) {
    char *a = malloc(100);
    char *b = calloc(10, 20);
    if (!a || !b) return 1;
    memset(a, 1, 100);
    b = realloc(b, 500);
    if (!b) return 2;
    char *s = strdup("hello, allocscope");
    void *al = NULL;
    if (posix_memalign(&al, 64, 256) != 0 || ((size_t)al % 64) != 0) return 3;
    memset(al, 2, 256);
    free(a);
    kept[0] = b;
    kept[1] = s;
    kept[2] = al;
    return 0;
}

static void *free_it(void *p) {
    free(p);
    return NULL;
}

/* Frees `p` on a new thread (created and joined here). */
int free_on_thread(void *p) {
    pthread_t t;
    if (pthread_create(&t, NULL, free_it, p) != 0) return 1;
    return pthread_join(t, NULL);
}

void c_free(void *p) { free(p); }

void *c_malloc(size_t n) { return malloc(n); }

/* A block of `n` bytes, returned to the caller (the leak the test looks for by callsite). */
void *leaky_c_callsite(size_t n) {
    char *p = malloc(n);
    if (p) memset(p, 3, n);
    return p;
}
