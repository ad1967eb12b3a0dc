/*
 * choral.kernels._dtw_simd -- lock-step SIMD DTW kernels.
 *
 * The expensive part of all-pairs DTW is a long serial recurrence per pair:
 *
 *     D[i][j] = cost(i, j) + min(D[i-1][j], D[i][j-1], D[i-1][j-1])
 *
 * Inside one pair there is little data parallelism (every cell depends on its
 * left neighbour), but across pairs there is plenty.  These kernels therefore
 * run a block of LANES pairs in lock-step: the block's series are interleaved
 * as [t][lane] float32 buffers, two DP rows of (m + 1) * LANES floats are kept,
 * and the innermost loop runs over lanes.  That loop has a fixed trip count and
 * no dependencies between its iterations, so the compiler turns it into plain
 * SIMD code (minps/addps/mulps on 4, 8 or 16 lanes at a time).
 *
 * Pairs inside a block may have different lengths.  Shorter series are padded
 * with zeros and every lane's result is read at its own (n_k - 1, m_k - 1)
 * cell as soon as row n_k - 1 is finished: a DTW cell only depends on cells
 * above and to the left of it, so padded cells never influence a result.
 *
 * A Sakoe-Chiba window (|i - j| <= r) is the same band for all lanes: each row
 * only visits its band and writes +inf into the two cells bordering it, which
 * are the only out-of-band cells the next row reads.
 *
 * Two entry points are exported for ctypes (which releases the GIL, so the
 * Python wrapper can run several calls concurrently on disjoint blocks):
 *
 *   choral_dtw_series  -- 1-D series, cost (x_i - y_j)^2, for a list of pairs;
 *                         the function loops over the blocks itself.
 *   choral_dtw_costs   -- one block of pairs whose local cost matrices were
 *                         precomputed (frame mode: squared Euclidean distance
 *                         between D-dimensional frames, via GEMM in NumPy).
 *
 * Runtime ISA dispatch: on x86-64 with GCC and glibc the block functions are
 * compiled for AVX-512F, AVX2 and baseline x86-64 (target_clones); the loader
 * picks the best one for the running CPU.  Everywhere else this is plain C99.
 *
 * The file is also a (method-less) CPython extension module so that
 * ``import choral.kernels._dtw_simd`` works and setuptools can build it.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef CHORAL_LANES
#define CHORAL_LANES 64
#endif
#define LANES CHORAL_LANES

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    defined(__linux__) && defined(__GLIBC__) && !defined(CHORAL_NO_CLONES)
#define CHORAL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CHORAL_CLONES
#endif

#if defined(_WIN32)
#define CHORAL_EXPORT __declspec(dllexport)
#else
#define CHORAL_EXPORT __attribute__((visibility("default")))
#endif

#define MIN2(a, b) ((a) < (b) ? (a) : (b))

/* Lanes per block, so the Python side can size its cost blocks. */
CHORAL_EXPORT int64_t choral_dtw_lanes(void) { return LANES; }

/*
 * One DP row over the band [lo, hi] for 1-D series.
 *   cur/prev: rows laid out [(j + 1) * LANES + lane]; index 0 is the j = -1
 *             boundary column.
 *   xi:       the LANES values x_k[i].
 *   y:        interleaved y, [j * LANES + lane].
 */
static inline void row_series(float *restrict cur, const float *restrict prev,
                              const float *restrict xi, const float *restrict y,
                              int64_t lo, int64_t hi)
{
    float left[LANES];
    for (int l = 0; l < LANES; l++) left[l] = cur[lo * LANES + l];
    for (int64_t j = lo; j <= hi; j++) {
        const float *restrict yj = y + j * LANES;
        const float *restrict up = prev + (j + 1) * LANES;
        const float *restrict dg = prev + j * LANES;
        float *restrict out = cur + (j + 1) * LANES;
        for (int l = 0; l < LANES; l++) {
            float d = xi[l] - yj[l];
            float m = MIN2(up[l], dg[l]);
            m = MIN2(m, left[l]);
            float v = d * d + m;
            left[l] = v;
            out[l] = v;
        }
    }
}

/* Same row over precomputed costs c[j * LANES + lane] (already for this row). */
static inline void row_costs(float *restrict cur, const float *restrict prev,
                             const float *restrict c, int64_t lo, int64_t hi)
{
    float left[LANES];
    for (int l = 0; l < LANES; l++) left[l] = cur[lo * LANES + l];
    for (int64_t j = lo; j <= hi; j++) {
        const float *restrict cj = c + j * LANES;
        const float *restrict up = prev + (j + 1) * LANES;
        const float *restrict dg = prev + j * LANES;
        float *restrict out = cur + (j + 1) * LANES;
        for (int l = 0; l < LANES; l++) {
            float m = MIN2(up[l], dg[l]);
            m = MIN2(m, left[l]);
            float v = cj[l] + m;
            left[l] = v;
            out[l] = v;
        }
    }
}


#ifndef CHORAL_TILE
#define CHORAL_TILE 4
#endif
#define TILE CHORAL_TILE

#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

/*
 * One sweep over columns j in [jlo, jhi] for H consecutive rows i0..i0+H-1
 * (1-D series).  `row` holds row i0-1 on entry ([(j + 1) * LANES + lane]) and
 * row i0+H-1 on exit; the H rows' running values stay in registers, so the
 * memory traffic per column is one load of the previous row, one load of y_j
 * and one store, shared by H cells per lane.  Columns of [mlo, mhi] are inside
 * the window for all H rows; outside it each cell is checked against the band.
 */
static ALWAYS_INLINE void sweep_cols(float *restrict row, const float *restrict y,
                                     float (*restrict left)[LANES], float (*restrict xr)[LANES],
                                     float *restrict dg0, const int H, const int masked,
                                     int64_t i0, int64_t a, int64_t b, int64_t w)
{
    const float inf = INFINITY;
    for (int64_t j = a; j <= b; j++) {
        const float *restrict yj = y + j * LANES;
        float *restrict rp = row + (j + 1) * LANES;
        float u[LANES], dg[LANES];
        for (int l = 0; l < LANES; l++) {
            u[l] = rp[l];
            dg[l] = dg0[l];
            dg0[l] = u[l];
        }
        for (int r = 0; r < H; r++) {
            const int ok = !masked || (j >= i0 + r - w && j <= i0 + r + w);
            for (int l = 0; l < LANES; l++) {
                float d = xr[r][l] - yj[l];
                float m = MIN2(u[l], dg[l]);
                m = MIN2(m, left[r][l]);
                float v = d * d + m;
                if (masked) v = ok ? v : inf;
                dg[l] = left[r][l];
                left[r][l] = v;
                u[l] = v;
            }
        }
        for (int l = 0; l < LANES; l++) rp[l] = u[l];
    }
}

static ALWAYS_INLINE void sweep_series(float *restrict row, const float *restrict x,
                                       const float *restrict y, const int H, int64_t i0,
                                       int64_t jlo, int64_t jhi, int64_t mlo, int64_t mhi,
                                       int64_t w)
{
    float left[TILE][LANES], xr[TILE][LANES], dg0[LANES];
    const float inf = INFINITY;
    for (int r = 0; r < H; r++)
        for (int l = 0; l < LANES; l++) {
            left[r][l] = inf;
            xr[r][l] = x[(i0 + r) * LANES + l];
        }
    for (int l = 0; l < LANES; l++) dg0[l] = row[jlo * LANES + l];
    if (mlo > mhi) {
        sweep_cols(row, y, left, xr, dg0, H, 1, i0, jlo, jhi, w);
    } else {
        sweep_cols(row, y, left, xr, dg0, H, 1, i0, jlo, mlo - 1, w);
        sweep_cols(row, y, left, xr, dg0, H, 0, i0, mlo, mhi, w);
        sweep_cols(row, y, left, xr, dg0, H, 1, i0, mhi + 1, jhi, w);
    }
}

/*
 * 1-D block driver: rows are processed in tiles of up to TILE rows; a tile
 * always ends at a row where some lane finishes, so that lane's result can be
 * read from the row buffer.
 */
CHORAL_CLONES
static void run_block_series(const float *x, const float *y, const int64_t *nl,
                             const int64_t *ml, int64_t nmax, int64_t mmax, int64_t w,
                             float *row, double *res)
{
    const float inf = INFINITY;
    fill(row, 0.0f, LANES);
    fill(row + LANES, inf, mmax * LANES);
    int64_t i0 = 0;
    while (i0 < nmax) {
        int64_t ie = i0 + TILE - 1;
        for (int l = 0; l < LANES; l++)
            if (nl[l] - 1 >= i0 && nl[l] - 1 < ie) ie = nl[l] - 1;
        if (ie > nmax - 1) ie = nmax - 1;
        int64_t jlo = i0 - w < 0 ? 0 : i0 - w;
        int64_t jhi = ie + w > mmax - 1 ? mmax - 1 : ie + w;
        if (jlo > jhi) break;
        int64_t mlo = ie - w > jlo ? ie - w : jlo;
        int64_t mhi = i0 + w < jhi ? i0 + w : jhi;
        switch ((int)(ie - i0 + 1)) {
        case 1: sweep_series(row, x, y, 1, i0, jlo, jhi, mlo, mhi, w); break;
#if TILE >= 2
        case 2: sweep_series(row, x, y, 2, i0, jlo, jhi, mlo, mhi, w); break;
#endif
#if TILE >= 3
        case 3: sweep_series(row, x, y, 3, i0, jlo, jhi, mlo, mhi, w); break;
#endif
#if TILE >= 4
        case 4: sweep_series(row, x, y, 4, i0, jlo, jhi, mlo, mhi, w); break;
#endif
#if TILE >= 5
        case 5: sweep_series(row, x, y, 5, i0, jlo, jhi, mlo, mhi, w); break;
#endif
#if TILE >= 6
        case 6: sweep_series(row, x, y, 6, i0, jlo, jhi, mlo, mhi, w); break;
#endif
#if TILE >= 7
        case 7: sweep_series(row, x, y, 7, i0, jlo, jhi, mlo, mhi, w); break;
#endif
#if TILE >= 8
        case 8: sweep_series(row, x, y, 8, i0, jlo, jhi, mlo, mhi, w); break;
#endif
        default: break;
        }
        if (i0 == 0) fill(row, inf, LANES); /* boundary column: only row -1 has 0 */
        for (int l = 0; l < LANES; l++) {
            if (nl[l] - 1 == ie) {
                int64_t m = ml[l];
                int64_t d = ie - (m - 1);
                if (d < 0) d = -d;
                res[l] = d > w ? (double)inf : sqrt((double)row[m * LANES + l]);
            }
        }
        i0 = ie + 1;
    }
}

/* Band of row i: columns [lo, hi] with |i - j| <= r, clipped to [0, mmax). */
static inline int band(int64_t i, int64_t r, int64_t mmax, int64_t *lo, int64_t *hi)
{
    int64_t a = i - r, b = i + r;
    if (a < 0) a = 0;
    if (b > mmax - 1) b = mmax - 1;
    *lo = a;
    *hi = b;
    return a <= b;
}

static inline void fill(float *p, float v, int64_t n)
{
    for (int64_t k = 0; k < n; k++) p[k] = v;
}

/*
 * Run the DP for one block whose lanes have lengths nl[l] x ml[l] (nl[l] == 0
 * marks an unused lane).  If y is non-NULL the costs are (x - y)^2 from the
 * interleaved series x/y; otherwise costs come from cost[i * cs_i + ...] laid
 * out [i][j][lane] with row stride cs_i (floats).  Results (sqrt of the
 * accumulated cost, +inf outside the window) go to res[l].
 */
CHORAL_CLONES
static void run_block(const float *x, const float *y, const float *cost, int64_t cs_i,
                      const int64_t *nl, const int64_t *ml, int64_t nmax, int64_t mmax,
                      int64_t r, float *rows, double *res)
{
    const float inf = INFINITY;
    const int64_t w = (mmax + 1) * LANES;
    float *prev = rows, *cur = rows + w;

    /* Row -1: D[-1][-1] = 0, everything else +inf. */
    fill(prev, 0.0f, LANES);
    fill(prev + LANES, inf, w - LANES);
    fill(cur, inf, w);

    for (int64_t i = 0; i < nmax; i++) {
        int64_t lo, hi;
        if (!band(i, r, mmax, &lo, &hi)) break; /* every later row is empty too */
        fill(cur + lo * LANES, inf, LANES);
        if (y != NULL)
            row_series(cur, prev, x + i * LANES, y, lo, hi);
        else
            row_costs(cur, prev, cost + i * cs_i, lo, hi);
        if (hi + 2 <= mmax) fill(cur + (hi + 2) * LANES, inf, LANES);

        for (int l = 0; l < LANES; l++) {
            if (nl[l] - 1 == i) {
                int64_t m = ml[l];
                int64_t d = i - (m - 1);
                if (d < 0) d = -d;
                res[l] = d > r ? (double)inf : sqrt((double)cur[m * LANES + l]);
            }
        }
        float *t = prev;
        prev = cur;
        cur = t;
    }
}

/*
 * 1-D series: DTW for pairs (pa[k], pb[k]), k = 0..npairs-1, of sequences
 * stored back to back in `data` (sequence s is data[off[s] : off[s] + len[s]]).
 * Blocks of LANES consecutive pairs are processed; this call handles blocks
 * block_start, block_start + block_step, ... so several threads can share one
 * pair list.  window < 0 means no window.  Writes out[k] for its blocks.
 * Returns 0, or -1 if scratch memory could not be allocated.
 */
CHORAL_EXPORT int choral_dtw_series(const float *data, const int64_t *off, const int64_t *len,
                                    const int64_t *pa, const int64_t *pb, int64_t npairs,
                                    int64_t window, int64_t block_start, int64_t block_step,
                                    double *out)
{
    if (npairs <= 0) return 0;
    if (block_step < 1) block_step = 1;
    int64_t nbig = 0, mbig = 0;
    for (int64_t k = 0; k < npairs; k++) {
        if (len[pa[k]] > nbig) nbig = len[pa[k]];
        if (len[pb[k]] > mbig) mbig = len[pb[k]];
    }
    int64_t r = window < 0 ? (nbig + mbig + 1) : window;

    float *x = malloc(sizeof(float) * (size_t)(nbig * LANES));
    float *y = malloc(sizeof(float) * (size_t)(mbig * LANES));
    float *rows = malloc(sizeof(float) * (size_t)(2 * (mbig + 1) * LANES));
    if (x == NULL || y == NULL || rows == NULL) {
        free(x);
        free(y);
        free(rows);
        return -1;
    }

    int64_t nblocks = (npairs + LANES - 1) / LANES;
    int64_t nl[LANES], ml[LANES];
    double res[LANES];
    for (int64_t b = block_start; b < nblocks; b += block_step) {
        int64_t k0 = b * LANES;
        int64_t cnt = npairs - k0 < LANES ? npairs - k0 : LANES;
        int64_t nmax = 0, mmax = 0;
        for (int64_t l = 0; l < LANES; l++) {
            nl[l] = l < cnt ? len[pa[k0 + l]] : 0;
            ml[l] = l < cnt ? len[pb[k0 + l]] : 0;
            if (nl[l] > nmax) nmax = nl[l];
            if (ml[l] > mmax) mmax = ml[l];
        }
        /* Interleave; zero padding keeps the (never used) padded cells finite. */
        memset(x, 0, sizeof(float) * (size_t)(nmax * LANES));
        memset(y, 0, sizeof(float) * (size_t)(mmax * LANES));
        for (int64_t l = 0; l < cnt; l++) {
            const float *sa = data + off[pa[k0 + l]];
            const float *sb = data + off[pb[k0 + l]];
            for (int64_t t = 0; t < nl[l]; t++) x[t * LANES + l] = sa[t];
            for (int64_t t = 0; t < ml[l]; t++) y[t * LANES + l] = sb[t];
        }
        #ifdef CHORAL_ROWWISE
        run_block(x, y, NULL, 0, nl, ml, nmax, mmax, r, rows, res);
#else
        run_block_series(x, y, nl, ml, nmax, mmax, r, rows, res);
#endif
        for (int64_t l = 0; l < cnt; l++) out[k0 + l] = res[l];
    }
    free(x);
    free(y);
    free(rows);
    return 0;
}

/*
 * Precomputed costs for one block: cost is [i][j][lane] float32 with shape
 * (nmax, mmax, LANES) (lanes >= cnt are ignored; their lengths are given as 0).
 * nl/ml: the lanes' lengths (LANES entries).  window < 0 means no window.
 * Writes out[0..LANES).  Returns 0, or -1 if scratch memory could not be
 * allocated.
 */
CHORAL_EXPORT int choral_dtw_costs(const float *cost, const int64_t *nl, const int64_t *ml,
                                   int64_t nmax, int64_t mmax, int64_t window, double *out)
{
    if (nmax <= 0 || mmax <= 0) return 0;
    int64_t r = window < 0 ? (nmax + mmax + 1) : window;
    float *rows = malloc(sizeof(float) * (size_t)(2 * (mmax + 1) * LANES));
    if (rows == NULL) return -1;
    /* row_costs reads c[j * LANES + l] with c = cost + i * cs_i; index j is
       the column, so shift by one column for the [(j + 1) * LANES] row layout:
       run_block passes cost + i * cs_i and row_costs indexes cj = c + j*LANES. */
    run_block(NULL, NULL, cost, mmax * LANES, nl, ml, nmax, mmax, r, rows, out);
    free(rows);
    return 0;
}

/* ---- minimal CPython module: the compute functions are used via ctypes ---- */

static struct PyModuleDef dtw_simd_module = {
    PyModuleDef_HEAD_INIT,
    "_dtw_simd",
    "Lock-step SIMD DTW kernels (called through ctypes by choral.kernels.dtw).",
    -1,
    NULL,
};

PyMODINIT_FUNC PyInit__dtw_simd(void)
{
    PyObject *m = PyModule_Create(&dtw_simd_module);
    if (m != NULL) PyModule_AddIntConstant(m, "LANES", LANES);
    return m;
}
