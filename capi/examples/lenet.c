/*
 * LeNet-5's convolutions and pools through convgemm's C interface, each
 * checked against a direct loop in double precision.
 *
 *   conv1 1->6 5x5 + ReLU (32x32 -> 28x28), max pool 2x2 (-> 14x14),
 *   conv2 6->16 5x5 + ReLU (-> 10x10),     max pool 2x2 (-> 5x5),
 *   conv3 16->120 5x5 (-> 1x1): the 120 features of a 32x32 image.
 *
 * conv2 runs through a plan (weights packed once), in NCHW and, on the same
 * data transposed, in channels-last. Exit status 0 when every output is
 * within 1e-5 of its scale (sum of |w*x| + |b|) of the direct loop.
 *
 * Build (from the repository root, after cargo build --release -p convgemm-capi):
 *   gcc -std=c99 -O2 -Icapi/include capi/examples/lenet.c \
 *       -Ltarget/release -lconvgemm_capi -lm -o lenet
 *   LD_LIBRARY_PATH=target/release ./lenet
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convgemm.h"

static int failures = 0;

/* Stops with the library's message when a call fails. */
static void check(cg_status status, const char *what) {
    if (status != CG_OK) {
        fprintf(stderr, "%s failed (status %d): %s\n", what, (int)status, cg_last_error());
        exit(1);
    }
}

/* A fixed pseudo-random value in [-1, 1). */
static float value(unsigned *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)((*state >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static float *filled(size_t n, unsigned seed) {
    float *v = malloc(n * sizeof *v);
    if (!v) {
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        v[i] = value(&seed);
    }
    return v;
}

static size_t count(const size_t shape[4]) { return shape[0] * shape[1] * shape[2] * shape[3]; }

/* A stride-1, unpadded, one-group convolution (+ bias, optional ReLU) in
 * double, NCHW, compared with `got`. */
static void compare_conv(const char *name, const float *x, const size_t xs[4], const float *w, const size_t ws[4],
                         const float *b, int relu, const float *got) {
    size_t oh = xs[2] - ws[2] + 1, ow = xs[3] - ws[3] + 1;
    double worst = 0.0;
    for (size_t n = 0; n < xs[0]; n++)
        for (size_t o = 0; o < ws[0]; o++)
            for (size_t y = 0; y < oh; y++)
                for (size_t xx = 0; xx < ow; xx++) {
                    double sum = b[o], scale = fabs(b[o]);
                    for (size_t c = 0; c < ws[1]; c++)
                        for (size_t i = 0; i < ws[2]; i++)
                            for (size_t j = 0; j < ws[3]; j++) {
                                double t = (double)w[((o * ws[1] + c) * ws[2] + i) * ws[3] + j] *
                                           x[((n * xs[1] + c) * xs[2] + y + i) * xs[3] + xx + j];
                                sum += t;
                                scale += fabs(t);
                            }
                    if (relu && sum < 0) {
                        sum = 0;
                    }
                    double err = fabs(got[((n * ws[0] + o) * oh + y) * ow + xx] - sum) / (scale > 0 ? scale : 1);
                    worst = err > worst ? err : worst;
                }
    printf("%-22s largest error / scale = %.2e\n", name, worst);
    if (!(worst <= 1e-5)) {
        failures++;
    }
}

/* A 2x2 stride-2 max pool in NCHW, compared with `got` (exactly). */
static void compare_pool(const char *name, const float *x, const size_t xs[4], const float *got) {
    size_t oh = xs[2] / 2, ow = xs[3] / 2, wrong = 0;
    for (size_t p = 0; p < xs[0] * xs[1]; p++)
        for (size_t y = 0; y < oh; y++)
            for (size_t xx = 0; xx < ow; xx++) {
                const float *r = x + (p * xs[2] + 2 * y) * xs[3] + 2 * xx;
                float m = fmaxf(fmaxf(r[0], r[1]), fmaxf(r[xs[3]], r[xs[3] + 1]));
                wrong += got[(p * oh + y) * ow + xx] != m;
            }
    printf("%-22s %zu of %zu outputs differ\n", name, wrong, xs[0] * xs[1] * oh * ow);
    failures += wrong != 0;
}

/* NCHW -> NHWC (logical shape unchanged). */
static float *to_nhwc(const float *x, const size_t s[4]) {
    float *y = malloc(count(s) * sizeof *y);
    if (!y) {
        exit(1);
    }
    for (size_t n = 0; n < s[0]; n++)
        for (size_t c = 0; c < s[1]; c++)
            for (size_t i = 0; i < s[2] * s[3]; i++) {
                y[(n * s[2] * s[3] + i) * s[1] + c] = x[(n * s[1] + c) * s[2] * s[3] + i];
            }
    return y;
}

int main(void) {
    const size_t x_shape[4] = {2, 1, 32, 32};
    const size_t w1_shape[4] = {6, 1, 5, 5}, w2_shape[4] = {16, 6, 5, 5}, w3_shape[4] = {120, 16, 5, 5};
    float *x = filled(count(x_shape), 1);
    float *w1 = filled(count(w1_shape), 2), *b1 = filled(6, 3);
    float *w2 = filled(count(w2_shape), 4), *b2 = filled(16, 5);
    float *w3 = filled(count(w3_shape), 6), *b3 = filled(120, 7);

    cg_conv2d_params relu;
    cg_conv2d_params_default(&relu);
    relu.activation = CG_ACTIVATION_RELU;
    cg_conv2d_params linear;
    cg_conv2d_params_default(&linear);
    cg_pool2d_params pool;
    cg_pool2d_params_default(&pool, 2, 2);

    /* conv1 + ReLU, then pool. */
    size_t c1_shape[4], p1_shape[4];
    check(cg_conv2d_output_shape(x_shape, w1_shape, &relu, c1_shape), "conv1 shape");
    float *c1 = malloc(count(c1_shape) * sizeof *c1);
    check(cg_conv2d(x, count(x_shape), x_shape, w1, count(w1_shape), w1_shape, b1, 6, &relu, c1, count(c1_shape)),
          "conv1");
    compare_conv("conv1 1->6 5x5 relu", x, x_shape, w1, w1_shape, b1, 1, c1);
    check(cg_pool2d_output_shape(c1_shape, &pool, p1_shape), "pool1 shape");
    float *p1 = malloc(count(p1_shape) * sizeof *p1);
    check(cg_max_pool2d(c1, count(c1_shape), c1_shape, &pool, p1, count(p1_shape)), "pool1");
    compare_pool("pool1 2x2", c1, c1_shape, p1);

    /* conv2 + ReLU through a plan, in NCHW and channels-last. */
    size_t c2_shape[4], p2_shape[4];
    check(cg_conv2d_output_shape(p1_shape, w2_shape, &relu, c2_shape), "conv2 shape");
    float *c2 = malloc(count(c2_shape) * sizeof *c2);
    cg_conv2d_plan *plan = NULL;
    check(cg_conv2d_plan_create(w2, count(w2_shape), w2_shape, b2, 16, &relu, &plan), "conv2 plan");
    check(cg_conv2d_plan_run(plan, p1, count(p1_shape), p1_shape, c2, count(c2_shape)), "conv2");
    cg_conv2d_plan_destroy(plan);
    compare_conv("conv2 6->16 5x5 relu", p1, p1_shape, w2, w2_shape, b2, 1, c2);

    cg_conv2d_params relu_nhwc = relu;
    relu_nhwc.layout = CG_LAYOUT_NHWC;
    float *p1_nhwc = to_nhwc(p1, p1_shape);
    float *c2_nhwc = malloc(count(c2_shape) * sizeof *c2_nhwc);
    check(cg_conv2d_plan_create(w2, count(w2_shape), w2_shape, b2, 16, &relu_nhwc, &plan), "conv2 NHWC plan");
    check(cg_conv2d_plan_run(plan, p1_nhwc, count(p1_shape), p1_shape, c2_nhwc, count(c2_shape)), "conv2 NHWC");
    cg_conv2d_plan_destroy(plan);
    float *c2_as_nhwc = to_nhwc(c2, c2_shape);
    int same = memcmp(c2_as_nhwc, c2_nhwc, count(c2_shape) * sizeof(float)) == 0;
    printf("%-22s %s\n", "conv2 channels-last", same ? "the same bits as NCHW" : "DIFFERS from NCHW");
    failures += !same;

    check(cg_pool2d_output_shape(c2_shape, &pool, p2_shape), "pool2 shape");
    float *p2 = malloc(count(p2_shape) * sizeof *p2);
    check(cg_max_pool2d(c2, count(c2_shape), c2_shape, &pool, p2, count(p2_shape)), "pool2");
    compare_pool("pool2 2x2", c2, c2_shape, p2);

    /* conv3: 120 features per image. */
    size_t c3_shape[4];
    check(cg_conv2d_output_shape(p2_shape, w3_shape, &linear, c3_shape), "conv3 shape");
    float *c3 = malloc(count(c3_shape) * sizeof *c3);
    check(cg_conv2d(p2, count(p2_shape), p2_shape, w3, count(w3_shape), w3_shape, b3, 120, &linear, c3,
                    count(c3_shape)),
          "conv3");
    compare_conv("conv3 16->120 5x5", p2, p2_shape, w3, w3_shape, b3, 0, c3);
    printf("image 0, features 0..3: %.4f %.4f %.4f %.4f\n", c3[0], c3[1], c3[2], c3[3]);

    free(x), free(w1), free(b1), free(w2), free(b2), free(w3), free(b3);
    free(c1), free(p1), free(c2), free(p1_nhwc), free(c2_nhwc), free(c2_as_nhwc), free(p2), free(c3);
    printf(failures ? "FAILED\n" : "ok\n");
    return failures ? 1 : 0;
}
