/*
 * choral.kernels._dtw_simd -- lock-step SIMD DTW kernels.
 *
 * Step pattern symmetric1 with the squared local cost:
 *
 *     D[i][j] = cost(i, j) + min(D[i-1][j], D[i][j-1], D[i-1][j-1])
 *     dtw(x, y) = sqrt(D[n-1][m-1])
 *
 * Inside one pair there is little data parallelism (each cell depends on its
 * left neighbour), but across pairs there is plenty.  So a block of LANES
 * pairs runs in lock-step: the block's series are interleaved as [t][lane]
 * float32 buffers, DP rows are laid out [(j + 1) * LANES + lane], and every
 * innermost loop runs over the LANES lanes.  Those loops have a fixed trip
 * count and independent iterations, so the compiler turns them into SIMD code
 * (LANES = 16 floats is exactly one AVX-512 register).
 *
 * 1-D series (choral_dtw_series) additionally tile the rows: one sweep along j
 * advances TILE rows at once, keeping the TILE running cells of every lane in
 * registers.  Per column that costs one load of the previous row, one load of
 * y_j and one store, shared by TILE cells, so the loop is bound by arithmetic
 * (sub, fma, 2x min per cell and lane) rather than by cache traffic.
 *
 * Pairs inside a block may have different lengths.  Shorter series are padded
 * with zeros and each lane's result is read at its own (n_k - 1, m_k - 1) cell
 * once row n_k - 1 is done (row tiles always end at such rows): a DTW cell
 * only depends on cells above and to the left of it, so padded cells never
 * influence a result.
 *
 * A Sakoe-Chiba window |i - j| <= r is the same band for all lanes: each row
 * only visits its band and the cells bordering the band read as +inf.
 *
 * Exported for ctypes (which releases the GIL, so the Python wrapper runs one
 * call per core on disjoint blocks of the same pair list):
 *
 *   choral_dtw_series  1-D series, cost (x_i - y_j)^2, over a list of pairs.
 *   choral_dtw_gram    frames: cost |x_i|^2 + |y_j|^2 - 2 x_i.y_j from a
 *                      precomputed float32 Gram matrix (GEMM done in NumPy)
 *                      and squared frame norms, over a list of pairs.
 *   choral_dtw_lanes   the block width LANES.
 *
 * Runtime ISA dispatch: on x86-64 with GCC and glibc the block functions are
 * compiled for AVX-512F, AVX2 and baseline x86-64 (target_clones); the dynamic
 * loader picks the best one for the running CPU.  Elsewhere this is plain C99.
 *
 * The file is also a minimal (method-less) CPython extension module, so that
 * setuptools can build it and ``import choral.kernels._dtw_simd`` works.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef CHORAL_LANES
#define CHORAL_LANES 16
#endif
#define LANES CHORAL_LANES

#ifndef CHORAL_TILE
#define CHORAL_TILE 4
#endif
#define TILE CHORAL_TILE
#if TILE < 1 || TILE > 8
#error "CHORAL_TILE must be between 1 and 8"
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    defined(__linux__) && defined(__GLIBC__) && !defined(CHORAL_NO_CLONES)
#define CHORAL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CHORAL_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

#if defined(_WIN32)
#define CHORAL_EXPORT __declspec(dllexport)
#else
#define CHORAL_EXPORT __attribute__((visibility("default")))
#endif

#define MIN2(a, b) ((a) < (b) ? (a) : (b))

CHORAL_EXPORT int64_t choral_dtw_lanes(void) { return LANES; }

static inline void fill(float *p, float v, int64_t n)
{
    for (int64_t k = 0; k < n; k++) p[k] = v;
}

/* 64-byte aligned scratch (kept C99: no aligned_alloc / posix_memalign). */
static float *alloc_floats(int64_t n, void **base)
{
    *base = malloc(sizeof(float) * (size_t)n + 64);
    if (*base == NULL) return NULL;
    uintptr_t p = ((uintptr_t)*base + 63) & ~(uintptr_t)63;
    return (float *)p;
}

/* ------------------------------------------------------------------------ */
/* 1-D series: row-tiled sweeps                                             */
/* ------------------------------------------------------------------------ */

/*
 * Columns j in [a, b] of the H rows i0..i0+H-1.  `row` holds row i0-1 for the
 * columns not yet swept and row i0+H-1 for those already swept.  left[r] is
 * D[i0+r][j-1], dg0 is D[i0-1][j-1].  With `masked`, cells outside the window
 * band are forced to +inf (only used on the few columns at the band edges).
 */
static ALWAYS_INLINE void sweep_cols(float *restrict row, const float *restrict y,
                                     float (*restrict left)[LANES],
                                     float (*restrict xr)[LANES], float *restrict dg0,
                                     const int H, const int masked, int64_t i0, int64_t a,
                                     int64_t b, int64_t w)
{
    const float inf = INFINITY;
    for (int64_t j = a; j <= b; j++) {
        const float *restrict yj = y + j * LANES;
        float *restrict rp = row + (j + 1) * LANES;
        int ok[TILE];
        for (int r = 0; r < H; r++) ok[r] = !masked || (j >= i0 + r - w && j <= i0 + r + w);
        for (int l = 0; l < LANES; l++) {
            float u = rp[l];
            float dg = dg0[l];
            dg0[l] = u;
            for (int r = 0; r < H; r++) {
                float d = xr[r][l] - yj[l];
                float m = MIN2(u, dg);
                m = MIN2(m, left[r][l]);
                float v = d * d + m;
                if (masked) v = ok[r] ? v : inf;
                dg = left[r][l];
                left[r][l] = v;
                u = v;
            }
            rp[l] = u;
        }
    }
}

/* One tile of H rows starting at i0 over the columns [jlo, jhi]; all H rows
   are inside the window on [mlo, mhi] (empty when mlo > mhi). */
static ALWAYS_INLINE void sweep_tile(float *restrict row, const float *restrict x,
                                     const float *restrict y, const int H, int64_t i0,
                                     int64_t jlo, int64_t jhi, int64_t mlo, int64_t mhi,
                                     int64_t w)
{
    float left[TILE][LANES], xr[TILE][LANES], dg0[LANES];
    const float inf = INFINITY;
    for (int r = 0; r < H; r++)
        for (int l = 0; l < LANES; l++) {
            left[r][l] = inf; /* column jlo - 1 is the boundary or out of band */
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
 * DP of one block: x is [i][lane] (nmax rows), y is [j][lane] (mmax columns),
 * lane l has lengths nl[l] x ml[l] (nl[l] == 0: unused lane).  `row` has
 * (mmax + 1) * LANES floats.  res[l] = sqrt(D[nl-1][ml-1]), +inf when the end
 * cell is outside the window.
 */
CHORAL_CLONES
static void block_series(const float *restrict x, const float *restrict y,
                         const int64_t *nl, const int64_t *ml, int64_t nmax, int64_t mmax,
                         int64_t w, float *restrict row, double *res)
{
    const float inf = INFINITY;
    fill(row, 0.0f, LANES); /* D[-1][-1] = 0 */
    fill(row + LANES, inf, mmax * LANES);
    int64_t i0 = 0;
    while (i0 < nmax) {
        /* tile rows i0..ie: at most TILE, ending at the next row where a lane
           finishes */
        int64_t ie = i0 + TILE - 1;
        for (int l = 0; l < LANES; l++)
            if (nl[l] - 1 >= i0 && nl[l] - 1 < ie) ie = nl[l] - 1;
        if (ie > nmax - 1) ie = nmax - 1;
        int64_t jlo = i0 - w < 0 ? 0 : i0 - w;
        int64_t jhi = ie + w > mmax - 1 ? mmax - 1 : ie + w;
        if (jlo > jhi) break; /* below the band: every later row is empty too */
        int64_t mlo = ie - w > jlo ? ie - w : jlo;
        int64_t mhi = i0 + w < jhi ? i0 + w : jhi;
        /* Columns right of jhi were never written, so they still read +inf;
           column jlo - 1 of row i0 - 1 is in band (or the boundary). */
        switch ((int)(ie - i0 + 1)) {
        case 1: sweep_tile(row, x, y, 1, i0, jlo, jhi, mlo, mhi, w); break;
#if TILE >= 2
        case 2: sweep_tile(row, x, y, 2, i0, jlo, jhi, mlo, mhi, w); break;
#endif
#if TILE >= 3
        case 3: sweep_tile(row, x, y, 3, i0, jlo, jhi, mlo, mhi, w); break;
#endif
#if TILE >= 4
        case 4: sweep_tile(row, x, y, 4, i0, jlo, jhi, mlo, mhi, w); break;
#endif
#if TILE >= 5
        case 5: sweep_tile(row, x, y, 5, i0, jlo, jhi, mlo, mhi, w); break;
#endif
#if TILE >= 6
        case 6: sweep_tile(row, x, y, 6, i0, jlo, jhi, mlo, mhi, w); break;
#endif
#if TILE >= 7
        case 7: sweep_tile(row, x, y, 7, i0, jlo, jhi, mlo, mhi, w); break;
#endif
#if TILE >= 8
        case 8: sweep_tile(row, x, y, 8, i0, jlo, jhi, mlo, mhi, w); break;
#endif
        default: break;
        }
        if (i0 == 0) fill(row, inf, LANES); /* boundary column j = -1 */
        for (int l = 0; l < LANES; l++) {
            if (nl[l] - 1 == ie) {
                int64_t d = ie - (ml[l] - 1);
                if (d < 0) d = -d;
                res[l] = d > w ? (double)inf : sqrt((double)row[ml[l] * LANES + l]);
            }
        }
        i0 = ie + 1;
    }
}

/*
 * DTW of pairs (pa[k], pb[k]), k < npairs, of 1-D float32 sequences stored
 * back to back in `data` (sequence s is data[off[s] : off[s] + len[s]]).
 * Consecutive pairs form blocks of LANES; this call does blocks block_start,
 * block_start + block_step, ... so several threads can share one pair list
 * (sort it by lengths for little padding).  window < 0: no window.
 * Writes out[k] for the pairs of its blocks.  Returns 0, -1 on out of memory.
 */
CHORAL_EXPORT int choral_dtw_series(const float *data, const int64_t *off, const int64_t *len,
                                    const int64_t *pa, const int64_t *pb, int64_t npairs,
                                    int64_t window, int64_t block_start, int64_t block_step,
                                    double *out)
{
    if (npairs <= 0) return 0;
    if (block_step < 1) block_step = 1;
    int64_t nbig = 1, mbig = 1;
    for (int64_t k = 0; k < npairs; k++) {
        if (len[pa[k]] > nbig) nbig = len[pa[k]];
        if (len[pb[k]] > mbig) mbig = len[pb[k]];
    }
    int64_t w = window < 0 ? nbig + mbig + 1 : window;

    void *bx, *by, *br;
    float *x = alloc_floats(nbig * LANES, &bx);
    float *y = alloc_floats(mbig * LANES, &by);
    float *row = alloc_floats((mbig + 1) * LANES, &br);
    if (x == NULL || y == NULL || row == NULL) {
        free(bx);
        free(by);
        free(br);
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
        /* interleave; zero padding keeps the (never used) padded cells finite */
        memset(x, 0, sizeof(float) * (size_t)(nmax * LANES));
        memset(y, 0, sizeof(float) * (size_t)(mmax * LANES));
        for (int64_t l = 0; l < cnt; l++) {
            const float *sa = data + off[pa[k0 + l]];
            const float *sb = data + off[pb[k0 + l]];
            for (int64_t t = 0; t < nl[l]; t++) x[t * LANES + l] = sa[t];
            for (int64_t t = 0; t < ml[l]; t++) y[t * LANES + l] = sb[t];
        }
        block_series(x, y, nl, ml, nmax, mmax, w, row, res);
        for (int64_t l = 0; l < cnt; l++) out[k0 + l] = res[l];
    }
    free(bx);
    free(by);
    free(br);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Frames: DP over costs derived from a precomputed Gram matrix             */
/* ------------------------------------------------------------------------ */

/*
 * One DP row over the band [lo, hi] for frames: t[j * LANES + l] holds the
 * lane's inner products x_i.y_j, yn[j * LANES + l] the squared norms |y_j|^2
 * and xn[l] = |x_i|^2, so the cost is max(0, xn + yn - 2 t) (the expansion
 * can round slightly below zero).
 */
static ALWAYS_INLINE void row_gram(float *restrict cur, const float *restrict prev,
                                   const float *restrict t, const float *restrict yn,
                                   const float *restrict xn, int64_t lo, int64_t hi)
{
    float left[LANES];
    for (int l = 0; l < LANES; l++) left[l] = cur[lo * LANES + l];
    for (int64_t j = lo; j <= hi; j++) {
        const float *restrict tj = t + j * LANES;
        const float *restrict yj = yn + j * LANES;
        const float *restrict up = prev + (j + 1) * LANES;
        const float *restrict dg = prev + j * LANES;
        float *restrict o = cur + (j + 1) * LANES;
        for (int l = 0; l < LANES; l++) {
            float c = xn[l] + yj[l] - 2.0f * tj[l];
            c = c > 0.0f ? c : 0.0f;
            float m = MIN2(up[l], dg[l]);
            m = MIN2(m, left[l]);
            float v = c + m;
            left[l] = v;
            o[l] = v;
        }
    }
}

/*
 * One block of the frames DP.  Lane l: inner products g[go[l] + i * gs + j],
 * squared norms nrm[xo[l] + i] and nrm[yo[l] + j], for i < nl[l], j < ml[l].
 * Scratch: two rows of (mmax + 1) * LANES floats, and t, yn of mmax * LANES.
 */
CHORAL_CLONES
static void block_gram(const float *restrict g, const int64_t *go, int64_t gs,
                       const float *restrict nrm, const int64_t *xo, const int64_t *yo,
                       const int64_t *nl, const int64_t *ml, int64_t nmax, int64_t mmax,
                       int64_t w, float *restrict rows, float *restrict t,
                       float *restrict yn, double *res)
{
    const float inf = INFINITY;
    const int64_t rw = (mmax + 1) * LANES;
    float *prev = rows, *cur = rows + rw;
    float xn[LANES];
    fill(prev, 0.0f, LANES);
    fill(prev + LANES, inf, rw - LANES);
    fill(cur, inf, rw);
    /* y norms interleaved once per block; padding 0 */
    fill(yn, 0.0f, mmax * LANES);
    fill(t, 0.0f, mmax * LANES);
    for (int l = 0; l < LANES; l++)
        for (int64_t j = 0; j < ml[l]; j++) yn[j * LANES + l] = nrm[yo[l] + j];
    for (int64_t i = 0; i < nmax; i++) {
        int64_t lo = i - w < 0 ? 0 : i - w;
        int64_t hi = i + w > mmax - 1 ? mmax - 1 : i + w;
        if (lo > hi) break;
        /* this row's inner products, transposed to [j][lane]; lanes past
           their own lengths keep stale (finite) values that reach no result */
        for (int l = 0; l < LANES; l++) {
            if (i >= nl[l]) {
                xn[l] = 0.0f;
                continue;
            }
            const float *restrict gr = g + go[l] + i * gs;
            int64_t je = hi < ml[l] - 1 ? hi : ml[l] - 1;
            xn[l] = nrm[xo[l] + i];
            for (int64_t j = lo; j <= je; j++) t[j * LANES + l] = gr[j];
        }
        fill(cur + lo * LANES, inf, LANES);
        row_gram(cur, prev, t, yn, xn, lo, hi);
        if (hi + 2 <= mmax) fill(cur + (hi + 2) * LANES, inf, LANES);
        for (int l = 0; l < LANES; l++) {
            if (nl[l] - 1 == i) {
                int64_t d = i - (ml[l] - 1);
                if (d < 0) d = -d;
                res[l] = d > w ? (double)inf : sqrt((double)cur[ml[l] * LANES + l]);
            }
        }
        float *tmp = prev;
        prev = cur;
        cur = tmp;
    }
}

/*
 * Frames DTW for npairs pairs sharing one Gram matrix g (float32, row stride
 * gs): pair k has lengths n[k] x m[k]; its frame i / frame j inner products
 * are g[go[k] + i * gs + j]; the squared norms of its frames are
 * nrm[xo[k] + i] and nrm[yo[k] + j].  Consecutive pairs form blocks of LANES;
 * blocks block_start, block_start + block_step, ... are done by this call.
 * window < 0: no window.  Returns 0, -1 on out of memory.
 */
CHORAL_EXPORT int choral_dtw_gram(const float *g, const int64_t *go, int64_t gs,
                                  const float *nrm, const int64_t *xo, const int64_t *yo,
                                  const int64_t *n, const int64_t *m, int64_t npairs,
                                  int64_t window, int64_t block_start, int64_t block_step,
                                  double *out)
{
    if (npairs <= 0) return 0;
    if (block_step < 1) block_step = 1;
    int64_t nbig = 1, mbig = 1;
    for (int64_t k = 0; k < npairs; k++) {
        if (n[k] > nbig) nbig = n[k];
        if (m[k] > mbig) mbig = m[k];
    }
    int64_t w = window < 0 ? nbig + mbig + 1 : window;
    void *br, *bt, *by;
    float *rows = alloc_floats(2 * (mbig + 1) * LANES, &br);
    float *t = alloc_floats(mbig * LANES, &bt);
    float *yn = alloc_floats(mbig * LANES, &by);
    if (rows == NULL || t == NULL || yn == NULL) {
        free(br);
        free(bt);
        free(by);
        return -1;
    }
    int64_t nblocks = (npairs + LANES - 1) / LANES;
    int64_t nl[LANES], ml[LANES], bgo[LANES], bxo[LANES], byo[LANES];
    double res[LANES];
    for (int64_t b = block_start; b < nblocks; b += block_step) {
        int64_t k0 = b * LANES;
        int64_t cnt = npairs - k0 < LANES ? npairs - k0 : LANES;
        int64_t nmax = 0, mmax = 0;
        for (int64_t l = 0; l < LANES; l++) {
            int live = l < cnt;
            nl[l] = live ? n[k0 + l] : 0;
            ml[l] = live ? m[k0 + l] : 0;
            bgo[l] = live ? go[k0 + l] : 0;
            bxo[l] = live ? xo[k0 + l] : 0;
            byo[l] = live ? yo[k0 + l] : 0;
            if (nl[l] > nmax) nmax = nl[l];
            if (ml[l] > mmax) mmax = ml[l];
        }
        block_gram(g, bgo, gs, nrm, bxo, byo, nl, ml, nmax, mmax, w, rows, t, yn, res);
        for (int64_t l = 0; l < cnt; l++) out[k0 + l] = res[l];
    }
    free(br);
    free(bt);
    free(by);
    return 0;
}

/* ---- minimal CPython module; the compute functions are used via ctypes --- */

static struct PyModuleDef dtw_simd_module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_dtw_simd",
    .m_doc = "Lock-step SIMD DTW kernels (called through ctypes by choral.kernels.dtw).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__dtw_simd(void)
{
    PyObject *mod = PyModule_Create(&dtw_simd_module);
    if (mod != NULL && PyModule_AddIntConstant(mod, "LANES", LANES) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
