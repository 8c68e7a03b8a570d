/* Count the bytes a process asks malloc for, and print the total at exit.
 *
 * bench/parsing.py --copies preloads this into a parser run (with PYTHONMALLOC=malloc, so every
 * Python allocation goes through malloc). Each copy a Python-level parser makes lands in a new
 * bytes object, so bytes allocated per body byte count its copies. Built with gcc on the fly.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>

static size_t total;
static void *(*next_malloc)(size_t);
static void *(*next_calloc)(size_t, size_t);
static void *(*next_realloc)(void *, size_t);
static void (*next_free)(void *);
/* dlsym itself may call calloc before next_calloc is known: serve it from here. */
static char early[8192];
static size_t early_used;
static int resolving;

static void resolve(void) {
    resolving = 1;
    next_malloc = dlsym(RTLD_NEXT, "malloc");
    next_calloc = dlsym(RTLD_NEXT, "calloc");
    next_realloc = dlsym(RTLD_NEXT, "realloc");
    next_free = dlsym(RTLD_NEXT, "free");
    resolving = 0;
}

void *malloc(size_t n) {
    if (!next_malloc) resolve();
    total += n;
    return next_malloc(n);
}

void *calloc(size_t count, size_t size) {
    if (resolving) {
        void *p = early + early_used;
        early_used += (count * size + 15) & ~(size_t)15;
        return p;
    }
    if (!next_calloc) resolve();
    total += count * size;
    return next_calloc(count, size);
}

void *realloc(void *p, size_t n) {
    if (!next_realloc) resolve();
    total += n;
    return next_realloc(p, n);
}

void free(void *p) {
    if ((char *)p >= early && (char *)p < early + sizeof early) return;
    if (!next_free) resolve();
    next_free(p);
}

__attribute__((destructor)) static void report(void) { fprintf(stderr, "malloc_total %zu\n", total); }
