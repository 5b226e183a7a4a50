/*
 * An LD_PRELOAD shim for Tools/bench-forward's alloc mode: counts calls of malloc, calloc, realloc and the aligned
 * allocators (posix_memalign, aligned_alloc, memalign) in every thread, and at exit appends one line to the file
 * named by $COUNT_MALLOC_OUT (default stderr): "malloc N calloc N realloc N aligned N total N".
 * Build: cc -O2 -shared -fPIC -o count-malloc.so count-malloc.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static unsigned long long n_malloc, n_calloc, n_realloc, n_aligned;
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

/* dlsym may call calloc before real_calloc is known: serve that from a static buffer (never freed). */
static char bootstrap[4096];
static size_t bootstrap_used;
static int resolving;

static void resolve(void) {
    resolving = 1;
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = dlsym(RTLD_NEXT, "memalign");
    resolving = 0;
}

void *malloc(size_t size) {
    if (!real_malloc) resolve();
    __atomic_fetch_add(&n_malloc, 1, __ATOMIC_RELAXED);
    return real_malloc(size);
}

void *calloc(size_t count, size_t size) {
    if (resolving) {
        size_t bytes = (count * size + 15) & ~(size_t)15;
        if (bootstrap_used + bytes > sizeof bootstrap) return NULL;
        void *p = bootstrap + bootstrap_used;
        bootstrap_used += bytes;
        return p;
    }
    if (!real_calloc) resolve();
    __atomic_fetch_add(&n_calloc, 1, __ATOMIC_RELAXED);
    return real_calloc(count, size);
}

void *realloc(void *p, size_t size) {
    if (!real_realloc) resolve();
    __atomic_fetch_add(&n_realloc, 1, __ATOMIC_RELAXED);
    return real_realloc(p, size);
}

void free(void *p) {
    static void (*real_free)(void *);
    if ((char *)p >= bootstrap && (char *)p < bootstrap + sizeof bootstrap) return;
    if (!real_free) real_free = dlsym(RTLD_NEXT, "free");
    real_free(p);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
    if (!real_posix_memalign) resolve();
    __atomic_fetch_add(&n_aligned, 1, __ATOMIC_RELAXED);
    return real_posix_memalign(out, alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
    if (!real_aligned_alloc) resolve();
    __atomic_fetch_add(&n_aligned, 1, __ATOMIC_RELAXED);
    return real_aligned_alloc(alignment, size);
}

void *memalign(size_t alignment, size_t size) {
    if (!real_memalign) resolve();
    __atomic_fetch_add(&n_aligned, 1, __ATOMIC_RELAXED);
    return real_memalign(alignment, size);
}

__attribute__((destructor)) static void report(void) {
    char line[256];
    unsigned long long total = n_malloc + n_calloc + n_realloc + n_aligned;
    int len = snprintf(line, sizeof line, "malloc %llu calloc %llu realloc %llu aligned %llu total %llu\n",
                       n_malloc, n_calloc, n_realloc, n_aligned, total);
    const char *path = getenv("COUNT_MALLOC_OUT");
    int fd = path ? open(path, O_WRONLY | O_CREAT | O_APPEND, 0644) : 2;
    if (fd >= 0 && len > 0) {
        ssize_t ignored = write(fd, line, (size_t)len);
        (void)ignored;
        if (path) close(fd);
    }
}
