/* An independent check of fp16 arithmetic under qemu, for the fp16 verdict.
 *
 * Computes a 3x3 stride-2 depthwise convolution (pad 1, 8 channels, 28x28 in,
 * 14x14 out: the shape ncnn gets wrong) with ARMv8.2 fp16 vector FMAs on
 * 8-channel-packed data, like ncnn's pack8 kernel, but with its own loads. It
 * prints the worst error per output column against a double-precision reference
 * on the same fp16 inputs. If qemu mis-executed fp16 FMLA on this shape, the last
 * column would be wrong here too.
 */
#include <arm_neon.h>
#include <math.h>
#include <stdio.h>

#define C 8
#define W 28
#define OUT 14
#define PADDED (W + 2)

static __fp16 x[PADDED][PADDED][C]; /* zero border of one pixel */
static __fp16 k[9][C];
static __fp16 bias[C];

static float lcg(unsigned *s) { /* uniform in [-1, 1), the same on every machine */
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / (float)(1u << 23) - 1.0f;
}

int main(void) {
    unsigned seed = 1;
    for (int i = 0; i < W; i++)
        for (int j = 0; j < W; j++)
            for (int c = 0; c < C; c++) x[i + 1][j + 1][c] = (__fp16)(2.0f * lcg(&seed));
    for (int t = 0; t < 9; t++)
        for (int c = 0; c < C; c++) k[t][c] = (__fp16)lcg(&seed);
    for (int c = 0; c < C; c++) bias[c] = (__fp16)(0.1f * lcg(&seed));

    double worst_column[OUT] = {0};
    for (int i = 0; i < OUT; i++) {
        for (int j = 0; j < OUT; j++) {
            float16x8_t sum = vld1q_f16(bias);
            for (int t = 0; t < 9; t++)
                sum = vfmaq_f16(sum, vld1q_f16(k[t]), vld1q_f16(x[2 * i + t / 3][2 * j + t % 3]));
            __fp16 got[C];
            vst1q_f16(got, sum);
            for (int c = 0; c < C; c++) {
                double ref = bias[c];
                for (int t = 0; t < 9; t++) ref += (double)k[t][c] * x[2 * i + t / 3][2 * j + t % 3][c];
                double err = fabs((double)got[c] - ref);
                if (err > worst_column[j]) worst_column[j] = err;
            }
        }
    }
    double worst = 0;
    printf("worst abs error per output column:");
    for (int j = 0; j < OUT; j++) {
        printf(" %.4f", worst_column[j]);
        if (worst_column[j] > worst) worst = worst_column[j];
    }
    printf("\nworst %.4f\n", worst);
    return worst < 0.02 ? 0 : 1;
}
