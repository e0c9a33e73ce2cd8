/*
 * The C interface's error paths: every kind of mistake gets its status and a
 * message from cg_last_error(), and leaves every output exactly as it was.
 * Built and run by capi/run-c-tests.sh under AddressSanitizer and
 * UndefinedBehaviorSanitizer, against the static and the shared library.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "convgemm.h"

static int failures = 0;

#define OUT_LEN 64
/* The output buffer, aligned for size_t too (its indices-overlap case). */
static union {
    float f[OUT_LEN + 1];
    size_t z[OUT_LEN / 2 + 1];
} out_buf;
#define out (out_buf.f)
static float out_copy[OUT_LEN + 1];

/* Fills the output with a pattern the library never writes. */
static void arm(void) {
    for (size_t i = 0; i <= OUT_LEN; i++) {
        out[i] = -12345.0f - (float)i;
    }
    memcpy(out_copy, out, sizeof out);
}

/* The call returned `want`; if that is a failure, it said something and
 * wrote nothing. */
static void expect(const char *what, cg_status got, cg_status want) {
    const char *message = want == CG_OK ? "" : cg_last_error();
    int untouched = want == CG_OK || memcmp(out, out_copy, sizeof out) == 0;
    int ok = got == want && message != NULL && (want == CG_OK || strlen(message) > 0) && untouched;
    printf("%-4s %-44s status %2d (want %2d) %s: %s\n", ok ? "ok" : "FAIL", what, (int)got, (int)want,
           untouched ? "output untouched" : "OUTPUT WRITTEN", message ? message : "(NULL message)");
    failures += !ok;
}

int main(void) {
    if (strcmp(cg_last_error(), "") != 0) {
        printf("FAIL cg_last_error() is not \"\" before any failure\n");
        failures++;
    }

    /* A valid 1x2x5x5 input, 4x2x3x3 weight: output 1x4x3x3 = 36 floats. */
    float x[50], w[72], b[4];
    for (int i = 0; i < 50; i++) x[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < 72; i++) w[i] = (float)(i % 5) - 2.0f;
    for (int i = 0; i < 4; i++) b[i] = (float)i;
    size_t xs[4] = {1, 2, 5, 5}, ws[4] = {4, 2, 3, 3};
    const size_t y_len = 36;
    cg_conv2d_params p;
    cg_conv2d_params_default(&p);

    arm();
    expect("a valid call succeeds", cg_conv2d(x, 50, xs, w, 72, ws, b, 4, &p, out, y_len), CG_OK);

    arm();
    expect("input NULL", cg_conv2d(NULL, 50, xs, w, 72, ws, b, 4, &p, out, y_len), CG_ERROR_NULL_POINTER);
    arm();
    expect("params NULL", cg_conv2d(x, 50, xs, w, 72, ws, b, 4, NULL, out, y_len), CG_ERROR_NULL_POINTER);
    arm();
    expect("input_shape NULL", cg_conv2d(x, 50, NULL, w, 72, ws, b, 4, &p, out, y_len), CG_ERROR_NULL_POINTER);
    arm();
    expect("output NULL", cg_conv2d(x, 50, xs, w, 72, ws, b, 4, &p, NULL, y_len), CG_ERROR_NULL_POINTER);
    arm();
    /* An address one byte into the buffer, made as an integer (a misaligned
     * float pointer is never dereferenced here, only handed over). */
    float *odd = (float *)(uintptr_t)((uintptr_t)out + 1);
    expect("output misaligned", cg_conv2d(x, 50, xs, w, 72, ws, b, 4, &p, odd, y_len), CG_ERROR_MISALIGNED);
    arm();
    expect("output overlaps input", cg_conv2d(out, 50, xs, w, 72, ws, b, 4, &p, out + 10, y_len),
           CG_ERROR_ALIASING);
    arm();
    expect("output_len too short", cg_conv2d(x, 50, xs, w, 72, ws, b, 4, &p, out, y_len - 1),
           CG_ERROR_BUFFER_LENGTH);
    arm();
    expect("input_len wrong", cg_conv2d(x, 49, xs, w, 72, ws, b, 4, &p, out, y_len), CG_ERROR_BUFFER_LENGTH);
    arm();
    expect("bias_len wrong", cg_conv2d(x, 50, xs, w, 72, ws, b, 3, &p, out, y_len), CG_ERROR_BUFFER_LENGTH);

    cg_conv2d_params bad = p;
    bad.stride[0] = 0;
    arm();
    expect("stride 0", cg_conv2d(x, 50, xs, w, 72, ws, b, 4, &bad, out, y_len), CG_ERROR_BAD_PARAMETER);
    bad = p;
    bad.layout = (cg_layout)7;
    arm();
    expect("layout 7", cg_conv2d(x, 50, xs, w, 72, ws, b, 4, &bad, out, y_len), CG_ERROR_BAD_PARAMETER);
    bad = p;
    bad.activation = (cg_activation)-1;
    arm();
    expect("activation -1", cg_conv2d(x, 50, xs, w, 72, ws, b, 4, &bad, out, y_len), CG_ERROR_BAD_PARAMETER);
    bad = p;
    bad.precision = (cg_precision)2;
    arm();
    expect("precision 2", cg_conv2d(x, 50, xs, w, 72, ws, b, 4, &bad, out, y_len), CG_ERROR_BAD_PARAMETER);
    bad = p;
    bad.flip = 5;
    arm();
    expect("flip 5", cg_conv2d(x, 50, xs, w, 72, ws, b, 4, &bad, out, y_len), CG_ERROR_BAD_PARAMETER);
    bad = p;
    bad.groups = 2; /* weight[1] must then be 1 */
    arm();
    expect("groups 2 with a 2-channel weight", cg_conv2d(x, 50, xs, w, 72, ws, b, 4, &bad, out, y_len),
           CG_ERROR_SHAPE_MISMATCH);
    size_t big_kernel[4] = {4, 2, 6, 1};
    arm();
    expect("kernel taller than the input", cg_conv2d(x, 50, xs, w, 48, big_kernel, b, 4, &p, out, y_len),
           CG_ERROR_NO_OUTPUT);
    size_t huge[4] = {SIZE_MAX / 2, 2, 5, 5};
    arm();
    expect("a shape beyond the address space", cg_conv2d(x, 50, huge, w, 72, ws, b, 4, &p, out, y_len),
           CG_ERROR_OVERFLOW);
    arm();
    expect("a length beyond the address space", cg_conv2d(x, SIZE_MAX / 2, xs, w, 72, ws, b, 4, &p, out, y_len),
           CG_ERROR_OVERFLOW);

    /* Output shapes: a failure leaves the shape as it was. */
    size_t shape[4] = {7, 7, 7, 7};
    arm();
    expect("output shape, groups 2", cg_conv2d_output_shape(xs, ws, &bad, shape), CG_ERROR_SHAPE_MISMATCH);
    if (shape[0] != 7 || shape[3] != 7) {
        printf("FAIL a failed cg_conv2d_output_shape wrote its output\n");
        failures++;
    }
    memcpy(shape, xs, sizeof shape);
    if (cg_conv2d_output_shape(shape, ws, &p, shape) != CG_OK || shape[1] != 4 || shape[2] != 3) {
        printf("FAIL cg_conv2d_output_shape in place\n");
        failures++;
    }

    /* Plans. */
    cg_conv2d_plan *plan = (cg_conv2d_plan *)(void *)&failures; /* must stay as it is */
    cg_conv2d_plan *const before = plan;
    arm();
    bad.dilation[1] = 0;
    expect("plan with dilation 0", cg_conv2d_plan_create(w, 72, ws, b, 4, &bad, &plan), CG_ERROR_BAD_PARAMETER);
    if (plan != before) {
        printf("FAIL a failed cg_conv2d_plan_create wrote *plan\n");
        failures++;
    }
    arm();
    expect("plan out-pointer NULL", cg_conv2d_plan_create(w, 72, ws, b, 4, &p, NULL), CG_ERROR_NULL_POINTER);
    arm();
    expect("run a NULL plan", cg_conv2d_plan_run(NULL, x, 50, xs, out, y_len), CG_ERROR_NULL_POINTER);
    static size_t not_a_plan[64]; /* zeros: no plan's mark in its first 8 bytes */
    arm();
    expect("run something that is not a plan",
           cg_conv2d_plan_run((const cg_conv2d_plan *)(void *)not_a_plan, x, 50, xs, out, y_len), CG_ERROR_BAD_PLAN);
    if (cg_conv2d_plan_create(w, 72, ws, b, 4, &p, &plan) != CG_OK) {
        printf("FAIL cg_conv2d_plan_create: %s\n", cg_last_error());
        return 1;
    }
    size_t small[4] = {1, 2, 2, 2};
    arm();
    expect("plan on an input smaller than its kernel", cg_conv2d_plan_run(plan, x, 8, small, out, y_len),
           CG_ERROR_NO_OUTPUT);
    arm();
    expect("plan output overlaps input", cg_conv2d_plan_run(plan, out, 50, xs, out + 1, y_len), CG_ERROR_ALIASING);
    cg_conv2d_plan_destroy(plan);
    cg_conv2d_plan_destroy(NULL);

    /* Gradients. */
    cg_conv2d_params act = p;
    act.activation = CG_ACTIVATION_RELU;
    float dy[36] = {0};
    size_t dys[4] = {1, 4, 3, 3};
    arm();
    expect("input gradient with an activation",
           cg_conv2d_backward_input(dy, 36, dys, w, 72, ws, &act, out, 50, xs), CG_ERROR_BAD_PARAMETER);
    size_t wrong_dys[4] = {1, 4, 3, 4};
    arm();
    expect("weight gradient, grad_output shape wrong",
           cg_conv2d_backward_weight(x, 50, xs, dy, 36, wrong_dys, &p, out, 72, ws), CG_ERROR_SHAPE_MISMATCH);
    arm();
    expect("bias gradient, layout 3", cg_conv2d_backward_bias(dy, 36, dys, (cg_layout)3, out, 4),
           CG_ERROR_BAD_PARAMETER);

    /* Transposed convolution and pooling. */
    cg_conv_transpose2d_params tp;
    cg_conv_transpose2d_params_default(&tp);
    tp.output_padding[0] = 1; /* not less than stride 1 nor dilation 1 */
    size_t tw[4] = {2, 4, 3, 3};
    arm();
    expect("transposed, output_padding = stride", cg_conv_transpose2d(x, 50, xs, w, 72, tw, NULL, 0, &tp, out, OUT_LEN),
           CG_ERROR_BAD_PARAMETER);
    cg_pool2d_params pp;
    cg_pool2d_params_default(&pp, 2, 2);
    pp.dilation[0] = 2;
    arm();
    expect("average pooling with dilation", cg_avg_pool2d(x, 50, xs, &pp, out, 8), CG_ERROR_BAD_PARAMETER);
    pp.dilation[0] = 1;
    pp.ceil_mode = 3;
    arm();
    expect("pooling, ceil_mode 3", cg_max_pool2d(x, 50, xs, &pp, out, 8), CG_ERROR_BAD_PARAMETER);
    arm();
    expect("global pooling, output_len wrong", cg_global_avg_pool2d(x, 50, xs, CG_LAYOUT_NHWC, out, 3),
           CG_ERROR_BUFFER_LENGTH);

    /* Max pooling's indices, unpooling, im2col. */
    cg_pool2d_params_default(&pp, 2, 2);
    size_t at[8];
    arm();
    expect("indices overlap the output",
           cg_max_pool2d_with_indices(x, 50, xs, &pp, out, 8, &out_buf.z[1], 4), CG_ERROR_ALIASING);
    size_t ys[4] = {1, 2, 2, 2}, bad_at[8] = {0, 1, 2, 99, 0, 0, 0, 0};
    arm();
    expect("unpool, an index outside its plane",
           cg_max_unpool2d(x, 8, ys, bad_at, 8, CG_LAYOUT_NCHW, out, 50, xs), CG_ERROR_BAD_PARAMETER);
    float maxes[8];
    for (int i = 0; i < 8; i++) at[i] = CG_MAX_POOL_NO_INDEX;
    expect("indices written", cg_max_pool2d_with_indices(x, 50, xs, &pp, maxes, 8, at, 8), CG_OK);
    if (at[0] == CG_MAX_POOL_NO_INDEX || at[0] >= 25) {
        printf("FAIL cg_max_pool2d_with_indices wrote index %zu\n", at[0]);
        failures++;
    }
    size_t kernel[2] = {3, 3};
    arm();
    expect("im2col, cols_len wrong", cg_im2col(x, 50, xs, kernel, &p, out, 10), CG_ERROR_BUFFER_LENGTH);
    arm();
    expect("im2col_len, kernel NULL", cg_im2col_len(xs, NULL, &p, shape), CG_ERROR_NULL_POINTER);

    /* sgemm: 2x3 times 3x2. */
    float a[6] = {1, 2, 3, 4, 5, 6}, bm[6] = {1, 0, 0, 1, 1, 1};
    arm();
    expect("sgemm, b's strides past b_len", cg_sgemm(2, 3, 2, 1.0f, a, 6, 3, 1, bm, 5, 2, 1, 0.0f, out, 4, 2, 1),
           CG_ERROR_BUFFER_LENGTH);
    arm();
    expect("sgemm, a negative stride", cg_sgemm(2, 3, 2, 1.0f, a, 6, -3, 1, bm, 6, 2, 1, 0.0f, out, 4, 2, 1),
           CG_ERROR_BAD_PARAMETER);
    arm();
    expect("sgemm, C rows on one address", cg_sgemm(2, 3, 2, 1.0f, a, 6, 3, 1, bm, 6, 2, 1, 0.0f, out, 4, 0, 1),
           CG_ERROR_ALIASING);
    arm();
    expect("sgemm, C overlaps A", cg_sgemm(2, 3, 2, 1.0f, out, 6, 3, 1, bm, 6, 2, 1, 0.0f, out + 2, 4, 2, 1),
           CG_ERROR_ALIASING);
    arm();
    expect("sgemm, strides summing past 2^127 (a wrap once)",
           cg_sgemm(16, SIZE_MAX, 16, 1.0f, a, 1, PTRDIFF_MAX, PTRDIFF_MAX, bm, 1, PTRDIFF_MAX, PTRDIFF_MAX, 0.0f, out,
                    64, 4, 1),
           CG_ERROR_BUFFER_LENGTH);
    arm();
    expect("sgemm, A NULL", cg_sgemm(2, 3, 2, 1.0f, NULL, 6, 3, 1, bm, 6, 2, 1, 0.0f, out, 4, 2, 1),
           CG_ERROR_NULL_POINTER);
    arm();
    expect("sgemm succeeds", cg_sgemm(2, 3, 2, 1.0f, a, 6, 3, 1, bm, 6, 2, 1, 0.0f, out, 4, 2, 1), CG_OK);
    if (out[0] != 4 || out[1] != 5 || out[2] != 10 || out[3] != 11) {
        printf("FAIL sgemm computed %g %g %g %g, not 4 5 10 11\n", out[0], out[1], out[2], out[3]);
        failures++;
    }

    /* Threads. */
    arm();
    expect("cg_set_num_threads(100000)", cg_set_num_threads(100000), CG_ERROR_BAD_PARAMETER);

    printf(failures ? "FAILED: %d\n" : "ok: every mistake rejected, every output untouched\n", failures);
    return failures ? 1 : 0;
}
