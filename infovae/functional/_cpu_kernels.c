/* CPU kernels for the small-sample regularizers and PixelCNN++'s concat_elu: one call does what the
 * eager path spends many tensor operations on (see infovae/functional/native.py, which calls this and
 * documents when).
 *
 * mmd_rbf_biased: the biased (V-statistic) MMD^2 of two float32 samples under a sum of rbf
 * kernels, and its gradient, with the guarantees of infovae.functional.mmd:
 *   - canonical order: each sample's rows sorted by a float64 projection key, the samples
 *     ordered by size, then by the sums of their sorted keys, so the arithmetic below sees the
 *     same rows in the same order whatever order the caller gave (bitwise permutation
 *     invariance and symmetry in x, y);
 *   - whatever this kernel cannot decide cheaply (two equal keys in a sample, equal key sums,
 *     a non-finite key) it declines, returning None: the caller's general path handles ties,
 *     the same multiset (exactly 0) and the error for non-finite input;
 *   - translation safety: rows centred on their float64 mean before any distance;
 *   - distances in the direct form sum_k (a_k - b_k)^2, kernels, sums and the gradient in
 *     float64; the value rounded once to the caller's float32, the gradient once per entry.
 * The kernel matrix is symmetric bit for bit ((a - b)^2 == (b - a)^2 in IEEE arithmetic and the
 * sum over k runs in one order), its diagonal exactly 1 per bandwidth.
 *
 * stein_rbf: the SVGD direction (infovae.functional.stein_direction) for one rbf bandwidth, or
 * with the SVGD median heuristic (numpy's median of the full distance matrix, by quickselect on
 * the float64 direct-form distances), also in float64 internally.
 *
 * concat_elu_forward / concat_elu_backward: PixelCNN++'s elu([x, -x]) written with the zero margins of the
 * convolution that reads it and an optional dropout mask, in one pass over float32 planes (16 lanes, expm1
 * by range reduction and a degree-7 series), and its input gradient in one pass (from the output, as
 * torch's elu_backward on the result). torch spends five and three elementwise passes on them.
 *
 * Build: setup.py (optional: without a C compiler the package runs the eager path). On x86-64
 * Linux with GCC >= 11 the hot loop is compiled for x86-64-v4, -v3 and the baseline and chosen at
 * load time (target_clones), so one wheel runs on any x86-64 CPU.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Eight float64 lanes (GCC / Clang vector extension: one AVX-512 register, two AVX2 ones,
 * four SSE2 ones, as the clone compiled for). */
typedef double v8d __attribute__((vector_size(64)));
typedef int64_t v8l __attribute__((vector_size(64)));
#define LANES 8
#define MAX_SCALES 16
#define MAX_ROWS (1 << 20)

/* exp(-x) lane by lane for x >= 0: 2^t with t = -x log2(e) = k + f, k = round(t), |f| <= 1/2;
 * 2^f = exp(f ln 2) by its Taylor series to degree 10 (truncation below 1e-13 relative), scaled
 * by 2^k through the exponent bits. Lanes with t < -1022 (values below 2^-1022) give 0; NaN
 * lanes give NaN; x = 0 gives exactly 1. Branch-free, so it vectorizes. */
ALWAYS_INLINE v8d exp_neg(v8d x) {
    const v8d shifter = (v8d){0} + 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
    v8d t = x * -1.4426950408889634;
    v8l under = t < -1022.0;
    v8d tc = (v8d)(((v8l)t & ~under) | ((v8l)((v8d){0} - 1022.0) & under));
    v8d u = tc + shifter; /* the low mantissa bits of u hold k */
    v8d f = (tc - (u - shifter)) * 0.6931471805599453;
    v8d p = (v8d){0} + 1.0 / 3628800.0;
    p = p * f + 1.0 / 362880.0;
    p = p * f + 1.0 / 40320.0;
    p = p * f + 1.0 / 5040.0;
    p = p * f + 1.0 / 720.0;
    p = p * f + 1.0 / 120.0;
    p = p * f + 1.0 / 24.0;
    p = p * f + 1.0 / 6.0;
    p = p * f + 0.5;
    p = p * f + 1.0;
    p = p * f + 1.0;
    v8l two_k = ((v8l)u + 1023) << 52; /* the bits of 2^k: k + bias in the exponent field */
    v8d r = p * (v8d)two_k;
    return (v8d)((v8l)r & ~under);
}

/* The lanes' sum in one fixed order. */
ALWAYS_INLINE double lane_sum(v8d v) {
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

/* Row i of the rbf MMD over the pooled centred rows. ct: d blocks of `blocks` vectors, block k
 * holding coordinate k of every row (column-major, padded to a multiple of 8 rows with zeros);
 * w: the rows' weights (1/n, -1/m; 0 on padding), as `blocks` vectors; fac: the S factors
 * c_s = 1 / (2 sigma_s^2), ascending, with squarings[s] > 0 where c_s = 2^squarings[s] c_{s-1}
 * exactly (a bandwidth ladder such as the default 1, 2, 4: one exp serves it). Returns sum_j w_j K_ij with K = sum_s exp(-c_s r_ij). With grow
 * (d doubles), grow[k] = 4 w_i sum_{j != i} w_j E_ij (z_jk - z_ik), E = sum_s c_s exp(-c_s r_ij):
 * the gradient of sum_jl w_j w_l K_jl with respect to row i. scratch: `blocks` vectors. */
MULTIVERSION
static double rbf_row(const v8d *ct, const v8d *w, int blocks, int d, int i, const double *fac,
                      const int *squarings, int S, v8d *scratch, double *grow) {
    const double *ctd = (const double *)ct;
    const int64_t stride = (int64_t)blocks * LANES;
    v8d kacc = {0};
    for (int b = 0; b < blocks; b++) {
        v8d r = {0};
        for (int k = 0; k < d; k++) {
            v8d t = ctd[k * stride + i] - ct[(int64_t)k * blocks + b];
            r += t * t;
        }
        v8d kk = {0}, ee = {0}, e = {0};
        for (int s = 0; s < S; s++) {
            if (squarings[s] == 0) {
                e = exp_neg(r * fac[s]);
            } else {
                /* c_s = 2^q c_{s-1}: exp(-c_s r) = exp(-c_{s-1} r)^(2^q), q squarings (relative error
                   2^q times the exp's); values below 2^-511 go to 0 first, as exp_neg's below
                   2^-1022, so that no square is subnormal */
                for (int q = 0; q < squarings[s]; q++) {
                    v8l tiny = e < 0x1p-511;
                    e = (v8d)((v8l)e & ~tiny);
                    e = e * e;
                }
            }
            kk += e;
            ee += fac[s] * e;
        }
        scratch[b] = w[b] * ee;
        kacc += w[b] * kk;
    }
    if (grow) {
        /* the j = i term is 0 (z_i - z_i) but would enter as w_i E_ii z_i - z_i w_i E_ii, large
           against the off-diagonal terms when the kernel is narrow: leave it out */
        ((double *)scratch)[i] = 0.0;
        v8d aacc = {0};
        for (int b = 0; b < blocks; b++) aacc += scratch[b];
        double asum = lane_sum(aacc), wi = ((const double *)w)[i];
        for (int k = 0; k < d; k++) {
            const v8d *col = ct + (int64_t)k * blocks;
            v8d acc = {0};
            for (int b = 0; b < blocks; b++) acc += scratch[b] * col[b];
            grow[k] = 4.0 * wi * (lane_sum(acc) - ctd[k * stride + i] * asum);
        }
    }
    return lane_sum(kacc);
}

typedef struct {
    double key;
    int row;
} keyed_row;

static int by_key(const void *a, const void *b) {
    double ka = ((const keyed_row *)a)->key, kb = ((const keyed_row *)b)->key;
    return (ka > kb) - (ka < kb);
}

/* The rows of z (rows, d) sorted by their float64 keys sum_k z_k (1 + k (sqrt 5 - 1) / 2), and
 * the keys' sum in that order. 0 (decline) when a key is not finite or two keys tie. */
static int sort_by_key(const float *z, int rows, int d, keyed_row *out, double *key_sum) {
    for (int i = 0; i < rows; i++) {
        const float *row = z + (int64_t)i * d;
        double key = 0.0;
        for (int k = 0; k < d; k++) key += (double)row[k] * (1.0 + k * 0.6180339887498949);
        if (!isfinite(key)) return 0;
        out[i].key = key;
        out[i].row = i;
    }
    qsort(out, rows, sizeof(keyed_row), by_key);
    double s = 0.0;
    for (int i = 0; i < rows; i++) {
        if (i > 0 && !(out[i].key > out[i - 1].key)) return 0;
        s += out[i].key;
    }
    *key_sum = s;
    return 1;
}

/* 1: value (and gradients) written; 0: declined; -1: out of memory. */
static int rbf_mmd_biased(const float *x, const float *y, int n, int m, int d, const double *fac,
                          const int *squarings, int S,
                          float *gx, float *gy, double *value_out) {
    const int N = n + m, blocks = (N + LANES - 1) / LANES;
    const int64_t stride = (int64_t)blocks * LANES;
    keyed_row *keys = malloc(sizeof(keyed_row) * (size_t)N);
    size_t vectors = (size_t)blocks * (size_t)d + 2 * (size_t)blocks + ((size_t)d + LANES - 1) / LANES;
    v8d *work = aligned_alloc(sizeof(v8d), sizeof(v8d) * vectors);
    int status = 1;
    double sx = 0.0, sy = 0.0;
    if (!keys || !work)
        status = -1;
    else if (!sort_by_key(x, n, d, keys, &sx) || !sort_by_key(y, m, d, keys + n, &sy) || (n == m && sx == sy))
        status = 0;
    if (status == 1) {
        /* canonical pair: the smaller sample first; equal sizes by the smaller key sum */
        const int swap = n != m ? n > m : sy < sx;
        const float *a = swap ? y : x, *b = swap ? x : y;
        const keyed_row *ka = swap ? keys + n : keys, *kb = swap ? keys : keys + n;
        float *ga = swap ? gy : gx, *gb = swap ? gx : gy;
        const int na = swap ? m : n;
        v8d *ct = work, *w = work + (size_t)blocks * d, *scratch = w + blocks;
        double *grow = (double *)(scratch + blocks), *ctd = (double *)ct, *wd = (double *)w;
        memset(work, 0, sizeof(v8d) * vectors);
        for (int i = 0; i < N; i++) {
            const float *row = i < na ? a + (int64_t)ka[i].row * d : b + (int64_t)kb[i - na].row * d;
            for (int k = 0; k < d; k++) ctd[k * stride + i] = row[k];
            wd[i] = i < na ? 1.0 / na : -1.0 / (N - na);
        }
        for (int k = 0; k < d; k++) {
            double *col = ctd + k * stride, mean = 0.0;
            for (int i = 0; i < N; i++) mean += col[i];
            mean /= N;
            for (int i = 0; i < N; i++) col[i] -= mean;
        }
        double value = 0.0;
        for (int i = 0; i < N; i++) {
            value += wd[i] * rbf_row(ct, w, blocks, d, i, fac, squarings, S, scratch, ga ? grow : NULL);
            if (ga) {
                float *out = i < na ? ga + (int64_t)ka[i].row * d : gb + (int64_t)kb[i - na].row * d;
                for (int k = 0; k < d; k++) out[k] = (float)grow[k];
            }
        }
        if (!(value >= 0.0)) {
            /* >= 0 exactly for a positive-definite kernel: a negative value is rounding, and the
               clamped function has zero gradient there */
            value = 0.0;
            if (gx) {
                memset(gx, 0, sizeof(float) * (size_t)n * d);
                memset(gy, 0, sizeof(float) * (size_t)m * d);
            }
        }
        *value_out = value;
    }
    free(keys);
    free(work);
    return status;
}

/* k-th smallest (0-based) of v[0..count) by quickselect; reorders v. */
static double kth_smallest(double *v, int64_t count, int64_t k) {
    int64_t lo = 0, hi = count - 1;
    while (lo < hi) {
        double pivot = v[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                double t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return v[k];
    }
    return v[k];
}

/* Row i of the squared distances of the centred rows ct (layout of rbf_row) into r (blocks vectors). */
MULTIVERSION
static void dist_row(const v8d *ct, int blocks, int d, int i, v8d *r) {
    const double *ctd = (const double *)ct;
    const int64_t stride = (int64_t)blocks * LANES;
    for (int b = 0; b < blocks; b++) {
        v8d acc = {0};
        for (int k = 0; k < d; k++) {
            v8d t = ctd[k * stride + i] - ct[(int64_t)k * blocks + b];
            acc += t * t;
        }
        r[b] = acc;
    }
}

/* Row i of the SVGD direction with K = exp(-r / (2 sigma^2)) (inv = 1 / sigma^2) from the distance
 * row r, the centred rows ct and the scores st (same layout): phi_i = (1/n) [sum_j K_ij s_j +
 * inv (c_i sum_{j != i} K_ij - sum_{j != i} K_ij c_j)], the j = i term (K_ii = 1, no repulsion) kept
 * out of the repulsion sums, where it would only cancel. scratch: blocks vectors. */
MULTIVERSION
static void stein_row(const v8d *ct, const v8d *st, const v8d *r, const v8d *pad, int blocks, int d, int n, int i,
                      double inv, v8d *scratch, double *phi) {
    const double *ctd = (const double *)ct, *std_ = (const double *)st;
    const int64_t stride = (int64_t)blocks * LANES;
    v8d ksum = {0};
    for (int b = 0; b < blocks; b++) {
        v8d kk = exp_neg(r[b] * (0.5 * inv)) * pad[b];
        scratch[b] = kk;
    }
    ((double *)scratch)[i] = 0.0;
    for (int b = 0; b < blocks; b++) ksum += scratch[b];
    const double ks = lane_sum(ksum);
    for (int k = 0; k < d; k++) {
        const v8d *ccol = ct + (int64_t)k * blocks, *scol = st + (int64_t)k * blocks;
        v8d as = {0}, ac = {0};
        for (int b = 0; b < blocks; b++) {
            as += scratch[b] * scol[b];
            ac += scratch[b] * ccol[b];
        }
        const double ci = ctd[k * stride + i];
        phi[k] = ((lane_sum(as) + std_[k * stride + i]) + inv * (ci * ks - lane_sum(ac))) / n;
    }
}

/* 1: sigma (and phi when wanted) written; 0: declined; -1: out of memory. sigma_in > 0: that
 * bandwidth; otherwise the SVGD median heuristic (see infovae.functional.stein). */
static int stein_rbf(const float *z, const float *score, int n, int d, double sigma_in, float *phi_out,
                     double *sigma_out) {
    const int blocks = (n + LANES - 1) / LANES;
    const int64_t stride = (int64_t)blocks * LANES;
    const int want = phi_out != NULL, median = !(sigma_in > 0.0);
    const int64_t pairs = (int64_t)n * (n - 1) / 2;
    size_t vectors = 2 * (size_t)blocks * d + (size_t)n * blocks + 2 * (size_t)blocks + ((size_t)d + LANES - 1) / LANES;
    v8d *work = aligned_alloc(sizeof(v8d), sizeof(v8d) * vectors);
    double *sel = median && pairs > 0 ? malloc(sizeof(double) * (size_t)pairs) : NULL;
    int status = 1;
    if (!work || (median && pairs > 0 && !sel)) {
        free(work);
        free(sel);
        return -1;
    }
    memset(work, 0, sizeof(v8d) * vectors);
    v8d *ct = work, *st = ct + (size_t)blocks * d, *rows = st + (size_t)blocks * d, *pad = rows + (size_t)n * blocks;
    v8d *scratch = pad + blocks;
    double *phi = (double *)(scratch + blocks), *ctd = (double *)ct, *std_ = (double *)st, *padd = (double *)pad;
    for (int i = 0; i < n; i++) {
        padd[i] = 1.0;
        for (int k = 0; k < d; k++) {
            const double zv = z[(int64_t)i * d + k], sv = want ? score[(int64_t)i * d + k] : 0.0;
            if (!isfinite(zv) || !isfinite(sv)) status = 0;
            ctd[k * stride + i] = zv;
            std_[k * stride + i] = sv;
        }
    }
    if (status == 1) {
        for (int k = 0; k < d; k++) {
            double *col = ctd + k * stride, mean = 0.0;
            for (int i = 0; i < n; i++) mean += col[i];
            mean /= n;
            for (int i = 0; i < n; i++) col[i] -= mean;
        }
        for (int i = 0; i < n; i++) dist_row(ct, blocks, d, i, rows + (size_t)i * blocks);
        double sigma = sigma_in;
        if (median) {
            if (n < 2) {
                status = 0;
            } else {
                /* numpy's median of the full n x n matrix: sorted, it is n zeros (the diagonal)
                   followed by every pair value twice */
                int64_t c = 0;
                for (int i = 0; i < n; i++) {
                    const double *ri = (const double *)(rows + (size_t)i * blocks);
                    for (int j = i + 1; j < n; j++) sel[c++] = ri[j];
                }
                const int64_t total = (int64_t)n * n;
                int64_t ranks[2] = {total / 2 - 1, total / 2};
                const int count = total % 2 ? 1 : 2;
                if (count == 1) ranks[0] = total / 2;
                double vals[2];
                for (int q = 0; q < count; q++)
                    vals[q] = ranks[q] < n ? 0.0 : kth_smallest(sel, pairs, (ranks[q] - n) / 2);
                const double med = count == 1 ? vals[0] : (vals[0] + vals[1]) / 2.0;
                if (!(med > 0.0))
                    status = 0; /* coinciding rows: the general path's rule */
                else
                    sigma = sqrt(med / (2.0 * log(n + 1.0)));
            }
        }
        if (status == 1) {
            *sigma_out = sigma;
            if (want) {
                const double inv = 1.0 / (sigma * sigma);
                for (int i = 0; i < n; i++) {
                    stein_row(ct, st, rows + (size_t)i * blocks, pad, blocks, d, n, i, inv, scratch, phi);
                    for (int k = 0; k < d; k++) phi_out[(int64_t)i * d + k] = (float)phi[k];
                }
            }
        }
    }
    free(work);
    free(sel);
    return status;
}

PyDoc_STRVAR(stein_rbf_doc,
             "stein_rbf(z_ptr, score_ptr, n, d, sigma, phi_ptr) -> float or None\n\n"
             "The SVGD direction phi (n, d) float32 of the float32 particles z and scores at the given\n"
             "addresses (C-contiguous (n, d)) under the rbf kernel with bandwidth sigma, or with the\n"
             "SVGD median heuristic when sigma is 0; returns the sigma used. With phi_ptr 0 only sigma\n"
             "is computed (score_ptr may then be 0). None when the kernel declines (non-finite\n"
             "input, a median of 0 or n < 2 under the heuristic): nothing is written then. Private.");

static PyObject *stein_rbf_py(PyObject *self, PyObject *args) {
    unsigned long long zp, sp, pp;
    Py_ssize_t n, d;
    double sigma;
    if (!PyArg_ParseTuple(args, "KKnndK", &zp, &sp, &n, &d, &sigma, &pp)) return NULL;
    if (n < 1 || d < 1 || n > MAX_ROWS || d > MAX_ROWS) {
        PyErr_Format(PyExc_ValueError, "stein_rbf: sizes n=%zd, d=%zd out of range", n, d);
        return NULL;
    }
    if (!zp || (pp && !sp)) {
        PyErr_SetString(PyExc_ValueError, "stein_rbf: null particle address, or a direction without scores");
        return NULL;
    }
    if (!(sigma >= 0.0) || !isfinite(sigma)) {
        PyErr_SetString(PyExc_ValueError, "stein_rbf: sigma must be positive and finite (0: the median heuristic)");
        return NULL;
    }
    double used = 0.0;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = stein_rbf((const float *)(uintptr_t)zp, (const float *)(uintptr_t)sp, (int)n, (int)d, sigma,
                       (float *)(uintptr_t)pp, &used);
    Py_END_ALLOW_THREADS
    if (status < 0) return PyErr_NoMemory();
    if (status == 0) Py_RETURN_NONE;
    return PyFloat_FromDouble(used);
}

PyDoc_STRVAR(mmd_rbf_biased_doc,
             "mmd_rbf_biased(x_ptr, y_ptr, n, m, d, sigmas, gx_ptr, gy_ptr) -> float or None\n\n"
             "The biased MMD^2 of the float32 rows x (n, d) and y (m, d), C-contiguous, at the given\n"
             "addresses, under the sum of rbf kernels with the given sigmas; with gx_ptr and gy_ptr\n"
             "nonzero, its gradients are written there ((n, d) and (m, d) float32). None when the\n"
             "kernel declines (ties, equal key sums, non-finite rows): nothing is written then.\n"
             "Private: the caller guarantees the addresses, shapes and dtypes.");

static PyObject *mmd_rbf_biased(PyObject *self, PyObject *args) {
    unsigned long long xp, yp, gxp, gyp;
    Py_ssize_t n, m, d;
    PyObject *sigmas;
    if (!PyArg_ParseTuple(args, "KKnnnOKK", &xp, &yp, &n, &m, &d, &sigmas, &gxp, &gyp)) return NULL;
    if (n < 1 || m < 1 || d < 1 || n + m > MAX_ROWS || d > MAX_ROWS) {
        PyErr_Format(PyExc_ValueError, "mmd_rbf_biased: sizes n=%zd, m=%zd, d=%zd out of range", n, m, d);
        return NULL;
    }
    if (!xp || !yp || (gxp == 0) != (gyp == 0)) {
        PyErr_SetString(PyExc_ValueError, "mmd_rbf_biased: null input address, or only one gradient address");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(sigmas, "mmd_rbf_biased: sigmas must be a sequence of floats");
    if (!seq) return NULL;
    const Py_ssize_t S = PySequence_Fast_GET_SIZE(seq);
    double fac[MAX_SCALES];
    if (S < 1 || S > MAX_SCALES) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "mmd_rbf_biased: 1 to %d sigmas, got %zd", MAX_SCALES, S);
        return NULL;
    }
    for (Py_ssize_t s = 0; s < S; s++) {
        const double sigma = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, s));
        if (sigma == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
        if (!(sigma > 0.0) || !isfinite(sigma)) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "mmd_rbf_biased: sigmas must be positive and finite");
            return NULL;
        }
        fac[s] = 1.0 / (2.0 * sigma * sigma);
    }
    Py_DECREF(seq);
    /* the factors ascending (the kernel is their sum: order only changes rounding), and where one
       is the previous times 2^q exactly (1 <= q <= 4), q squarings instead of an exp */
    int squarings[MAX_SCALES];
    for (Py_ssize_t s = 1; s < S; s++)
        for (Py_ssize_t t = s; t > 0 && fac[t] < fac[t - 1]; t--) {
            const double f = fac[t];
            fac[t] = fac[t - 1];
            fac[t - 1] = f;
        }
    for (Py_ssize_t s = 0; s < S; s++) {
        squarings[s] = 0;
        for (int q = 1; s > 0 && q <= 4; q++)
            if (fac[s] == ldexp(fac[s - 1], q)) squarings[s] = q;
    }
    double value = 0.0;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = rbf_mmd_biased((const float *)(uintptr_t)xp, (const float *)(uintptr_t)yp, (int)n, (int)m, (int)d, fac, squarings,
                            (int)S, (float *)(uintptr_t)gxp, (float *)(uintptr_t)gyp, &value);
    Py_END_ALLOW_THREADS
    if (status < 0) return PyErr_NoMemory();
    if (status == 0) Py_RETURN_NONE;
    return PyFloat_FromDouble(value);
}

/* ---- concat_elu: elu([x, -x]) along channels, written with zero margins (PixelCNN++) ---------------- */

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
#define FLANES 16

/* expm1(t) lane by lane for t <= 0 (float32): t = k ln2 + f, k = round(t log2 e), |f| <= ln2 / 2
 * (Cody-Waite, ln2 in two parts so k ln2_hi is exact), expm1(f) by its Taylor series to degree 7
 * (truncation below 3e-9 relative), then expm1(t) = 2^k expm1(f) + (2^k - 1). For k = 0 that is
 * the series alone, so tiny t keeps its relative accuracy; t < -30 is taken as -30 (expm1 is -1 in
 * float32 from t < -17 on). NaN lanes give NaN. Within 2 ulp of the exact value (tests: float64). */
ALWAYS_INLINE v16f expm1_nonpos(v16f t) {
    const v16f shifter = (v16f){0} + 12582912.0f; /* 1.5 * 2^23 */
    v16i low = t < -30.0f;
    t = (v16f)(((v16i)t & ~low) | ((v16i)((v16f){0} - 30.0f) & low));
    v16f u = t * 1.44269504f + shifter;
    v16f k = u - shifter;
    v16f f = (t - k * 0.693145751953125f) - k * 1.428606765330187e-06f;
    v16f p = (v16f){0} + 1.0f / 5040.0f;
    p = p * f + 1.0f / 720.0f;
    p = p * f + 1.0f / 120.0f;
    p = p * f + 1.0f / 24.0f;
    p = p * f + 1.0f / 6.0f;
    p = p * f + 0.5f;
    p = p * f * f + f;
    v16i ki = (v16i)u - (v16i)shifter;
    v16f two_k = (v16f)((ki + 127) << 23);
    return two_k * p + (two_k - 1.0f);
}

/* w <= 16 floats into the low lanes (the rest 0) and back; the sizes of the rows PixelCNN++ meets (16, 8)
 * are constant-size copies, which compile to vector loads and stores. */
ALWAYS_INLINE v16f load_lanes(const float *p, int w) {
    v16f v = {0};
    if (w == FLANES)
        memcpy(&v, p, sizeof(float) * FLANES);
    else if (w == 8)
        memcpy(&v, p, sizeof(float) * 8);
    else
        memcpy(&v, p, sizeof(float) * w);
    return v;
}

ALWAYS_INLINE void store_lanes(float *p, v16f v, int w) {
    if (w == FLANES)
        memcpy(p, &v, sizeof(float) * FLANES);
    else if (w == 8)
        memcpy(p, &v, sizeof(float) * 8);
    else
        memcpy(p, &v, sizeof(float) * w);
}

ALWAYS_INLINE v16f select_lanes(v16i where, v16f a, v16f b) { return (v16f)(((v16i)a & where) | ((v16i)b & ~where)); }

/* One row of w inputs: o1 = m1 * elu(x), o2 = m2 * elu(-x) (m = 1 without a mask). */
ALWAYS_INLINE void concat_elu_chunk(const float *x, float *o1, float *o2, const float *m1, const float *m2, int w) {
    const v16i sign = (v16i){0} + INT32_MIN;
    v16f v = load_lanes(x, w);
    v16i pos = v > 0.0f;
    v16f e = expm1_nonpos((v16f)((v16i)v | sign)); /* expm1(-|x|) */
    v16f r1 = select_lanes(pos, v, e);             /* x > 0 ? x : expm1(x) */
    v16f r2 = select_lanes(pos, e, -v);            /* x > 0 ? expm1(-x) : -x */
    if (m1) {
        r1 *= load_lanes(m1, w);
        r2 *= load_lanes(m2, w);
    }
    store_lanes(o1, r1, w);
    store_lanes(o2, r2, w);
}

/* x (B, C, H, W) -> out (B, 2C, H + top + bottom, W + left + right), margins 0; mask (the out's shape) or NULL. */
MULTIVERSION
static void concat_elu_forward(const float *x, float *out, const float *mask, int64_t B, int64_t C, int64_t H,
                               int64_t W, int left, int right, int top, int bottom) {
    const int64_t hp = H + top + bottom, wp = W + left + right, plane = hp * wp;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++) {
            const float *xp = x + (b * C + c) * H * W;
            float *p1 = out + (b * 2 * C + c) * plane, *p2 = p1 + C * plane;
            const float *m1 = mask ? mask + (b * 2 * C + c) * plane : NULL, *m2 = mask ? m1 + C * plane : NULL;
            if (top) {
                memset(p1, 0, sizeof(float) * top * wp);
                memset(p2, 0, sizeof(float) * top * wp);
            }
            if (bottom) {
                memset(p1 + (top + H) * wp, 0, sizeof(float) * bottom * wp);
                memset(p2 + (top + H) * wp, 0, sizeof(float) * bottom * wp);
            }
            for (int64_t r = 0; r < H; r++) {
                const int64_t o = (top + r) * wp;
                for (int j = 0; j < left; j++) p1[o + j] = p2[o + j] = 0.0f;
                for (int j = 0; j < right; j++) p1[o + left + W + j] = p2[o + left + W + j] = 0.0f;
                const float *xr = xp + r * W;
                for (int64_t j = 0; j < W; j += FLANES) {
                    const int w = (int)(W - j < FLANES ? W - j : FLANES);
                    concat_elu_chunk(xr + j, p1 + o + left + j, p2 + o + left + j, m1 ? m1 + o + left + j : NULL,
                                     m2 ? m2 + o + left + j : NULL, w);
                }
            }
        }
}

/* dx (B, C, H, W) = m1 g1 elu'(x) - m2 g2 elu'(-x), from the output y = s m elu(.) that the forward
 * wrote: elu' is 1 where y > 0, y / s + 1 elsewhere (s the mask's scale, 1 without a mask). */
MULTIVERSION
static void concat_elu_backward(const float *g, const float *y, const float *mask, float *dx, int64_t B, int64_t C,
                                int64_t H, int64_t W, int left, int right, int top, int bottom, float inv_s) {
    const int64_t hp = H + top + bottom, wp = W + left + right, plane = hp * wp;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++) {
            const int64_t o1 = (b * 2 * C + c) * plane, o2 = o1 + C * plane;
            float *dp = dx + (b * C + c) * H * W;
            for (int64_t r = 0; r < H; r++) {
                const int64_t o = (top + r) * wp + left;
                for (int64_t j = 0; j < W; j += FLANES) {
                    const int w = (int)(W - j < FLANES ? W - j : FLANES);
                    const v16f one = (v16f){0} + 1.0f;
                    v16f y1 = load_lanes(y + o1 + o + j, w), y2 = load_lanes(y + o2 + o + j, w);
                    v16f d1 = select_lanes(y1 > 0.0f, one, y1 * inv_s + 1.0f);
                    v16f d2 = select_lanes(y2 > 0.0f, one, y2 * inv_s + 1.0f);
                    d1 *= load_lanes(g + o1 + o + j, w);
                    d2 *= load_lanes(g + o2 + o + j, w);
                    if (mask) {
                        d1 *= load_lanes(mask + o1 + o + j, w);
                        d2 *= load_lanes(mask + o2 + o + j, w);
                    }
                    store_lanes(dp + r * W + j, d1 - d2, w);
                }
            }
        }
}

static int elu_sizes(const Py_ssize_t *dims, const int *pads) {
    for (int i = 0; i < 4; i++)
        if (dims[i] < 1 || dims[i] > (1 << 24)) {
            PyErr_SetString(PyExc_ValueError, "concat_elu: sizes out of range");
            return 0;
        }
    for (int i = 0; i < 4; i++)
        if (pads[i] < 0 || pads[i] > 16) {
            PyErr_SetString(PyExc_ValueError, "concat_elu: padding out of range (0 to 16)");
            return 0;
        }
    return 1;
}

PyDoc_STRVAR(concat_elu_forward_doc,
             "concat_elu_forward(x_ptr, out_ptr, mask_ptr, B, C, H, W, left, right, top, bottom) -> None\n\n"
             "out = mask * pad(elu(cat(x, -x))) for float32 C-contiguous x (B, C, H, W) and out, mask\n"
             "(B, 2C, H + top + bottom, W + left + right); mask_ptr 0: no mask. Private.");

static PyObject *concat_elu_forward_py(PyObject *self, PyObject *args) {
    unsigned long long xp, op, mp;
    Py_ssize_t dims[4];
    int pads[4];
    if (!PyArg_ParseTuple(args, "KKKnnnniiii", &xp, &op, &mp, &dims[0], &dims[1], &dims[2], &dims[3], &pads[0], &pads[1],
                          &pads[2], &pads[3]))
        return NULL;
    if (!elu_sizes(dims, pads)) return NULL;
    if (!xp || !op) {
        PyErr_SetString(PyExc_ValueError, "concat_elu_forward: null address");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    concat_elu_forward((const float *)(uintptr_t)xp, (float *)(uintptr_t)op, (const float *)(uintptr_t)mp, dims[0], dims[1],
                       dims[2], dims[3], pads[0], pads[1], pads[2], pads[3]);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(concat_elu_backward_doc,
             "concat_elu_backward(g_ptr, y_ptr, mask_ptr, dx_ptr, B, C, H, W, left, right, top, bottom, scale) -> None\n\n"
             "The input gradient dx (B, C, H, W) of concat_elu_forward from the output gradient g and the\n"
             "output y it wrote (both (B, 2C, H', W'), float32, C-contiguous); mask_ptr 0: no mask, scale\n"
             "the mask's nonzero value (1 without one). Private.");

static PyObject *concat_elu_backward_py(PyObject *self, PyObject *args) {
    unsigned long long gp, yp, mp, dp;
    Py_ssize_t dims[4];
    int pads[4];
    double scale;
    if (!PyArg_ParseTuple(args, "KKKKnnnniiiid", &gp, &yp, &mp, &dp, &dims[0], &dims[1], &dims[2], &dims[3], &pads[0],
                          &pads[1], &pads[2], &pads[3], &scale))
        return NULL;
    if (!elu_sizes(dims, pads)) return NULL;
    if (!gp || !yp || !dp) {
        PyErr_SetString(PyExc_ValueError, "concat_elu_backward: null address");
        return NULL;
    }
    if (!(scale > 0.0) || !isfinite(scale)) {
        PyErr_SetString(PyExc_ValueError, "concat_elu_backward: scale must be positive and finite");
        return NULL;
    }
    const float inv_s = (float)(1.0 / scale);
    Py_BEGIN_ALLOW_THREADS
    concat_elu_backward((const float *)(uintptr_t)gp, (const float *)(uintptr_t)yp, (const float *)(uintptr_t)mp,
                        (float *)(uintptr_t)dp, dims[0], dims[1], dims[2], dims[3], pads[0], pads[1], pads[2], pads[3],
                        inv_s);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"mmd_rbf_biased", mmd_rbf_biased, METH_VARARGS, mmd_rbf_biased_doc},
    {"stein_rbf", stein_rbf_py, METH_VARARGS, stein_rbf_doc},
    {"concat_elu_forward", concat_elu_forward_py, METH_VARARGS, concat_elu_forward_doc},
    {"concat_elu_backward", concat_elu_backward_py, METH_VARARGS, concat_elu_backward_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "infovae.functional._cpu_kernels",
    "CPU kernels of the small-sample regularizers and of concat_elu (private; see infovae.functional.native).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__cpu_kernels(void) { return PyModule_Create(&module); }
