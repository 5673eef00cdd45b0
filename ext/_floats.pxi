# Exact decimal -> double conversion for JSON number tokens.
#
# Reads only [p, end), rounds correctly, and never accepts what orjson rejects. Clinger's fast
# path when the digits and the power of ten are exact doubles; else the Eisel-Lemire algorithm
# (a port of Go's strconv eiselLemire64); else (more than 19 digits, subnormals, an exact value
# Eisel-Lemire cannot tell from a halfway case) strtod on a NUL-terminated copy of the token, as
# strtod would read past `end` and depends on the locale: a locale that stops it early is
# caught and reported as _BAD, so the caller defers to the Python twin.

from libc.math cimport HUGE_VAL
from libc.stdlib cimport strtod

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <float.h>

    /* The 128-bit product a * b: high half returned, low half in *lo. */
    static inline uint64_t serving_mul128(uint64_t a, uint64_t b, uint64_t *lo) {
    #if defined(__SIZEOF_INT128__)
        unsigned __int128 p = (unsigned __int128)a * b;
        *lo = (uint64_t)p;
        return (uint64_t)(p >> 64);
    #else
        uint64_t a0 = (uint32_t)a, a1 = a >> 32, b0 = (uint32_t)b, b1 = b >> 32;
        uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
        uint64_t mid = (p00 >> 32) + (uint32_t)p01 + (uint32_t)p10;
        *lo = (mid << 32) | (uint32_t)p00;
        return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
    #endif
    }

    /* Leading zero bits of x, which is not 0. */
    static inline int serving_clz64(uint64_t x) {
    #if defined(__GNUC__)
        return __builtin_clzll(x);
    #else
        int n = 0;
        while (!(x & 0x8000000000000000ULL)) { x <<= 1; n++; }
        return n;
    #endif
    }

    /* Trailing zero bits of x, which is not 0. */
    static inline int serving_ctz64(uint64_t x) {
    #if defined(__GNUC__)
        return __builtin_ctzll(x);
    #else
        int n = 0;
        while (!(x & 1)) { x >>= 1; n++; }
        return n;
    #endif
    }

    /* The 8 bytes at p as a number whose lowest byte is p[0], whatever the host's byte order. */
    static inline uint64_t serving_load8(const unsigned char *p) {
        uint64_t v;
        memcpy(&v, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }

    /* How many of the 8 bytes in v (from its lowest byte up) are ASCII digits before the first
       non-digit. A byte is a digit iff its high nibble is 3 and adding 6 keeps it so; a carry
       out of a non-digit byte can only disturb bytes after it, which are not counted. */
    static inline int serving_digit_run(uint64_t v) {
        const uint64_t high = 0xF0F0F0F0F0F0F0F0ULL, threes = 0x3030303030303030ULL;
        uint64_t bad = ((v & high) ^ threes) | (((v + 0x0606060606060606ULL) & high) ^ threes);
        return bad ? serving_ctz64(bad) >> 3 : 8;
    }

    /* The value of the first `run` (0..8) digit bytes of v, SWAR as in simdjson/fast_float:
       the digits are shifted to the top and '0's fill the bottom, then 8 digits are combined
       in three multiplications. */
    static inline uint64_t serving_digits_value(uint64_t v, int run) {
        if (run == 0) return 0;
        if (run < 8) v = (v << (8 * (8 - run))) | (0x3030303030303030ULL >> (8 * run));
        v -= 0x3030303030303030ULL;
        v = (v * 10) + (v >> 8);
        return (((v & 0x000000FF000000FFULL) * 0x000F424000000064ULL)
                + (((v >> 16) & 0x000000FF000000FFULL) * 0x0000271000000001ULL)) >> 32;
    }

    /* Clinger's fast path is exact only where doubles are evaluated as doubles (not x87). */
    #if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    #define SERVING_EXACT_DOUBLES 1
    #else
    #define SERVING_EXACT_DOUBLES 0
    #endif
    """
    uint64_t serving_mul128(uint64_t a, uint64_t b, uint64_t* lo) noexcept nogil
    int serving_clz64(uint64_t x) noexcept nogil
    uint64_t serving_load8(const unsigned char* p) noexcept nogil
    int serving_digit_run(uint64_t v) noexcept nogil
    uint64_t serving_digits_value(uint64_t v, int run) noexcept nogil
    const bint SERVING_EXACT_DOUBLES

cdef enum:
    _BAD = 0  # not a number this parser settles: the caller defers to the twin
    _INT = 1  # an integer token (no fraction, no exponent) that fits int64
    _FLOAT = 2  # any other number, as the correctly rounded double

    _TOKEN_MAX = 63  # longer float tokens (never seen from a serializer) go to the twin

    _POW10_MIN = -348  # the table's range of decimal exponents, as in Go's strconv
    _POW10_MAX = 347
    _POW10_COUNT = _POW10_MAX - _POW10_MIN + 1

# 10**e as a 128-bit mantissa, truncated (hi has its top bit set), and the binary exponent
# Eisel-Lemire starts from: floor(e * log2(10)) + 64 + 1023, computed as Go does.
cdef uint64_t _POW10_HI[_POW10_COUNT]
cdef uint64_t _POW10_LO[_POW10_COUNT]
cdef int64_t _POW10_EXP2[_POW10_COUNT]
# The powers of ten a double holds exactly, for Clinger's fast path.
cdef double _EXACT_POW10[23]
# 10**k for the SWAR digit runs.
cdef uint64_t _POW10_U64[9]


cdef int _fill_pow10_tables() except -1:
    """Fill the power-of-ten tables from Python's exact integers (once, at import)."""
    cdef int i
    cdef object e, x, d, m  # Python ints: exact, unlike C's pow()
    for i in range(_POW10_COUNT):
        e = i + _POW10_MIN
        if e >= 0:
            x = 10**e
            shift = x.bit_length() - 128
            m = x >> shift if shift > 0 else x << -shift
        else:
            d = 10**-e  # 2**(k-1) <= 2**k // d < 2**k for k = bit_length + 127: 128 bits
            m = (1 << (d.bit_length() + 127)) // d
        _POW10_HI[i] = m >> 64
        _POW10_LO[i] = m & 0xFFFFFFFFFFFFFFFF
        _POW10_EXP2[i] = ((217706 * e) >> 16) + 64 + 1023  # Python's >> floors negatives
    for i in range(23):
        _EXACT_POW10[i] = float(10 ** <object>i)
    for i in range(9):
        _POW10_U64[i] = 10 ** <object>i
    return 0


_fill_pow10_tables()


cdef bint _eisel_lemire(uint64_t man, int64_t exp10, bint neg, double* out) noexcept nogil:
    """man * 10**exp10 correctly rounded into *out; False where the algorithm cannot decide."""
    cdef uint64_t x_hi, x_lo, y_hi, y_lo, merged_hi, merged_lo, msb, ret_man, ret_exp2, bits
    cdef int clz
    cdef Py_ssize_t i
    if exp10 < _POW10_MIN or exp10 > _POW10_MAX:
        return False
    i = exp10 - _POW10_MIN
    clz = serving_clz64(man)  # man != 0: the caller handles zero
    man <<= clz
    ret_exp2 = <uint64_t>_POW10_EXP2[i] - <uint64_t>clz  # unsigned wrap-around is intended
    x_hi = serving_mul128(man, _POW10_HI[i], &x_lo)
    # The truncated table may be one unit short: widen with the low half when it matters.
    if (x_hi & 0x1FF) == 0x1FF and x_lo + man < man:
        y_hi = serving_mul128(man, _POW10_LO[i], &y_lo)
        merged_hi = x_hi
        merged_lo = x_lo + y_hi
        if merged_lo < x_lo:
            merged_hi += 1
        if (merged_hi & 0x1FF) == 0x1FF and merged_lo + 1 == 0 and y_lo + man < man:
            return False
        x_hi = merged_hi
        x_lo = merged_lo
    msb = x_hi >> 63
    ret_man = x_hi >> (msb + 9)
    ret_exp2 -= 1 ^ msb
    if x_lo == 0 and (x_hi & 0x1FF) == 0 and (ret_man & 3) == 1:
        return False  # exactly halfway as far as 128 bits can tell
    ret_man += ret_man & 1  # round half to even, from 54 bits to 53
    ret_man >>= 1
    if ret_man >> 53:
        ret_man >>= 1
        ret_exp2 += 1
    if ret_exp2 - 1 >= 0x7FF - 1:  # zero (subnormal, wrapped) or >= 0x7FF (overflow)
        return False
    bits = (ret_exp2 << 52) | (ret_man & 0x000FFFFFFFFFFFFFULL)
    if neg:
        bits |= 0x8000000000000000ULL
    memcpy(out, &bits, 8)
    return True


cdef inline bint _is_digit(unsigned char c) noexcept nogil:
    return <unsigned int>(c - 48) < 10  # unsigned: bytes below '0' wrap to large values


cdef inline const unsigned char* _read_digits(
    const unsigned char* p, const unsigned char* end, uint64_t* man, int* digits
) noexcept nogil:
    """Consume the digits at p into man while it holds at most 19 (digits counts them, and is
    20 past that); return the first byte after them. Eight at a time while 8 bytes are left."""
    cdef uint64_t v
    cdef int run
    while end - p >= 8:
        v = serving_load8(p)
        run = serving_digit_run(v)
        if digits[0] + run > 19:
            break
        man[0] = man[0] * _POW10_U64[run] + serving_digits_value(v, run)
        digits[0] += run
        p += run
        if run < 8:
            return p
    while p < end and _is_digit(p[0]):  # the last few bytes, or past 19 digits
        if digits[0] < 19:
            man[0] = man[0] * 10 + (p[0] - 48)
            digits[0] += 1
        else:
            digits[0] = 20  # "more than 19": counting on could overflow on a huge token
        p += 1
    return p


cdef int _parse_number(
    const unsigned char* p,
    const unsigned char* end,
    const unsigned char** stop,
    int64_t* ival,
    double* dval,
) noexcept nogil:
    """Parse the JSON number at p (reading nothing at or past end): _INT, _FLOAT or _BAD.

    The grammar is RFC 8259's, exactly as strict as orjson: `-?(0|[1-9]\\d*)(\\.\\d+)?
    ([eE][+-]?\\d+)?`. Sets *stop just past the token; the caller checks what follows.
    """
    cdef const unsigned char* start = p
    cdef const unsigned char* frac
    cdef bint neg = False, is_float = False, exp_neg
    cdef uint64_t man = 0
    cdef int digits = 0  # significant digits seen; man holds the first 19 (they fit in 64 bits)
    cdef int64_t exp10 = 0, e
    cdef double value
    cdef char token[_TOKEN_MAX + 1]
    cdef char* token_end
    if p < end and p[0] == b"-":
        neg = True
        p += 1
    if p >= end or not _is_digit(p[0]):
        return _BAD
    if p[0] == b"0":
        p += 1
        if p < end and _is_digit(p[0]):
            return _BAD  # a leading zero
    else:
        p = _read_digits(p, end, &man, &digits)  # past 19 digits only strtod reads them
    if p < end and p[0] == b".":
        is_float = True
        p += 1
        if p >= end or not _is_digit(p[0]):
            return _BAD
        if man == 0:  # zeros straight after "0." only move the decimal point
            while p < end and p[0] == b"0":
                exp10 -= 1
                p += 1
        frac = p
        p = _read_digits(p, end, &man, &digits)
        exp10 -= p - frac  # right while digits <= 19; past that only strtod reads them
    if p < end and (p[0] == b"e" or p[0] == b"E"):
        is_float = True
        p += 1
        exp_neg = False
        if p < end and (p[0] == b"+" or p[0] == b"-"):
            exp_neg = p[0] == b"-"
            p += 1
        if p >= end or not _is_digit(p[0]):
            return _BAD
        e = 0
        while p < end and _is_digit(p[0]):
            if e < 100000:  # past any table bound already; stop growing, keep reading
                e = e * 10 + (p[0] - 48)
            p += 1
        exp10 += -e if exp_neg else e
    stop[0] = p
    if not is_float:
        if digits > 19:
            return _BAD
        if neg:
            if man > 0x8000000000000000ULL:
                return _BAD
            ival[0] = <int64_t>(0 - man)  # two's complement: 2**63 becomes INT64_MIN
        else:
            if man > 0x7FFFFFFFFFFFFFFFULL:
                return _BAD
            ival[0] = <int64_t>man
        return _INT
    if digits <= 19:
        if man == 0:
            dval[0] = -0.0 if neg else 0.0
            return _FLOAT
        if SERVING_EXACT_DOUBLES and man <= (<uint64_t>1 << 53) and -22 <= exp10 <= 22:
            # Both factors are exact doubles: one IEEE operation rounds the exact result once.
            value = <double>man
            if exp10 < 0:
                value = value / _EXACT_POW10[-exp10]
            else:
                value = value * _EXACT_POW10[exp10]
            dval[0] = -value if neg else value
            return _FLOAT
        if _eisel_lemire(man, exp10, neg, dval):
            return _FLOAT
    if p - start > _TOKEN_MAX:
        return _BAD
    memcpy(token, start, p - start)
    token[p - start] = 0
    value = strtod(token, &token_end)
    if token_end != token + (p - start) or value == HUGE_VAL or value == -HUGE_VAL:
        return _BAD  # a locale that reads "." differently; or infinity, which orjson rejects
    dval[0] = value
    return _FLOAT
