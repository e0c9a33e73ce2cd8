/*
 * One plan run from many C threads at once gives the bits of a lone run;
 * cg_set_num_threads changes the pool, not the bits; cg_last_error is per
 * thread. Built and run by capi/run-c-tests.sh under AddressSanitizer and
 * UndefinedBehaviorSanitizer.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convgemm.h"

#define THREADS 4
#define RUNS 8

static const size_t x_shape[4] = {2, 32, 20, 20}, w_shape[4] = {48, 32, 3, 3};
static size_t y_shape[4], x_len, y_len;
static float *x, *expected;
static cg_conv2d_plan *plan;

static size_t count(const size_t s[4]) { return s[0] * s[1] * s[2] * s[3]; }

static float *filled(size_t n, unsigned seed) {
    float *v = malloc(n * sizeof *v);
    if (!v) exit(1);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    return v;
}

/* Runs the shared plan RUNS times; returns how many results differed. */
static void *worker(void *arg) {
    (void)arg;
    float *y = malloc(y_len * sizeof *y);
    size_t *differ = calloc(1, sizeof *differ);
    if (!y || !differ) exit(1);
    for (int r = 0; r < RUNS; r++) {
        memset(y, 0, y_len * sizeof *y);
        if (cg_conv2d_plan_run(plan, x, x_len, x_shape, y, y_len) != CG_OK) {
            fprintf(stderr, "run failed: %s\n", cg_last_error());
            exit(1);
        }
        *differ += memcmp(y, expected, y_len * sizeof *y) != 0;
    }
    free(y);
    return differ;
}

/* A failure on another thread is not this thread's. */
static void *fails(void *arg) {
    (void)arg;
    cg_conv2d_params p;
    cg_conv2d_params_default(&p);
    p.groups = 0;
    size_t shape[4];
    int *seen = malloc(sizeof *seen);
    if (!seen) exit(1);
    *seen = cg_conv2d_output_shape(x_shape, w_shape, &p, shape) == CG_ERROR_BAD_PARAMETER &&
            strstr(cg_last_error(), "groups") != NULL;
    return seen;
}

int main(void) {
    int failures = 0;
    cg_conv2d_params p;
    cg_conv2d_params_default(&p);
    p.padding[0] = p.padding[1] = p.padding[2] = p.padding[3] = 1;
    p.activation = CG_ACTIVATION_RELU;
    float *w = filled(count(w_shape), 11), *b = filled(w_shape[0], 12);
    x_len = count(x_shape);
    x = filled(x_len, 13);
    if (cg_conv2d_output_shape(x_shape, w_shape, &p, y_shape) != CG_OK) return 1;
    y_len = count(y_shape);
    expected = malloc(y_len * sizeof *expected);
    if (cg_conv2d_plan_create(w, count(w_shape), w_shape, b, w_shape[0], &p, &plan) != CG_OK ||
        cg_conv2d_plan_run(plan, x, x_len, x_shape, expected, y_len) != CG_OK) {
        fprintf(stderr, "%s\n", cg_last_error());
        return 1;
    }

    /* Pools of 1, 3 and the default: the same bits from THREADS C threads. */
    const size_t pools[3] = {1, 3, 0};
    for (int k = 0; k < 3; k++) {
        if (cg_set_num_threads(pools[k]) != CG_OK) {
            fprintf(stderr, "cg_set_num_threads(%zu): %s\n", pools[k], cg_last_error());
            return 1;
        }
        pthread_t t[THREADS];
        for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, NULL);
        size_t differ = 0;
        for (int i = 0; i < THREADS; i++) {
            void *r;
            pthread_join(t[i], &r);
            differ += *(size_t *)r;
            free(r);
        }
        printf("%s pool %zu (%zu threads): %d concurrent runs, %zu differ from the lone run\n",
               differ ? "FAIL" : "ok  ", pools[k], cg_get_num_threads(), THREADS * RUNS, differ);
        failures += differ != 0;
    }

    pthread_t t;
    void *seen;
    pthread_create(&t, NULL, fails, NULL);
    pthread_join(t, &seen);
    int local = *(int *)seen && strcmp(cg_last_error(), "") == 0;
    free(seen);
    printf("%s a failure on another thread leaves this thread's cg_last_error() empty\n", local ? "ok  " : "FAIL");
    failures += !local;

    cg_conv2d_plan_destroy(plan);
    free(w), free(b), free(x), free(expected);
    return failures ? 1 : 0;
}
