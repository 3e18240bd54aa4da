/* JSON codec: the writing primitives of json.h (shared with the urlData row
 * encoder), then decode and encode for Lua. */
#include <float.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <locale.h>
#include <stdio.h>
#include "bic.h"
#include "json.h"

/* ---- UTF-8 --------------------------------------------------------------- */

/* Length (2..4) of the well-formed UTF-8 sequence starting at s[0] >= 0x80 of
 * s[0..n), or 0 when it is ill-formed; then *skip is the length of its maximal
 * ill-formed prefix (Unicode 3.9, "substitution of maximal subparts"), which a
 * replacing writer turns into one U+FFFD. Surrogates and overlongs are ill-formed. */
static int utf8_sequence(const unsigned char *s, size_t n, size_t *skip) {
  unsigned c = s[0], lo = 0x80, hi = 0xBF;
  int need, i;
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c == 0xE0) { need = 2; lo = 0xA0; }
  else if (c <= 0xEC && c >= 0xE1) need = 2;
  else if (c == 0xED) { need = 2; hi = 0x9F; }
  else if (c == 0xEE || c == 0xEF) need = 2;
  else if (c == 0xF0) { need = 3; lo = 0x90; }
  else if (c >= 0xF1 && c <= 0xF3) need = 3;
  else if (c == 0xF4) { need = 3; hi = 0x8F; }
  else { *skip = 1; return 0; }
  if (n < 2 || s[1] < lo || s[1] > hi) { *skip = 1; return 0; }
  for (i = 2; i <= need; i++) {
    if ((size_t)i >= n || (s[i] & 0xC0) != 0x80) { *skip = (size_t)i; return 0; }
  }
  return need + 1;
}

/* Whether s[0..len) is well-formed UTF-8. */
int bic_utf8_valid(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0, skip;
  while (i < len) {
    int n;
    if (u[i] < 0x80) {
      i++;
      continue;
    }
    n = utf8_sequence(u + i, len - i, &skip);
    if (n == 0) return 0;
    i += (size_t)n;
  }
  return 1;
}

/* ---- Writing strings ----------------------------------------------------- */

/* 0: copied as is; 1: escaped; 2: first byte of a multi-byte sequence. */
static const unsigned char string_class[256] = {
  1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1,
  0,0,1,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,
  0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,1,0,0,0,
  0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,
  2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2,
  2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2,
  2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2,
  2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2, 2,2,2,2,2,2,2,2,
};


/* Whether any of 8 bytes needs attention: a control character, a quote, a
 * backslash or a non-ASCII byte. (x - 1) & ~x sets the high bit of a byte
 * that is zero; a false alarm can only follow a true one. */
static inline int attention8(uint64_t v) {
  const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
  uint64_t quote = v ^ (ones * '"'), backslash = v ^ (ones * '\\');
  return ((v | ((v - ones * 0x20) & ~v) | ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash)) &
          highs) != 0;
}

/* Length of the prefix of s[0..len) that needs no attention, in steps of 8;
 * the caller finishes byte by byte with string_class. */
static inline size_t plain_prefix(const unsigned char *s, size_t len) {
  size_t i = 0;
  uint64_t v;
  while (i + 8 <= len) {
    memcpy(&v, s + i, 8);
    if (attention8(v)) break;
    i += 8;
  }
  return i;
}

/* The bytes s[0..n), 0 < n < 8, as the low bytes of a word (little-endian
 * order of bytes in memory, as memcpy loads them) whose other bytes are 'a':
 * read without a byte past s + n, in two or three loads. */
static inline uint64_t small_word(const unsigned char *s, size_t n) {
  uint64_t lo, pad;
  if (n >= 4) {
    uint32_t a, c;
    memcpy(&a, s, 4);
    memcpy(&c, s + n - 4, 4);
    lo = (uint64_t)a | ((uint64_t)c << (8 * (n - 4)));
  } else {
    lo = (uint64_t)s[0] | ((uint64_t)s[n >> 1] << (8 * (n >> 1))) | ((uint64_t)s[n - 1] << (8 * (n - 1)));
  }
  pad = 0x6161616161616161ULL << (8 * n);
  return lo | pad;
}

static inline int is_little_endian(void) {
  const uint16_t one = 1;
  unsigned char first;
  memcpy(&first, &one, 1);
  return first == 1;
}

/* The escape of a byte below 0x20, a quote or a backslash: its length (2 or
 * 6) and text, e.g. "\\n" or "\\u001f". */
static const char escape_text[256][7] = {
  "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
  "\\b", "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f",
  "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
  "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
  [(unsigned char)'"'] = "\\\"", [(unsigned char)'\\'] = "\\\\",
};

#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

#if defined(__SSE2__) && defined(__x86_64__)
#include <emmintrin.h>
/* Whether any of 16 bytes needs attention: below 0x20 or from 0x80 on (a
 * signed comparison with 0x20 finds both), a quote, a backslash. */
static ALWAYS_INLINE int attention16(__m128i v) {
  __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                             _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
  return _mm_movemask_epi8(bad) != 0;
}
#endif

/* Writes s[0..len) quoted at o when no byte of it needs attention (the
 * common case: ASCII without quotes, backslashes or control characters), 16
 * or 8 bytes at a time; the last bytes by a load that ends with the string
 * and overlaps the bytes before, a short string by one word assembled from
 * two or three loads; nothing is read past s + len. o has room for len + 10
 * bytes (a short string stores a whole word). Returns the end of what it
 * wrote; or NULL, for a string that needs the general writer (what it wrote
 * then does not count). */
static ALWAYS_INLINE char *plain_string_at(char *o, const unsigned char *s, size_t len) {
  uint64_t w;
  size_t i;
#if defined(__SSE2__) && defined(__x86_64__)
  if (len >= 16) {
    __m128i v;
    for (i = 0; i + 16 <= len; i += 16) {
      v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
      if (attention16(v)) return NULL;
      _mm_storeu_si128((__m128i *)(void *)(o + 1 + i), v);
    }
    if (i < len) {
      v = _mm_loadu_si128((const __m128i *)(const void *)(s + len - 16));
      if (attention16(v)) return NULL;
      _mm_storeu_si128((__m128i *)(void *)(o + 1 + len - 16), v);
    }
  } else if (len >= 8) {
    __m128i lo = _mm_loadl_epi64((const __m128i *)(const void *)s);
    __m128i hi = _mm_loadl_epi64((const __m128i *)(const void *)(s + len - 8));
    if (attention16(_mm_unpacklo_epi64(lo, hi))) return NULL;
    _mm_storel_epi64((__m128i *)(void *)(o + 1), lo);
    _mm_storel_epi64((__m128i *)(void *)(o + 1 + len - 8), hi);
  } else if (len > 0) {
    w = small_word(s, len);
    if (attention16(_mm_set1_epi64x((long long)w))) return NULL;
    memcpy(o + 1, &w, 8);  /* the bytes past len are overwritten by the quote and what follows */
  }
#else
  if (len < 8) {
    if (len > 0) {
      if (!is_little_endian()) return NULL;
      w = small_word(s, len);
      if (attention8(w)) return NULL;
      memcpy(o + 1, &w, 8);  /* the bytes past len are overwritten by the quote and what follows */
    }
  } else {
    for (i = 0; i + 8 <= len; i += 8) {
      memcpy(&w, s + i, 8);
      if (attention8(w)) return NULL;
      memcpy(o + 1 + i, &w, 8);
    }
    if (i < len) {
      memcpy(&w, s + len - 8, 8);
      if (attention8(w)) return NULL;
      memcpy(o + 1 + len - 8, &w, 8);
    }
  }
#endif
  o[0] = '"';
  o[len + 1] = '"';
  return o + len + 2;
}

/* plain_string_at at the end of b: returns 1; or 0, having written nothing,
 * for a string that needs the general writer, and when the buffer lacks room
 * (the general writer makes it). */
static ALWAYS_INLINE int put_plain_string(bic_buffer *b, const unsigned char *s, size_t len) {
  char *o;
  if (b->cap - b->len < len + 10) return 0;
  o = plain_string_at(b->data + b->len, s, len);
  if (o == NULL) return 0;
  b->len = (size_t)(o - b->data);
  return 1;
}

/* The position of the first byte needing attention in a block of bytes
 * where one does, and the block's bytes stored at o (which has room). On
 * x86-64 a block is 16 bytes (SSE2), elsewhere 8. */
#if defined(__SSE2__) && defined(__x86_64__)
#define BLOCK 16
static ALWAYS_INLINE int block_attention(const unsigned char *s, char *o) {
  __m128i v = _mm_loadu_si128((const __m128i *)(const void *)s);
  __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                             _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
  unsigned mask = (unsigned)_mm_movemask_epi8(bad);
  _mm_storeu_si128((__m128i *)(void *)o, v);
  return mask ? __builtin_ctz(mask) : BLOCK;
}
#else
#define BLOCK 8
static ALWAYS_INLINE int block_attention(const unsigned char *s, char *o) {
  uint64_t v;
  int i;
  memcpy(&v, s, 8);
  memcpy(o, &v, 8);
  if (!attention8(v)) return BLOCK;
  for (i = 0; string_class[s[i]] == 0; i++) {}
  return i;
}
#endif

/* The same for the last rest bytes of a string, 0 < rest < BLOCK: the
 * position of the first byte that needs attention, or rest, and the bytes
 * stored at o (which has room for a block and 8 bytes more; bytes past rest
 * may be stored too). Read in two overlapping words, or one assembled from
 * two or three loads: nothing is read past s + rest. */
static ALWAYS_INLINE int tail_attention(const unsigned char *s, size_t rest, char *o) {
#if defined(__SSE2__) && defined(__x86_64__)
  unsigned mask;
  if (rest >= 8) {
    __m128i lo = _mm_loadl_epi64((const __m128i *)(const void *)s);
    __m128i hi = _mm_loadl_epi64((const __m128i *)(const void *)(s + rest - 8));
    __m128i v = _mm_unpacklo_epi64(lo, hi);
    __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                               _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                            _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
    mask = (unsigned)_mm_movemask_epi8(bad);
    _mm_storel_epi64((__m128i *)(void *)o, lo);
    _mm_storel_epi64((__m128i *)(void *)(o + rest - 8), hi);
    if (mask & 0xFF) return __builtin_ctz(mask);  /* in the first 8 bytes */
    if (mask) return (int)rest - 8 + __builtin_ctz(mask >> 8);
    return (int)rest;
  } else {
    uint64_t w = small_word(s, rest);  /* padded with bytes that need nothing */
    __m128i v = _mm_cvtsi64_si128((long long)w);
    __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                               _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                            _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
    mask = (unsigned)_mm_movemask_epi8(bad) & 0xFF;  /* the upper 8 bytes are zero */
    memcpy(o, &w, 8);
    return mask ? __builtin_ctz(mask) : (int)rest;
  }
#else
  size_t i;
  for (i = 0; i < rest && string_class[s[i]] == 0; i++) o[i] = (char)s[i];
  return (int)i;
#endif
}

/* The first byte at or after p, before end, that needs attention (a quote, a
 * backslash, a control character or a non-ASCII byte), or end: blocks of 16
 * or 8 bytes while a whole block lies before end, then byte by byte. */
static ALWAYS_INLINE const unsigned char *skip_plain(const unsigned char *p, const unsigned char *end) {
#if defined(__SSE2__) && defined(__x86_64__)
  while (end - p >= 16) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                               _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                            _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
    unsigned mask = (unsigned)_mm_movemask_epi8(bad);
    if (mask) return p + __builtin_ctz(mask);
    p += 16;
  }
#else
  p += plain_prefix(p, (size_t)(end - p));
#endif
  while (p < end && string_class[*p] == 0) p++;
  return p;
}

/* Writes s[0..len) quoted, the general way: blocks of bytes are copied whole
 * up to the first byte that needs attention (the last bytes of the string
 * from a copy padded to a block), escapes come from a table, multi-byte UTF-8
 * sequences are checked and copied (or replaced by U+FFFD). The buffer keeps
 * room for the rest of the string, the quote and a block past what is written. */
static int put_string_escaped(bic_buffer *b, const unsigned char *s, size_t len, int flags) {
  const unsigned char *end = s + len;
  char *o, *lim;
  if (b->cap - b->len < len + 2 + BLOCK + 8 && bic_buffer_grow(b, len + 2 + BLOCK + 8) != 0) return -1;
  o = b->data + b->len;
  lim = b->data + b->cap;
  *o++ = '"';
  while (s < end) {
    unsigned char c, k;
    size_t skip;
    int n;
    if (end - s >= BLOCK) {
      n = block_attention(s, o);
      s += n;
      o += n;
      if (n == BLOCK) continue;
    } else {
      size_t rest = (size_t)(end - s);
      n = tail_attention(s, rest, o);
      if ((size_t)n >= rest) { o += rest; break; }
      s += n;
      o += n;
    }
    c = *s;
    k = string_class[c];
    if (k == 2) {
      n = utf8_sequence(s, (size_t)(end - s), &skip);
      if (n) {
        do *o++ = (char)*s++; while (--n > 0);  /* 2 to 4 bytes: no memcpy call */
        continue;
      }
      if (!(flags & BIC_JSON_REPLACE_INVALID)) return -2;
    }
    /* An escape (6 bytes at most) or U+FFFD (3) grows the text: keep room for
     * it, what is left, the quote and a block. */
    if ((size_t)(lim - o) < (size_t)(end - s) + BLOCK + 8) {
      b->len = (size_t)(o - b->data);
      if (bic_buffer_grow(b, (size_t)(end - s) + BLOCK + 8) != 0) return -1;
      o = b->data + b->len;
      lim = b->data + b->cap;
    }
    if (k == 2) {
      memcpy(o, "\xEF\xBF\xBD", 3);
      o += 3;
      s += skip;
      continue;
    }
    memcpy(o, escape_text[c], 8 - 1);  /* a fixed-size copy, then the length */
    o += escape_text[c][2] ? 6 : 2;  /* \u00XX, or a letter after the backslash */
    s++;
  }
  *o++ = '"';
  b->len = (size_t)(o - b->data);
  return 0;
}

int bic_json_put_string(bic_buffer *b, const char *str, size_t len, int flags) {
  const unsigned char *s = (const unsigned char *)str;
  if (put_plain_string(b, s, len)) return 0;
  return put_string_escaped(b, s, len, flags);
}

/* ---- Writing integers ---------------------------------------------------- */

static const char digit_pairs[201] =
  "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
  "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
  "8081828384858687888990919293949596979899";

/* Writes v in decimal ending at end; returns where it starts. */
static char *format_integer(char *end, long long v) {
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  char *p = end;
  while (u >= 100) {
    unsigned r = (unsigned)(u % 100);
    u /= 100;
    p -= 2;
    memcpy(p, digit_pairs + 2 * r, 2);
  }
  if (u >= 10) {
    p -= 2;
    memcpy(p, digit_pairs + 2 * u, 2);
  } else {
    *--p = (char)('0' + u);
  }
  if (v < 0) *--p = '-';
  return p;
}

int bic_json_put_integer(bic_buffer *b, long long v) {
  /* the digits (20 at most, and the sign) end at tmp + 24 and are copied as
   * 24 bytes from where they start, in a fixed-size copy (the compiler made
   * a byte loop into a memcpy call); the bytes past them are overwritten by
   * what follows */
  char tmp[48];
  char *p = format_integer(tmp + 24, v);
  if (b->cap - b->len < 24 && bic_buffer_grow(b, 24) != 0) return -1;
  memcpy(b->data + b->len, p, 24);
  b->len += (size_t)(tmp + 24 - p);
  return 0;
}

/* ---- Writing doubles: Grisu2 ---------------------------------------------
 * Florian Loitsch's Grisu2 ("Printing floating-point numbers quickly and
 * accurately with integers", PLDI 2010), in the shape of Milo Yip's dtoa:
 * the digits always read back to the same double and are the shortest such
 * digits for all but a very small fraction of doubles (see docs/json.md). */

typedef struct { uint64_t f; int e; } diy_fp;

static const uint64_t cached_powers_f[87] = {
  0xfa8fd5a0081c0288ULL, 0xbaaee17fa23ebf76ULL, 0x8b16fb203055ac76ULL,
  0xcf42894a5dce35eaULL, 0x9a6bb0aa55653b2dULL, 0xe61acf033d1a45dfULL,
  0xab70fe17c79ac6caULL, 0xff77b1fcbebcdc4fULL, 0xbe5691ef416bd60cULL,
  0x8dd01fad907ffc3cULL, 0xd3515c2831559a83ULL, 0x9d71ac8fada6c9b5ULL,
  0xea9c227723ee8bcbULL, 0xaecc49914078536dULL, 0x823c12795db6ce57ULL,
  0xc21094364dfb5637ULL, 0x9096ea6f3848984fULL, 0xd77485cb25823ac7ULL,
  0xa086cfcd97bf97f4ULL, 0xef340a98172aace5ULL, 0xb23867fb2a35b28eULL,
  0x84c8d4dfd2c63f3bULL, 0xc5dd44271ad3cdbaULL, 0x936b9fcebb25c996ULL,
  0xdbac6c247d62a584ULL, 0xa3ab66580d5fdaf6ULL, 0xf3e2f893dec3f126ULL,
  0xb5b5ada8aaff80b8ULL, 0x87625f056c7c4a8bULL, 0xc9bcff6034c13053ULL,
  0x964e858c91ba2655ULL, 0xdff9772470297ebdULL, 0xa6dfbd9fb8e5b88fULL,
  0xf8a95fcf88747d94ULL, 0xb94470938fa89bcfULL, 0x8a08f0f8bf0f156bULL,
  0xcdb02555653131b6ULL, 0x993fe2c6d07b7facULL, 0xe45c10c42a2b3b06ULL,
  0xaa242499697392d3ULL, 0xfd87b5f28300ca0eULL, 0xbce5086492111aebULL,
  0x8cbccc096f5088ccULL, 0xd1b71758e219652cULL, 0x9c40000000000000ULL,
  0xe8d4a51000000000ULL, 0xad78ebc5ac620000ULL, 0x813f3978f8940984ULL,
  0xc097ce7bc90715b3ULL, 0x8f7e32ce7bea5c70ULL, 0xd5d238a4abe98068ULL,
  0x9f4f2726179a2245ULL, 0xed63a231d4c4fb27ULL, 0xb0de65388cc8ada8ULL,
  0x83c7088e1aab65dbULL, 0xc45d1df942711d9aULL, 0x924d692ca61be758ULL,
  0xda01ee641a708deaULL, 0xa26da3999aef774aULL, 0xf209787bb47d6b85ULL,
  0xb454e4a179dd1877ULL, 0x865b86925b9bc5c2ULL, 0xc83553c5c8965d3dULL,
  0x952ab45cfa97a0b3ULL, 0xde469fbd99a05fe3ULL, 0xa59bc234db398c25ULL,
  0xf6c69a72a3989f5cULL, 0xb7dcbf5354e9beceULL, 0x88fcf317f22241e2ULL,
  0xcc20ce9bd35c78a5ULL, 0x98165af37b2153dfULL, 0xe2a0b5dc971f303aULL,
  0xa8d9d1535ce3b396ULL, 0xfb9b7cd9a4a7443cULL, 0xbb764c4ca7a44410ULL,
  0x8bab8eefb6409c1aULL, 0xd01fef10a657842cULL, 0x9b10a4e5e9913129ULL,
  0xe7109bfba19c0c9dULL, 0xac2820d9623bf429ULL, 0x80444b5e7aa7cf85ULL,
  0xbf21e44003acdd2dULL, 0x8e679c2f5e44ff8fULL, 0xd433179d9c8cb841ULL,
  0x9e19db92b4e31ba9ULL, 0xeb96bf6ebadf77d9ULL, 0xaf87023b9bf0ee6bULL,
};
static const int16_t cached_powers_e[87] = {
  -1220, -1193, -1166, -1140, -1113, -1087, -1060, -1034, -1007, -980,
  -954, -927, -901, -874, -847, -821, -794, -768, -741, -715,
  -688, -661, -635, -608, -582, -555, -529, -502, -475, -449,
  -422, -396, -369, -343, -316, -289, -263, -236, -210, -183,
  -157, -130, -103, -77, -50, -24, 3, 30, 56, 83,
  109, 136, 162, 189, 216, 242, 269, 295, 322, 348,
  375, 402, 428, 455, 481, 508, 534, 561, 588, 614,
  641, 667, 694, 720, 747, 774, 800, 827, 853, 880,
  907, 933, 960, 986, 1013, 1039, 1066,
};

static const uint64_t powers_of_10[20] = {
  1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL,
  100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL,
  10000000000000ULL, 100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
  100000000000000000ULL, 1000000000000000000ULL, 10000000000000000000ULL,
};

#define DP_HIDDEN_BIT 0x0010000000000000ULL

static diy_fp diy_mul(diy_fp a, diy_fp b) {
  unsigned __int128 p = (unsigned __int128)a.f * b.f;
  diy_fp r;
  r.f = (uint64_t)(p >> 64) + (((uint64_t)p >> 63) & 1); /* rounded */
  r.e = a.e + b.e + 64;
  return r;
}

static diy_fp diy_normalize(diy_fp d) {
  int s = __builtin_clzll(d.f);
  d.f <<= s;
  d.e -= s;
  return d;
}

static int count_digits32(uint32_t n) {
  int d = 1;
  while (d < 10 && n >= (uint32_t)powers_of_10[d]) d++;
  return d;
}

static void grisu_round(char *buf, int len, uint64_t delta, uint64_t rest,
                        uint64_t ten_kappa, uint64_t wp_w) {
  while (rest < wp_w && delta - rest >= ten_kappa &&
         (rest + ten_kappa < wp_w || wp_w - rest > rest + ten_kappa - wp_w)) {
    buf[len - 1]--;
    rest += ten_kappa;
  }
}

static int digit_gen(diy_fp w, diy_fp mp, uint64_t delta, char *buf, int *k) {
  diy_fp one;
  uint64_t wp_w = mp.f - w.f, p2;
  uint32_t p1;
  int kappa, len = 0;
  one.f = 1ULL << -mp.e;
  one.e = mp.e;
  p1 = (uint32_t)(mp.f >> -one.e);
  p2 = mp.f & (one.f - 1);
  kappa = count_digits32(p1);
  while (kappa > 0) {
    uint32_t d;
    uint64_t rest;
    switch (kappa) {  /* constant divisors compile to multiplications */
      case 10: d = p1 / 1000000000; p1 %= 1000000000; break;
      case 9: d = p1 / 100000000; p1 %= 100000000; break;
      case 8: d = p1 / 10000000; p1 %= 10000000; break;
      case 7: d = p1 / 1000000; p1 %= 1000000; break;
      case 6: d = p1 / 100000; p1 %= 100000; break;
      case 5: d = p1 / 10000; p1 %= 10000; break;
      case 4: d = p1 / 1000; p1 %= 1000; break;
      case 3: d = p1 / 100; p1 %= 100; break;
      case 2: d = p1 / 10; p1 %= 10; break;
      default: d = p1; p1 = 0; break;
    }
    if (d || len) buf[len++] = (char)('0' + d);
    kappa--;
    rest = ((uint64_t)p1 << -one.e) + p2;
    if (rest <= delta) {
      *k += kappa;
      grisu_round(buf, len, delta, rest, powers_of_10[kappa] << -one.e, wp_w);
      return len;
    }
  }
  for (;;) {
    char d;
    p2 *= 10;
    delta *= 10;
    d = (char)(p2 >> -one.e);
    if (d || len) buf[len++] = (char)('0' + d);
    p2 &= one.f - 1;
    kappa--;
    if (p2 < delta) {
      *k += kappa;
      grisu_round(buf, len, delta, p2, one.f, wp_w * (-kappa < 20 ? powers_of_10[-kappa] : 0));
      return len;
    }
  }
}

/* Appends the exponent e in decimal at p; returns the new end. */
static char *put_exponent(char *p, int e) {
  if (e < 0) { *p++ = '-'; e = -e; }
  if (e >= 100) { *p++ = (char)('0' + e / 100); e %= 100; *p++ = (char)('0' + e / 10); }
  else if (e >= 10) *p++ = (char)('0' + e / 10);
  *p++ = (char)('0' + e % 10);
  return p;
}

/* Whether digits[0..m) * 10^k reads back as d; strtod is correctly rounded
 * and, with no decimal point in its input, locale-proof. */
static int reads_back(double d, const char *digits, int m, int k) {
  char text[32], *p;
  memcpy(text, digits, (size_t)m);
  p = text + m;
  *p++ = 'e';
  *put_exponent(p, k) = '\0';
  return strtod(text, NULL) == d;
}

/* Digits of a finite positive d into buf (at most 17), d = digits * 10^*k. */
static int grisu2(double d, char *buf, int *k) {
  uint64_t u;
  diy_fp v, w_plus, w_minus, c, w, lo, hi;
  int biased, q, index, n, k0;
  double dk;
  memcpy(&u, &d, sizeof u);
  biased = (int)((u >> 52) & 0x7FF);
  v.f = u & (DP_HIDDEN_BIT - 1);
  if (biased) { v.f += DP_HIDDEN_BIT; v.e = biased - 1075; } else { v.e = -1074; }
  /* Boundaries m+ and m-, normalized to the exponent of m+. */
  w_plus.f = (v.f << 1) + 1;
  w_plus.e = v.e - 1;
  w_plus = diy_normalize(w_plus);
  if (v.f == DP_HIDDEN_BIT && biased > 1) { w_minus.f = (v.f << 2) - 1; w_minus.e = v.e - 2; }
  else { w_minus.f = (v.f << 1) - 1; w_minus.e = v.e - 1; }
  w_minus.f <<= w_minus.e - w_plus.e;
  w_minus.e = w_plus.e;
  /* A cached power of ten c = 10^-k brings the exponent into [-60, -32]. */
  dk = (-61 - w_plus.e) * 0.30102999566398114 + 347;
  q = (int)dk;
  if (dk - q > 0.0) q++;
  index = (q >> 3) + 1;
  *k = -(-348 + index * 8);
  c.f = cached_powers_f[index];
  c.e = cached_powers_e[index];
  w = diy_mul(diy_normalize(v), c);
  w_plus = diy_mul(w_plus, c);
  w_minus = diy_mul(w_minus, c);
  /* The products are within one unit of the true boundaries: digits from the
   * interval narrowed by one unit always read back. */
  lo = w_minus;
  hi = w_plus;
  lo.f++;
  hi.f--;
  k0 = *k;
  n = digit_gen(w, hi, hi.f - lo.f, buf, k);
  /* A shorter answer can hide in the unit left out at either end: look in
   * the interval widened by one unit, and keep what it finds if it reads back.
   * Only long answers have been seen to need it (docs/json.md). */
  if (n >= 15 && w_plus.f != UINT64_MAX) {
    char wide[20];
    int k_wide = k0, n_wide;
    lo.f = w_minus.f - 1;
    hi.f = w_plus.f + 1;
    n_wide = digit_gen(w, hi, hi.f - lo.f, wide, &k_wide);
    if (n_wide < n && reads_back(d, wide, n_wide, k_wide)) {
      memcpy(buf, wide, (size_t)n_wide);
      *k = k_wide;
      n = n_wide;
    }
  }
  return n;
}

/* Copies a few bytes (the digits of a number) without a call to memcpy. */
static inline char *put_bytes(char *o, const char *s, int n) {
  while (n-- > 0) *o++ = *s++;
  return o;
}

/* Formats finite d into out (at least 32 bytes); returns the length. A value
 * with no fraction keeps a ".0" so that it reads back as a float in Lua 5.4. */
static int format_double(char *out, double d) {
  char digits[20];
  int n, k, point, i, len = 0;
  if (d == 0) {
    if (signbit(d)) out[len++] = '-';
    memcpy(out + len, "0.0", 3);
    return len + 3;
  }
  if (d < 0) { out[len++] = '-'; d = -d; }
  n = grisu2(d, digits, &k);
  point = n + k; /* d = 0.digits * 10^point */
  if (point > 0 && point <= 17) {
    if (n <= point) {             /* 1234500.0 */
      len = (int)(put_bytes(out + len, digits, n) - out);
      for (i = n; i < point; i++) out[len++] = '0';
      out[len++] = '.';
      out[len++] = '0';
    } else {                      /* 12.345 */
      len = (int)(put_bytes(out + len, digits, point) - out);
      out[len++] = '.';
      len = (int)(put_bytes(out + len, digits + point, n - point) - out);
    }
  } else if (point <= 0 && point > -5) { /* 0.0012345 */
    out[len++] = '0';
    out[len++] = '.';
    for (i = point; i < 0; i++) out[len++] = '0';
    len = (int)(put_bytes(out + len, digits, n) - out);
  } else {                        /* 1.2345e+20, 1e-7 */
    int e = point - 1;
    out[len++] = digits[0];
    if (n > 1) {
      out[len++] = '.';
      len = (int)(put_bytes(out + len, digits + 1, n - 1) - out);
    }
    out[len++] = 'e';
    if (e >= 0) out[len++] = '+';
    len = (int)(put_exponent(out + len, e) - out);
  }
  return len;
}

/* Doubles with at most three decimals and under 1e12 (prices, rates, halves)
 * skip Grisu: m / 10^k == d exactly means the decimal text of m / 10^k reads
 * back as d, and below 10^15 no other text of k decimals does, so the
 * smallest such k gives the shortest text: the digits Grisu finds, laid out
 * as format_double lays them out. Returns the length, or 0 for the others. */
static int format_short_decimal(char *out, double d) {
  static const double scale[4] = {1.0, 10.0, 100.0, 1000.0};
  static const unsigned long long iscale[4] = {1, 10, 100, 1000};
  double a = fabs(d), m = 0;
  char text[24], *p = text + sizeof text;
  unsigned long long ip, frac;
  int k, i, len = 0;
  if (!(a >= 1e-3 && a < 1e12)) return 0;
  for (k = 0; k <= 3; k++) {
    m = floor(a * scale[k] + 0.5);
    if (m / scale[k] == a) break;
  }
  if (k > 3) return 0;
  ip = (unsigned long long)m / iscale[k];
  frac = (unsigned long long)m % iscale[k];
  if (k == 0) *--p = '0';
  for (i = 0; i < k; i++, frac /= 10) *--p = (char)('0' + frac % 10);
  *--p = '.';
  do {
    *--p = (char)('0' + ip % 10);
    ip /= 10;
  } while (ip > 0);
  if (d < 0) out[len++] = '-';
  while (p < text + sizeof text) out[len++] = *p++;
  return len;
}

int bic_json_put_double(bic_buffer *b, double d) {
  int n;
  if (!isfinite(d)) return -2;
  /* formatted in place: format_double writes at most 32 bytes */
  if (b->cap - b->len < 40 && bic_buffer_grow(b, 40) != 0) return -1;
  n = format_short_decimal(b->data + b->len, d);
  if (n == 0) n = format_double(b->data + b->len, d);
  b->len += (size_t)n;
  return 0;
}

/* ---- Shared by decode and encode ------------------------------------------ */

#define DEFAULT_MAX_DEPTH 1000
/* Upvalue 1 of decode, encode and as_array: the array marker metatable. */
#define ARRAY_MT lua_upvalueindex(1)

#if BIC_HAS_INTEGERS
typedef lua_Integer index_t;
#else
typedef int index_t;
#endif

/* Reads an optional boolean field of the options table at index opts. */
static int opt_boolean(lua_State *L, int opts, const char *name, int def) {
  int v = def;
  lua_getfield(L, opts, name);
  if (!lua_isnil(L, -1)) {
    if (!lua_isboolean(L, -1)) luaL_error(L, "option '%s' must be a boolean", name);
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static int opt_depth(lua_State *L, int opts) {
  int v = DEFAULT_MAX_DEPTH;
  lua_getfield(L, opts, "max_depth");
  if (!lua_isnil(L, -1)) {
    lua_Number n = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -1;
    if (!(n >= 1 && n <= 1e9) || n != floor(n))
      luaL_error(L, "option 'max_depth' must be a positive integer");
    v = (int)n;
  }
  lua_pop(L, 1);
  return v;
}

/* Misuse raises: an options table with a key this function does not know. */
static void check_option_names(lua_State *L, int opts, const char *const *known) {
  lua_pushnil(L);
  while (lua_next(L, opts)) {
    int i, ok = 0;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -1);
      for (i = 0; known[i]; i++) if (strcmp(k, known[i]) == 0) ok = 1;
    }
    if (!ok) {
      if (lua_type(L, -1) == LUA_TSTRING) luaL_error(L, "unknown option '%s'", lua_tostring(L, -1));
      luaL_error(L, "option names are strings, not %s", luaL_typename(L, -1));
    }
  }
}

/* ---- Decoding ------------------------------------------------------------- */

/* Object keys already made in this call: a key met again (rows and records
 * repeat their keys) is pushed from here, a table of the call, instead of
 * being made again by lua_pushlstring, which hashes it and looks it up among
 * all strings (Lua 5.4 hashes every byte of a short string). A slot, chosen
 * by the key's length and ends, holds the text of the last key made there
 * (keys of 1 to DECODE_KEY_TEXT bytes without escapes or non-ASCII bytes). */
#define DECODE_KEY_SLOTS 64
#define DECODE_KEY_TEXT 32

typedef struct {
  lua_State *L;
  const unsigned char *start, *end;
  int base;                /* stack top before decoding */
  int work;                /* stack slot of the scratch buffer, 0 until needed */
  bic_buffer *scratch;     /* unescaped strings, long numbers */
  int keys;                /* stack slot of the key cache's strings, a table once made */
  unsigned char key_len[DECODE_KEY_SLOTS];                /* 0: an empty slot */
  unsigned char key_text[DECODE_KEY_SLOTS][DECODE_KEY_TEXT];
  const unsigned char *err_at;
  const char *err;
  char err_text[128];
} decoder;

/* Where the error is: the message gets line, column and byte offset. */
static int decode_fail(decoder *D, const unsigned char *at, const char *what) {
  D->err_at = at;
  D->err = what;
  return -1;
}

static int decode_fail_char(decoder *D, const unsigned char *at, const char *what) {
  if (at >= D->end) return decode_fail(D, at, "unexpected end of input");
  if (*at >= 0x20 && *at < 0x7F)
    snprintf(D->err_text, sizeof D->err_text, "unexpected character '%c'%s", *at, what);
  else
    snprintf(D->err_text, sizeof D->err_text, "unexpected byte 0x%02X%s", *at, what);
  return decode_fail(D, at, D->err_text);
}

static bic_buffer *decode_scratch(decoder *D) {
  if (D->scratch == NULL) {
    /* Slot base+1 was reserved with a nil: no index above it moves. */
    D->scratch = bic_buffer_push(D->L);
    lua_replace(D->L, D->work);
  }
  D->scratch->len = 0;
  return D->scratch;
}

static int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static int read_hex4(const unsigned char *p, const unsigned char *end, unsigned *out) {
  int i;
  unsigned v = 0;
  if (end - p < 4) return -1;
  for (i = 0; i < 4; i++) {
    int h = hex_value(p[i]);
    if (h < 0) return -1;
    v = (v << 4) | (unsigned)h;
  }
  *out = v;
  return 0;
}

static char *put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) *o++ = (char)cp;
  else if (cp < 0x800) { *o++ = (char)(0xC0 | (cp >> 6)); *o++ = (char)(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) {
    *o++ = (char)(0xE0 | (cp >> 12)); *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *o++ = (char)(0xF0 | (cp >> 18)); *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F)); *o++ = (char)(0x80 | (cp & 0x3F));
  }
  return o;
}

/* The string whose opening quote is at *pp: pushed, *pp moved past its end. */
/* The byte a one-letter escape stands for (after the backslash), else 0. */
static const unsigned char unescape_byte[256] = {
  ['"'] = '"', ['\\'] = '\\', ['/'] = '/', ['b'] = '\b', ['f'] = '\f', ['n'] = '\n', ['r'] = '\r', ['t'] = '\t',
};

static int decode_string(decoder *D, const unsigned char **pp) {
  const unsigned char *p = *pp + 1, *end = D->end;
  bic_buffer *b;
  char *o, *lim;
  /* Fast path: no escapes, push straight from the input. */
  for (;;) {
    unsigned char c;
    p = skip_plain(p, end);
    if (p == end) return decode_fail(D, *pp, "unterminated string");
    c = *p;
    if (c == '"') {
      lua_pushlstring(D->L, (const char *)*pp + 1, (size_t)(p - *pp - 1));
      *pp = p + 1;
      return 0;
    }
    if (c == '\\') break;
    if (c < 0x20) return decode_fail(D, p, "unescaped control character in string");
    {
      size_t skip;
      int n = utf8_sequence(p, (size_t)(end - p), &skip);
      if (!n) return decode_fail(D, p, "invalid UTF-8 in string");
      p += n;
    }
  }
  /* Escapes: unescape into the scratch buffer (an escape never grows the
   * text), blocks of plain bytes copied whole up to the next byte that needs
   * attention; the buffer keeps room for a block and an escape. The end of
   * what is written (o) and of the room (lim) stay in locals, b->len is set
   * where the buffer grows and at the end; the one-letter escapes come from
   * a table (no jump through a switch per escape). */
  b = decode_scratch(D);
  if (bic_buffer_put(b, *pp + 1, (size_t)(p - *pp - 1)) != 0 ||
      (b->cap - b->len < BLOCK + 8 && bic_buffer_grow(b, BLOCK + 8) != 0))
    return decode_fail(D, p, "out of memory");
  o = b->data + b->len;
  lim = b->data + b->cap;
  for (;;) {
    unsigned char c, e;
    if (lim - o < BLOCK + 8) {
      b->len = (size_t)(o - b->data);
      if (bic_buffer_grow(b, BLOCK + 8) != 0) return decode_fail(D, p, "out of memory");
      o = b->data + b->len;
      lim = b->data + b->cap;
    }
    if (end - p >= BLOCK) {
      int n = block_attention(p, o);
      p += n;
      o += n;
      if (n == BLOCK) continue;
    } else {
      const unsigned char *q = skip_plain(p, end);
      b->len = (size_t)(o - b->data);
      if (bic_buffer_put(b, p, (size_t)(q - p)) != 0 || bic_buffer_grow(b, 8) != 0)
        return decode_fail(D, p, "out of memory");
      p = q;
      o = b->data + b->len;
      lim = b->data + b->cap;
    }
    if (p == end) return decode_fail(D, *pp, "unterminated string");
    c = *p;
    if (c == '\\') {
      const unsigned char *esc = p;
      unsigned cp;
      if (p + 1 >= end) return decode_fail(D, *pp, "unterminated string");
      e = unescape_byte[p[1]];
      if (e != 0) {  /* \" \\ \/ \b \f \n \r \t */
        *o++ = (char)e;
        p += 2;
        continue;
      }
      if (p[1] != 'u') return decode_fail(D, esc, "invalid escape in string");
      if (read_hex4(p + 2, end, &cp) != 0) return decode_fail(D, esc, "invalid \\u escape in string");
      p += 4;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned lo;
        if (end - p < 8 || p[2] != '\\' || p[3] != 'u' || read_hex4(p + 4, end, &lo) != 0 ||
            lo < 0xDC00 || lo > 0xDFFF)
          return decode_fail(D, esc, "lone surrogate in \\u escape");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        p += 6;
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return decode_fail(D, esc, "lone surrogate in \\u escape");
      }
      o = put_utf8(o, cp);
      p += 2;
      continue;
    }
    if (c == '"') break;
    if (c >= 0x80) {
      size_t skip;
      int n = utf8_sequence(p, (size_t)(end - p), &skip);
      if (!n) return decode_fail(D, p, "invalid UTF-8 in string");
      do *o++ = (char)*p++; while (--n > 0);
      continue;
    }
    return decode_fail(D, p, "unescaped control character in string");  /* c < 0x20 */
  }
  b->len = (size_t)(o - b->data);
  lua_pushlstring(D->L, b->data, b->len);
  *pp = p + 1;
  return 0;
}

/* Whether the len bytes at a and b are the same, 0 < len <= DECODE_KEY_TEXT;
 * a may be read to a + DECODE_KEY_TEXT when room says so, b always. */
static ALWAYS_INLINE int same_key(const unsigned char *a, size_t room, const unsigned char *b, size_t len) {
#if defined(__SSE2__) && defined(__x86_64__)
  if (room >= 32) {
    unsigned eq = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)a),
                                                             _mm_loadu_si128((const __m128i *)(const void *)b))) |
                  ((unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(
                       _mm_loadu_si128((const __m128i *)(const void *)(a + 16)),
                       _mm_loadu_si128((const __m128i *)(const void *)(b + 16)))) << 16);
    uint64_t want = ((uint64_t)1 << len) - 1;  /* the first len bytes */
    return ((uint64_t)eq & want) == want;
  }
#else
  (void)room;
#endif
  return memcmp(a, b, len) == 0;
}

/* An object key at *pp: from the key cache (see DECODE_KEY_SLOTS) when it
 * holds it, else made and put there; a key with escapes or non-ASCII bytes
 * goes to decode_string. */
static int decode_key(decoder *D, const unsigned char **pp) {
  lua_State *L = D->L;
  const unsigned char *s = *pp + 1, *q = skip_plain(s, D->end);
  size_t len = (size_t)(q - s);
  unsigned h;
  if (q == D->end || *q != '"') return decode_string(D, pp);
  if (len == 0 || len > DECODE_KEY_TEXT) {
    lua_pushlstring(L, (const char *)s, len);
    *pp = q + 1;
    return 0;
  }
  h = ((unsigned)len * 7u + (unsigned)s[0] * 31u + (unsigned)s[len - 1] * 131u + (unsigned)s[len / 2]) %
      DECODE_KEY_SLOTS;
  if (D->key_len[h] == len && same_key(s, (size_t)(D->end - s), D->key_text[h], len)) {
    lua_rawgeti(L, D->keys, (int)h + 1);
  } else {
    lua_pushlstring(L, (const char *)s, len);
    if (lua_isnil(L, D->keys)) {
      lua_createtable(L, DECODE_KEY_SLOTS, 0);
      lua_replace(L, D->keys);
    }
    lua_pushvalue(L, -1);
    lua_rawseti(L, D->keys, (int)h + 1);
    memcpy(D->key_text[h], s, len);
    D->key_len[h] = (unsigned char)len;
  }
  *pp = q + 1;
  return 0;
}

#define IS_DIGIT(c) ((unsigned char)((c) - '0') < 10)

static const double exact_powers_of_10[23] = {
  1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
  1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* m * 10^e as the nearest double, for m < 2^64 and |e| <= 27, through the
 * x87's extended precision (a 64-bit mantissa): m and 10^|e| are exact
 * there, so the product or quotient is the true value rounded once, and
 * rounding that to a double gives the true value's nearest double unless it
 * fell next to a midpoint between two doubles (its 11 bits past the double's
 * 53 near 0x400); then, and where no such type exists, returns 0 (strtod
 * decides). The 16- to 19-digit numbers doubles print as (1/3, 0.1 + 0.2)
 * skip strtod so. Where the x87 does not round to 64 bits (its precision
 * control set to 53, or valgrind, which computes long doubles as doubles)
 * 1 + LDBL_EPSILON is 1, and strtod decides every number. */
#if defined(__x86_64__) && defined(__linux__) && LDBL_MANT_DIG == 64
static const long double exact_powers_of_10_ld[28] = {
  1e0L, 1e1L, 1e2L, 1e3L, 1e4L, 1e5L, 1e6L, 1e7L, 1e8L, 1e9L, 1e10L, 1e11L, 1e12L, 1e13L,
  1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L, 1e20L, 1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L,
};

static volatile long double extended_one = 1.0L;  /* volatile: added at run time */

static int extended_decimal(uint64_t m, long e, double *out) {
  long double x;
  uint64_t mantissa;
  unsigned low;
  if (e < -27 || e > 27 || m == 0) return 0;
  if (extended_one + LDBL_EPSILON == extended_one) return 0;  /* no 64-bit rounding here */
  x = (long double)m;
  x = e < 0 ? x / exact_powers_of_10_ld[-e] : x * exact_powers_of_10_ld[e];
  memcpy(&mantissa, &x, sizeof mantissa);  /* the 64-bit mantissa, integer bit included */
  low = (unsigned)(mantissa & 0x7FF);
  if (low >= 0x3FE && low <= 0x402) return 0;
  *out = (double)x;
  return 1;
}
#else
static int extended_decimal(uint64_t m, long e, double *out) {
  (void)m;
  (void)e;
  (void)out;
  return 0;
}
#endif

/* strtod on text[0..len) checked by the grammar, whatever the C locale. */
static int decode_strtod(decoder *D, const unsigned char *text, size_t len, double *out) {
  char local[64], *copy = local;
  const char *point = localeconv()->decimal_point;
  size_t plen = strlen(point), i, o = 0;
  if (len * plen + 1 > sizeof local) {
    bic_buffer *b = decode_scratch(D);
    if (bic_buffer_grow(b, len * plen + 1) != 0) return -1;
    copy = b->data;
  }
  for (i = 0; i < len; i++) {
    if (text[i] == '.') { memcpy(copy + o, point, plen); o += plen; }
    else copy[o++] = (char)text[i];
  }
  copy[o] = '\0';
  *out = strtod(copy, NULL);
  return 0;
}

/* The number at *pp (RFC 8259 grammar): pushed, *pp moved past it. */
static int decode_number(decoder *D, const unsigned char **pp) {
  const unsigned char *p = *pp, *end = D->end, *digits;
  uint64_t m = 0;
  int neg = 0, ndigits = 0, frac_digits = 0, is_int = 1;
  long exp10 = 0;
  double d;
  if (*p == '-') { neg = 1; p++; }
  if (p == end || !IS_DIGIT(*p)) return decode_fail_char(D, p, " in number: expected a digit");
  digits = p;
  if (*p == '0') {
    p++;
    if (p < end && IS_DIGIT(*p)) return decode_fail(D, p - 1, "leading zero in number");
  } else {
    while (p < end && IS_DIGIT(*p)) {
      if (ndigits < 19) m = m * 10 + (uint64_t)(*p - '0');
      ndigits++;
      p++;
    }
  }
  if (p < end && *p == '.') {
    p++;
    if (p == end || !IS_DIGIT(*p)) return decode_fail_char(D, p, " in number: expected a digit after '.'");
    while (p < end && IS_DIGIT(*p)) {
      if (ndigits < 19 && (m != 0 || *p != '0')) { m = m * 10 + (uint64_t)(*p - '0'); ndigits++; frac_digits++; }
      else if (m == 0) frac_digits++;     /* leading zeros of 0.000x */
      else { ndigits = 99; }              /* too many digits for the fast path */
      p++;
    }
    is_int = 0;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    int eneg = 0;
    p++;
    if (p < end && (*p == '+' || *p == '-')) { eneg = *p == '-'; p++; }
    if (p == end || !IS_DIGIT(*p)) return decode_fail_char(D, p, " in number: expected a digit in the exponent");
    while (p < end && IS_DIGIT(*p)) {
      if (exp10 < 100000) exp10 = exp10 * 10 + (*p - '0');
      p++;
    }
    if (eneg) exp10 = -exp10;
    is_int = 0;
  }
  if (is_int && ndigits <= 19 && (m <= (uint64_t)INT64_MAX || (neg && m == (uint64_t)INT64_MAX + 1))) {
    if (neg && m == 0) {
      lua_pushnumber(D->L, -0.0);
    } else {
      int64_t v = neg ? (int64_t)(0 - m) : (int64_t)m;
#if BIC_HAS_INTEGERS
      lua_pushinteger(D->L, (lua_Integer)v);
#else
      lua_pushnumber(D->L, (lua_Number)v);
#endif
    }
    *pp = p;
    return 0;
  }
  /* Clinger's fast path: mantissa and power of ten both exact in a double. */
  exp10 -= frac_digits;
  if (ndigits <= 19 && m <= (1ULL << 53) && exp10 >= -22 && exp10 <= 22) {
    d = (double)m;
    d = exp10 < 0 ? d / exact_powers_of_10[-exp10] : d * exact_powers_of_10[exp10];
  } else if (!(ndigits <= 19 && extended_decimal(m, exp10, &d))) {
    if (decode_strtod(D, digits, (size_t)(p - digits), &d) != 0)
      return decode_fail(D, *pp, "out of memory");
    if (isinf(d)) return decode_fail(D, *pp, "number out of range");
  }
  lua_pushnumber(D->L, neg ? -d : d);
  *pp = p;
  return 0;
}

static int decode_literal(decoder *D, const unsigned char **pp, const char *word, size_t n) {
  if ((size_t)(D->end - *pp) < n || memcmp(*pp, word, n) != 0) {
    const unsigned char *p = *pp;
    size_t i;
    for (i = 0; i < n && p + i < D->end && p[i] == (unsigned char)word[i]; i++) {}
    return decode_fail_char(D, p + i, i ? " in literal" : "");
  }
  *pp += n;
  return 0;
}

#define SKIP_SPACE(p, end) \
  while ((p) < (end) && (*(p) == ' ' || *(p) == '\n' || *(p) == '\r' || *(p) == '\t')) (p)++

/* The open containers are kept in levels[]: for an array its element count so
 * far, -1 for an object. */
#define HINT_LEVELS 16
#define HINT_MAX 64

static int decode_document(decoder *D, int max_depth, int mark_arrays, int unique_keys,
                           const unsigned char *p) {
  lua_State *L = D->L;
  const unsigned char *end = D->end;
  index_t local[32];
  index_t *levels = local;
  int cap = 32, depth = 0;
  /* The size of the last object and array closed at each of the first
   * levels: the next one there is made that size (rows and records repeat
   * their shape), so that it does not grow by rehashing; at most HINT_MAX. */
  int hint_object[HINT_LEVELS] = {0}, hint_array[HINT_LEVELS] = {0};

value:
  SKIP_SPACE(p, end);
  if (p == end) return decode_fail(D, p, "unexpected end of input, expected a value");
  switch (*p) {
    case '{':
    case '[':
      if (depth >= max_depth) {
        snprintf(D->err_text, sizeof D->err_text, "nesting deeper than %d", max_depth);
        return decode_fail(D, p, D->err_text);
      }
      /* the container, a key, a value, and a scratch buffer with its metatable */
      if (!lua_checkstack(L, 6)) return decode_fail(D, p, "nesting too deep for the Lua stack");
      if (depth == cap) {
        /* Spill the level list to a buffer owned by the stack slot reserved for it. */
        bic_buffer *lb;
        lb = (bic_buffer *)lua_touserdata(L, D->work + 1);
        if (lb == NULL) {
          lb = bic_buffer_push(L);
          lua_replace(L, D->work + 1);
        }
        if (bic_buffer_grow(lb, (size_t)cap * 2 * sizeof(index_t) - lb->len) != 0)
          return decode_fail(D, p, "out of memory");
        if (levels == local) memcpy(lb->data, local, sizeof local);
        lb->len = (size_t)cap * 2 * sizeof(index_t);
        levels = (index_t *)lb->data;
        cap *= 2;
      }
      if (*p == '{') {
        p++;
        SKIP_SPACE(p, end);
        if (p < end && *p == '}') {
          lua_createtable(L, 0, 0);
          p++;
          goto done;
        }
        lua_createtable(L, 0, depth < HINT_LEVELS && hint_object[depth] ? hint_object[depth] : 4);
        levels[depth++] = -1;  /* an object: -1 - its keys so far */
        goto key;
      }
      p++;
      SKIP_SPACE(p, end);
      if (p < end && *p == ']') {
        lua_createtable(L, 0, 0);
      } else {
        lua_createtable(L, depth < HINT_LEVELS && hint_array[depth] ? hint_array[depth] : 4, 0);
      }
      if (mark_arrays) {
        lua_pushvalue(L, ARRAY_MT);
        lua_setmetatable(L, -2);
      }
      if (p < end && *p == ']') { p++; goto done; }
      levels[depth++] = 0;
      goto value;
    case '"':
      if (decode_string(D, &p) != 0) return -1;
      goto done;
    case 't':
      if (decode_literal(D, &p, "true", 4) != 0) return -1;
      lua_pushboolean(L, 1);
      goto done;
    case 'f':
      if (decode_literal(D, &p, "false", 5) != 0) return -1;
      lua_pushboolean(L, 0);
      goto done;
    case 'n':
      if (decode_literal(D, &p, "null", 4) != 0) return -1;
      lua_pushlightuserdata(L, NULL);
      goto done;
    default:
      if (*p == '-' || IS_DIGIT(*p)) {
        if (decode_number(D, &p) != 0) return -1;
        goto done;
      }
      return decode_fail_char(D, p, ", expected a value");
  }

key:
  if (p == end) return decode_fail(D, p, "unexpected end of input, expected a string key");
  if (*p != '"') return decode_fail_char(D, p, ", expected a string key");
  if (decode_key(D, &p) != 0) return -1;
  SKIP_SPACE(p, end);
  if (p == end || *p != ':') return decode_fail_char(D, p, ", expected ':' after an object key");
  p++;
  goto value;

done:
  if (depth == 0) {
    SKIP_SPACE(p, end);
    if (p != end) return decode_fail_char(D, p, " after the JSON value");
    return 0;
  }
  if (levels[depth - 1] >= 0) {
    lua_rawseti(L, -2, ++levels[depth - 1]);
    SKIP_SPACE(p, end);
    if (p < end && *p == ',') {
      p++;
      SKIP_SPACE(p, end);
      if (p < end && *p == ']') return decode_fail(D, p, "trailing comma in array");
      goto value;
    }
    if (p < end && *p == ']') {
      p++;
      depth--;
      if (depth < HINT_LEVELS) hint_array[depth] = (int)(levels[depth] < HINT_MAX ? levels[depth] : HINT_MAX);
      goto done;
    }
    return decode_fail_char(D, p, ", expected ',' or ']' in array");
  }
  if (unique_keys) { /* {duplicate_keys = "error"}: a key seen before in this object fails */
    lua_pushvalue(L, -2);
    lua_rawget(L, -4);
    if (!lua_isnil(L, -1)) {
      size_t klen;
      const char *k = lua_tolstring(L, -3, &klen);
      snprintf(D->err_text, sizeof D->err_text, "duplicate object key \"%.60s%s\" (its second value ends here)",
               k, klen > 60 ? "..." : "");
      return decode_fail(D, p, D->err_text);
    }
    lua_pop(L, 1);
  }
  lua_rawset(L, -3);
  levels[depth - 1]--;
  SKIP_SPACE(p, end);
  if (p < end && *p == ',') {
    p++;
    SKIP_SPACE(p, end);
    if (p < end && *p == '}') return decode_fail(D, p, "trailing comma in object");
    goto key;
  }
  if (p < end && *p == '}') {
    p++;
    depth--;
    if (depth < HINT_LEVELS) hint_object[depth] = (int)(-1 - levels[depth] < HINT_MAX ? -1 - levels[depth] : HINT_MAX);
    goto done;
  }
  return decode_fail_char(D, p, ", expected ',' or '}' in object");
}

/* decode(text [, opts]) -> value | nil, "what at line L, column C (byte offset O)" */
static int json_decode(lua_State *L) {
  static const char *const known[] = {"max_depth", "array_mt", "duplicate_keys", NULL};
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  int max_depth = DEFAULT_MAX_DEPTH, mark_arrays = 1, unique_keys = 0;
  decoder D;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    check_option_names(L, 2, known);
    max_depth = opt_depth(L, 2);
    mark_arrays = opt_boolean(L, 2, "array_mt", 1);
    lua_getfield(L, 2, "duplicate_keys"); /* "last" (the default: the last one wins) or "error" */
    if (!lua_isnil(L, -1)) {
      const char *mode = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
      if (strcmp(mode, "error") == 0) unique_keys = 1;
      else if (strcmp(mode, "last") != 0) luaL_error(L, "option 'duplicate_keys' must be \"last\" or \"error\"");
    }
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  lua_pushnil(L);  /* slot 3: the scratch buffer, created on first need */
  lua_pushnil(L);  /* slot 4: the level list, when deeper than the local one */
  lua_pushnil(L);  /* slot 5: the key cache's strings, made with the first key */
  D.L = L;
  D.keys = 5;
  memset(D.key_len, 0, sizeof D.key_len);
  D.start = (const unsigned char *)text;
  D.end = D.start + len;
  D.base = 2;
  D.work = 3;
  D.scratch = NULL;
  D.err = NULL;
  D.err_at = NULL;
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
    decode_fail(&D, D.start, "byte-order mark not allowed");
  } else if (decode_document(&D, max_depth, mark_arrays, unique_keys, D.start) == 0) {
    return 1;
  }
  {
    const unsigned char *q, *line_start = D.start;
    long line = 1;
    for (q = D.start; q < D.err_at; q++)
      if (*q == '\n') { line++; line_start = q + 1; }
    lua_settop(L, D.base);
    lua_pushnil(L);
    {
      char msg[160];
      snprintf(msg, sizeof msg, "%s at line %ld, column %ld (byte offset %ld)", D.err, line,
               (long)(D.err_at - line_start + 1), (long)(D.err_at - D.start));
      lua_pushstring(L, msg);
    }
  }
  return 2;
}

/* ---- Encoding ------------------------------------------------------------- */

/* An array is first walked with lua_next, which visits 1..n in order for a
 * table that holds its items in its array part (LEVEL_WALK); a table whose
 * walk meets another key is checked and written again by index (LEVEL_ARRAY). */
enum { LEVEL_WALK, LEVEL_ARRAY, LEVEL_OBJECT, LEVEL_SORTED };

/* An open container. Its table sits at stack slot `table`; an object being
 * walked keeps its current key just above it, a sorted one its key list. */
typedef struct {
  int kind;
  int table;
  index_t i, n;
  const void *ptr;
  size_t start;  /* output offset of the opening bracket */
} enc_level;

/* Stack slots of an encode call. */
enum { ENC_VALUE = 1, ENC_OPTS, ENC_OUT, ENC_LEVELS, ENC_CJSON_ARRAY_MT, ENC_CJSON_EMPTY_MT, ENC_SEEN, ENC_PATH,
       ENC_INDENT, ENC_TOP = ENC_INDENT };

/* Cycles: the first levels are scanned, deeper ones are kept in a set (ENC_SEEN). */
#define SCANNED_LEVELS 64

/* Object keys already written, by the address of their string: a key met
 * again is copied from here, "key": in one fixed-size copy, instead of being
 * checked byte by byte. A string's address names its text only while the
 * string lives, and every key of the value lives while nothing changes the
 * value, which only Lua code could do: a finalizer, run by a collection step
 * that an allocation of the encoder's own may start. The encoder turns the
 * cache off before every such allocation (keys_off) and back on, cleared,
 * after KEYS_AFTER more keys. */
#define KEY_SLOTS 128
#define KEY_TEXT 32  /* a key of up to KEY_TEXT - 3 bytes, its quotes and the colon */
#define KEYS_AFTER 16
typedef struct {
  const void *p[KEY_SLOTS];
  unsigned char n[KEY_SLOTS];
  char text[KEY_SLOTS][KEY_TEXT];
} key_cache;

typedef struct {
  lua_State *L;
  bic_buffer *b;
  int flags, nan_as_null, sort_keys, max_depth, cjson_known;
  key_cache *keys;       /* NULL while off */
  int keys_wait;         /* keys to write before it goes on */
  key_cache key_store;
  const void *array_mt, *cjson_array_mt, *cjson_empty_mt;  /* the markers' addresses */
  const char *indent;
  size_t indent_len;
  enc_level local[32];
  enc_level *levels;
  int cap, depth;
  const char *err;
  int err_on_key;        /* the error is about a key or the innermost container
                            itself: the path ends at that container */
  char err_text[96];
} encoder;

/* Before an allocation through the Lua API: see key_cache. */
static void keys_off(encoder *E) {
  E->keys = NULL;
  E->keys_wait = KEYS_AFTER;
}

static int encode_fail(encoder *E, const char *what) {
  E->err = what;
  return -1;
}

#define OOM(E) encode_fail((E), "out of memory")
#define PUT_LIT(E, lit) do { if (bic_buffer_puts((E)->b, lit) != 0) return OOM(E); } while (0)
#define PUT_CHAR(E, c) do { if (bic_buffer_putc((E)->b, (c)) != 0) return OOM(E); } while (0)

static int put_newline_indent(encoder *E, int depth);
/* A newline and the indent of depth, when indenting. */
#define put_newline(E, depth) ((E)->indent == NULL ? 0 : put_newline_indent((E), (depth)))

static int put_newline_indent(encoder *E, int depth) {
  int i;
  if (bic_buffer_putc(E->b, '\n') != 0) return OOM(E);
  for (i = 0; i < depth; i++)
    if (bic_buffer_put(E->b, E->indent, E->indent_len) != 0) return OOM(E);
  return 0;
}

static int is_index_key(lua_State *L, int idx) {
#if BIC_HAS_INTEGERS
  return lua_isinteger(L, idx) && lua_tointeger(L, idx) > 0;
#else
  lua_Number d;
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  d = lua_tonumber(L, idx);
  return d >= 1 && d == floor(d) && d < 9007199254740992.0;
#endif
}

/* A number as JSON: integers as integers, other finite numbers shortest. */
static int put_number(encoder *E, int idx) {
  lua_State *L = E->L;
  lua_Number d;
#if BIC_HAS_INTEGERS
  if (lua_isinteger(L, idx)) {
    if (bic_json_put_integer(E->b, (long long)lua_tointeger(L, idx)) != 0) return OOM(E);
    return 0;
  }
#endif
  d = lua_tonumber(L, idx);
  if (!isfinite(d)) {
    if (E->nan_as_null) { PUT_LIT(E, "null"); return 0; }
    return encode_fail(E, isnan(d) ? "cannot encode NaN" : d > 0 ? "cannot encode inf" : "cannot encode -inf");
  }
#if !BIC_HAS_INTEGERS
  /* LuaJIT has only doubles: whole numbers in the 64-bit range print as integers. */
  if (d == floor(d) && fabs(d) < 9223372036854775808.0) {
    if (bic_json_put_integer(E->b, (long long)d) != 0) return OOM(E);
    return 0;
  }
#endif
  if (bic_json_put_double(E->b, (double)d) != 0) return OOM(E);
  return 0;
}

/* A string that needs escapes or UTF-8 checks, or more room. */
static int put_string_general(encoder *E, const char *s, size_t len, int is_key) {
  int r = put_string_escaped(E->b, (const unsigned char *)s, len, E->flags);
  if (r == -1) return OOM(E);
  if (r == -2) {
    E->err_on_key = is_key;
    return encode_fail(E, is_key ? "invalid UTF-8 in object key" : "invalid UTF-8 in string");
  }
  return 0;
}

/* The string at idx: plain ones written in line, the others by the general writer. */
static ALWAYS_INLINE int put_string(encoder *E, int idx, int is_key) {
  size_t len;
  const char *s = lua_tolstring(E->L, idx, &len);
  if (put_plain_string(E->b, (const unsigned char *)s, len)) return 0;
  return put_string_general(E, s, len, is_key);
}

/* The object key at idx (a string, or a number other than an array index). */
static int put_key_other(encoder *E, int idx, int t);

static ALWAYS_INLINE int put_key(encoder *E, int idx) {
  int t = lua_type(E->L, idx);
  if (t == LUA_TSTRING) return put_string(E, idx, 1);
  return put_key_other(E, idx, t);
}

/* What goes before the value of a member, the general way: the comma, the
 * newline and indent, the key, the colon (and a space when indenting). */
static int put_member_key_general(encoder *E, enc_level *lv) {
  if (lv->i++ > 0) PUT_CHAR(E, ',');
  if (put_newline(E, E->depth) != 0) return -1;
  if (put_key(E, -2) != 0) return -1;
  PUT_CHAR(E, ':');
  if (E->indent) PUT_CHAR(E, ' ');
  return 0;
}

static void keys_on(encoder *E) {
  memset(E->key_store.p, 0, sizeof E->key_store.p);
  E->keys = &E->key_store;
}

/* The same for the key at -2 of the object of level lv; in one write for a
 * plain string key of a compact object: [,]"key": (from the key cache when
 * it holds the key). */
static ALWAYS_INLINE int put_member_key(encoder *E, enc_level *lv) {
  lua_State *L = E->L;
  bic_buffer *b = E->b;
  if (E->indent == NULL && lua_type(L, -2) == LUA_TSTRING) {
    key_cache *kc = E->keys;
    const void *p = NULL;
    unsigned slot = 0;
    size_t len;
    const unsigned char *s;
    char *o, *key;
    if (kc != NULL) {
      p = lua_topointer(L, -2);
      slot = (unsigned)((uintptr_t)p >> 4) % KEY_SLOTS;
      if (kc->p[slot] == p && p != NULL && b->cap - b->len > KEY_TEXT) {
        o = b->data + b->len;
        *o = ',';
        o += lv->i++ != 0;
        memcpy(o, kc->text[slot], KEY_TEXT);
        b->len = (size_t)(o + kc->n[slot] - b->data);
        return 0;
      }
    } else if (--E->keys_wait == 0) {
      keys_on(E);
    }
    s = (const unsigned char *)lua_tolstring(L, -2, &len);
    if (b->cap - b->len >= len + 12 && b->cap - b->len > KEY_TEXT) {
      o = b->data + b->len;
      *o = ',';
      key = o + (lv->i != 0);
      o = plain_string_at(key, s, len);
      if (o != NULL) {
        *o++ = ':';
        b->len = (size_t)(o - b->data);
        lv->i++;
        if (kc != NULL && p != NULL && len <= KEY_TEXT - 3) {
          /* the bytes after the key are copied too, and never used */
          memcpy(kc->text[slot], key, KEY_TEXT);
          kc->n[slot] = (unsigned char)(len + 3);
          kc->p[slot] = p;
        }
        return 0;
      }
    }
  }
  return put_member_key_general(E, lv);
}

/* A key that is no string: a number other than an array index, else an error. */
static int put_key_other(encoder *E, int idx, int t) {
  lua_State *L = E->L;
  E->err_on_key = 1;
  if (t == LUA_TNUMBER) {
    if (is_index_key(L, idx)) return encode_fail(E, "mixed table: array indexes and other keys");
    if (!isfinite(lua_tonumber(L, idx))) return encode_fail(E, "cannot encode a key that is not finite");
    PUT_CHAR(E, '"');
    if (put_number(E, idx) != 0) return -1;
    PUT_CHAR(E, '"');
    E->err_on_key = 0;
    return 0;
  }
  snprintf(E->err_text, sizeof E->err_text, "cannot encode a key of type %s", lua_typename(L, t));
  return encode_fail(E, E->err_text);
}

/* 1 when the metatable of the table at slot t marks it as an array, 2 for
 * lua-cjson's empty_array_mt (an array only when empty), else 0. The markers
 * are told apart by address (what lua_rawequal compares for tables). */
static int array_mark_mt(encoder *E);

static ALWAYS_INLINE int array_mark(encoder *E, int t) {
  if (!lua_getmetatable(E->L, t)) return 0;  /* most tables: no call below */
  return array_mark_mt(E);
}

/* The same, the table's metatable at the top (popped). */
static int array_mark_mt(encoder *E) {
  lua_State *L = E->L;
  const void *mt;
  int mark = 0;
  mt = lua_topointer(L, -1);
  if (mt == E->array_mt) { lua_pop(L, 1); return 1; }
  keys_off(E);  /* lua_getfield, lua_pushliteral below may allocate */
  if (!E->cjson_known) {
    /* lua-cjson builds that have array markers export them; look once per
     * call, and keep them in the call's slots while their addresses are used */
    E->cjson_known = 1;
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "cjson");
      if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "array_mt");
        if (lua_istable(L, -1)) E->cjson_array_mt = lua_topointer(L, -1);
        lua_replace(L, ENC_CJSON_ARRAY_MT);
        lua_getfield(L, -1, "empty_array_mt");
        if (lua_istable(L, -1)) E->cjson_empty_mt = lua_topointer(L, -1);
        lua_replace(L, ENC_CJSON_EMPTY_MT);
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (mt == E->cjson_array_mt) mark = 1;
  else if (mt == E->cjson_empty_mt) mark = 2;
  else {
    /* dkjson's convention */
    lua_pushliteral(L, "__jsontype");
    lua_rawget(L, -2);
    if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "array") == 0) mark = 1;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return mark;
}

/* Makes room for twice as many levels (in a userdata once the local array is
 * full); returns 0, or -1 when memory runs out. */
static int grow_levels(encoder *E) {
  bic_buffer *lb = (bic_buffer *)lua_touserdata(E->L, ENC_LEVELS);
  size_t need = (size_t)E->cap * 2 * sizeof(enc_level);
  keys_off(E);
  if (lb == NULL) {
    lb = bic_buffer_push(E->L);
    lua_replace(E->L, ENC_LEVELS);
  }
  if (bic_buffer_grow(lb, need - lb->len) != 0) return -1;
  if (E->levels == E->local) memcpy(lb->data, E->local, sizeof E->local);
  lb->len = need;
  E->levels = (enc_level *)lb->data;
  E->cap *= 2;
  return 0;
}

/* Opens a level for the table at stack slot t, whose address is ptr (NULL
 * below CYCLE_FROM: looked up when a check needs it). */
static ALWAYS_INLINE enc_level *push_level(encoder *E, int kind, index_t n, int t, const void *ptr) {
  enc_level *lv;
  if (E->depth == E->cap && grow_levels(E) != 0) return NULL;
  if (E->depth >= SCANNED_LEVELS) {
    keys_off(E);
    if (lua_isnil(E->L, ENC_SEEN)) {
      lua_newtable(E->L);
      lua_replace(E->L, ENC_SEEN);
    }
    lua_pushvalue(E->L, t);
    lua_pushboolean(E->L, 1);
    lua_rawset(E->L, ENC_SEEN);
  }
  lv = &E->levels[E->depth++];
  lv->kind = kind;
  lv->table = t;
  lv->i = 0;
  lv->n = n;
  lv->ptr = ptr;
  return lv;
}

typedef struct { const char *s; size_t len; index_t pair; } sort_key;

static int compare_keys(const void *a, const void *b) {
  const sort_key *x = (const sort_key *)a, *y = (const sort_key *)b;
  int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
  if (c) return c;
  return x->len < y->len ? -1 : x->len > y->len;
}

/* Pushes the sorted key list of the object at slot t: { jsonkey1, key1, ... }. */
static int sorted_keys(encoder *E, int t, index_t *count) {
  lua_State *L = E->L;
  index_t n = 0, i;
  int pairs;
  sort_key *keys;
  keys_off(E);
  lua_newtable(L);
  pairs = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int kt = lua_type(L, -2);
    lua_pop(L, 1);
    if (kt == LUA_TSTRING) {
      lua_pushvalue(L, -1);
    } else {
      /* Render the number key as the JSON key text once, with the encoder's rules. */
      size_t before = E->b->len;
      if (put_key(E, -1) != 0) {
        E->err_on_key = 0;  /* the object's level is not open yet */
        return -1;
      }
      lua_pushlstring(L, E->b->data + before + 1, E->b->len - before - 2);
      E->b->len = before;
    }
    lua_rawseti(L, pairs, 2 * ++n - 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, pairs, 2 * n);
  }
  keys = (sort_key *)lua_newuserdata(L, (size_t)n * sizeof(sort_key) + 1);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, pairs, 2 * i + 1);
    keys[i].s = lua_tolstring(L, -1, &keys[i].len);  /* anchored by pairs */
    keys[i].pair = i;
    lua_pop(L, 1);
  }
  qsort(keys, (size_t)n, sizeof(sort_key), compare_keys);
  lua_createtable(L, (int)(2 * n), 0);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, pairs, 2 * keys[i].pair + 1);
    lua_rawseti(L, -2, 2 * i + 1);
    lua_rawgeti(L, pairs, 2 * keys[i].pair + 2);
    lua_rawseti(L, -2, 2 * i + 2);
  }
  lua_replace(L, pairs);
  lua_pop(L, 1);
  *count = n;
  return 0;
}

/* Checks that the keys of the table at slot t are exactly 1..n; sets *n. */
static int array_length(encoder *E, int t, int marked, index_t *length) {
  lua_State *L = E->L;
  index_t n = 0, max = 0;
#if !BIC_HAS_INTEGERS
  lua_Number beyond = 0;  /* the largest index too large for index_t (an int) */
#endif
  lua_pushnil(L);
  while (lua_next(L, t)) {
    index_t k;
    lua_pop(L, 1);
    if (!is_index_key(L, -1)) {
      lua_pop(L, 1);
      return encode_fail(E, marked ? "table marked as an array has a key that is not an index"
                                   : "mixed table: array indexes and other keys");
    }
#if BIC_HAS_INTEGERS
    k = lua_tointeger(L, -1);
#else
    if (lua_tonumber(L, -1) > (lua_Number)INT_MAX) {
      if (lua_tonumber(L, -1) > beyond) beyond = lua_tonumber(L, -1);
      k = 0;
    } else {
      k = (index_t)lua_tonumber(L, -1);
    }
#endif
    if (k > max) max = k;
    n++;
  }
#if !BIC_HAS_INTEGERS
  if (beyond > 0) {
    snprintf(E->err_text, sizeof E->err_text, "sparse array: %ld values, largest index %.0f",
             (long)n, (double)beyond);
    return encode_fail(E, E->err_text);
  }
#endif
  if (max != n) {
    snprintf(E->err_text, sizeof E->err_text, "sparse array: %lld values, largest index %lld",
             (long long)n, (long long)max);
    return encode_fail(E, E->err_text);
  }
  *length = n;
  return 0;
}

/* The table at the top: writes "{}" or "[]" and returns 0 when it is empty,
 * else opens a level and writes the opening bracket. The walk's first key
 * and value stay on the stack for the caller: OPEN_WALK for an array walked
 * with lua_next, OPEN_OBJECT for an object walked so; OPEN_SORTED when the
 * sorted key list is above the table instead. */
enum { OPEN_EMPTY, OPEN_WALK, OPEN_WALK_FIRST, OPEN_OBJECT, OPEN_SORTED };

/* The key at -2: 2 when it is 1, 1 for another array index, else 0. */
static int first_key_index(lua_State *L) {
#if BIC_HAS_INTEGERS
  lua_Integer k;
  if (!lua_isinteger(L, -2)) return 0;
  k = lua_tointeger(L, -2);
  return k == 1 ? 2 : k > 0;
#else
  lua_Number d;
  if (lua_type(L, -2) != LUA_TNUMBER) return 0;  /* one lua_type, not a second in is_index_key */
  d = lua_tonumber(L, -2);
  if (d == 1) return 2;
  return d >= 1 && d == floor(d) && d < 9007199254740992.0;  /* is_index_key's rule */
#endif
}

/* Cycles. A table met again on the path to the value being written is a
 * cycle. Levels opened from depth CYCLE_FROM on are each checked against
 * the levels below (the first SCANNED_LEVELS by address, the deeper ones in
 * the set ENC_SEEN); the shallower levels are not, to spare every small
 * table the check. A cycle among them still repeats deeper down, where it
 * is caught; the error then names the place where it first closed. */
#define CYCLE_FROM 16

/* The address of the table of level i. */
static const void *level_ptr(encoder *E, int i) {
  enc_level *lv = &E->levels[i];
  if (lv->ptr == NULL) lv->ptr = lua_topointer(E->L, lv->table);
  return lv->ptr;
}

#define CYCLE_ERROR "cyclic reference: a table contains itself"

/* The first of the unchecked levels (below CYCLE_FROM) whose table is also
 * that of a level below it, or -1. Any error met while one is open is
 * reported as that cycle: walking on from where the cycle first closed,
 * the encoder only repeats that part of the path. */
static int unchecked_cycle(encoder *E) {
  int n = E->depth < CYCLE_FROM ? E->depth : CYCLE_FROM, i, j;
  for (j = 1; j < n; j++)
    for (i = 0; i < j; i++)
      if (level_ptr(E, i) == level_ptr(E, j)) return j;
  return -1;
}

/* Whether the table at slot t, whose address is ptr, is on the path. */
static int on_path(encoder *E, int t, const void *ptr) {
  int i, n = E->depth < SCANNED_LEVELS ? E->depth : SCANNED_LEVELS;
  for (i = 0; i < n; i++)
    if (level_ptr(E, i) == ptr) return 1;
  if (E->depth > SCANNED_LEVELS) {
    lua_pushvalue(E->L, t);
    lua_rawget(E->L, ENC_SEEN);
    i = lua_toboolean(E->L, -1);
    lua_pop(E->L, 1);
    if (i) return 1;
  }
  return 0;
}

/* The table at slot t, the top: writes "{}" or "[]" and returns OPEN_EMPTY
 * when it is empty, else opens a level and writes the opening bracket. The
 * walk's first key and value stay on the stack for the caller: OPEN_WALK for
 * an array walked with lua_next, OPEN_OBJECT for an object walked so;
 * OPEN_SORTED when the sorted key list is above the table instead. */
static int open_table(encoder *E, int t) {
  lua_State *L = E->L;
  const void *ptr = NULL;
  int first;
  if (E->depth >= CYCLE_FROM) {
    ptr = lua_topointer(L, t);
    if (on_path(E, t, ptr)) return encode_fail(E, CYCLE_ERROR);
  }
  if (E->depth >= E->max_depth) {
    if (E->depth < CYCLE_FROM && on_path(E, t, lua_topointer(L, t))) return encode_fail(E, CYCLE_ERROR);
    snprintf(E->err_text, sizeof E->err_text, "nesting deeper than %d", E->max_depth);
    return encode_fail(E, E->err_text);
  }
  /* A level holds 2 slots (table, key or key list), opening one needs about 8
   * more for a while: room for 4 levels at a time. */
  if (E->depth % 4 == 0 && !lua_checkstack(L, 32)) return encode_fail(E, "nesting too deep for the Lua stack");
  lua_pushnil(L);
  if (!lua_next(L, t)) {
    if (array_mark(E, t)) PUT_LIT(E, "[]"); else PUT_LIT(E, "{}");
    return OPEN_EMPTY;
  }
  /* the first key an index: an array whatever its marker (a marked table
   * with another key fails in the walk) */
  first = first_key_index(L);
  if (first || array_mark(E, t) == 1) {
    if (push_level(E, LEVEL_WALK, 0, t, ptr) == NULL) return OOM(E);
    E->levels[E->depth - 1].start = E->b->len;
    PUT_CHAR(E, '[');
    return first == 2 ? OPEN_WALK_FIRST : OPEN_WALK;  /* OPEN_WALK_FIRST: its first key is 1 */
  }
  if (E->sort_keys) {
    index_t n;
    lua_pop(L, 2);
    if (sorted_keys(E, t, &n) != 0) return -1;
    if (push_level(E, LEVEL_SORTED, n, t, ptr) == NULL) return OOM(E);  /* its key list sits just above it */
    PUT_CHAR(E, '{');
    return OPEN_SORTED;
  }
  if (push_level(E, LEVEL_OBJECT, 0, t, ptr) == NULL) return OOM(E);
  PUT_CHAR(E, '{');
  return OPEN_OBJECT;
}

/* The deep part of close_level: the table leaves the set of those on the path. */
static void close_deep_level(encoder *E, enc_level *lv) {
  keys_off(E);
  lua_pushvalue(E->L, lv->table);
  lua_pushnil(E->L);
  lua_rawset(E->L, ENC_SEEN);
}

/* Closes the innermost level; its table (and key or key list) stay on the stack. */
static ALWAYS_INLINE void close_level(encoder *E) {
  enc_level *lv = &E->levels[--E->depth];
  if (E->depth >= SCANNED_LEVELS) close_deep_level(E, lv);
}

/* The stack slot of the value being written, the top (what lua_gettop
 * returns, without the call): the document's value just above the call's
 * slots; in a walk the value above its table and key; in an array written
 * by index the item above its table; in a sorted object the value above
 * the table and its key list. */
static ALWAYS_INLINE int value_slot(encoder *E) {
  enc_level *lv;
  if (E->depth == 0) return ENC_TOP + 1;
  lv = &E->levels[E->depth - 1];
  return lv->table + (lv->kind == LEVEL_ARRAY ? 1 : 2);
}

static int encode_document(encoder *E) {
  lua_State *L = E->L;
  enc_level *lv;
  int type;
  lua_pushvalue(L, ENC_VALUE);

value:  /* the value at the top of the stack is written and popped */
  type = lua_type(L, -1);
typed:  /* the same, its type known */
  switch (type) {
    case LUA_TSTRING:
      if (put_string(E, -1, 0) != 0) return -1;
      break;
    case LUA_TNUMBER:
      if (put_number(E, -1) != 0) return -1;
      break;
    case LUA_TBOOLEAN:
      if (lua_toboolean(L, -1)) PUT_LIT(E, "true"); else PUT_LIT(E, "false");
      break;
    case LUA_TNIL:
      PUT_LIT(E, "null");
      break;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, -1) == NULL) { PUT_LIT(E, "null"); break; }
      return encode_fail(E, "cannot encode a light userdata other than null");
    case LUA_TTABLE:
      switch (open_table(E, value_slot(E))) {
        case OPEN_EMPTY: break;
        case OPEN_WALK: lv = &E->levels[E->depth - 1]; goto walk_item;
        case OPEN_WALK_FIRST: lv = &E->levels[E->depth - 1]; goto walk_in_order;
        case OPEN_OBJECT: lv = &E->levels[E->depth - 1]; goto object_item;
        case OPEN_SORTED: goto next;
        default: return -1;
      }
      break;
    default:
      snprintf(E->err_text, sizeof E->err_text, "cannot encode a %s", luaL_typename(L, -1));
      return encode_fail(E, E->err_text);
  }
  lua_pop(L, 1);

next:  /* the next value of the innermost open container, or close it */
  if (E->depth == 0) return 0;
  lv = &E->levels[E->depth - 1];
  switch (lv->kind) {
    case LEVEL_WALK:
      while (lua_next(L, lv->table)) {
        int in_order;
      walk_item:  /* key and value of the walk at the top */
#if BIC_HAS_INTEGERS
        in_order = lua_isinteger(L, -2) && lua_tointeger(L, -2) == lv->i + 1;
#else
        in_order = lua_type(L, -2) == LUA_TNUMBER && lua_tonumber(L, -2) == (lua_Number)(lv->i + 1);
#endif
        if (in_order) {
        walk_in_order:  /* the item's key is lv->i + 1 */
          if (lv->i++ > 0) PUT_CHAR(E, ',');
          if (put_newline(E, E->depth) != 0) return -1;
          /* strings and numbers here, without the round through value and next */
          type = lua_type(L, -1);
          if (type == LUA_TSTRING) { if (put_string(E, -1, 0) != 0) return -1; }
          else if (type == LUA_TNUMBER) { if (put_number(E, -1) != 0) return -1; }
          else goto typed;
          lua_pop(L, 1);
          continue;
        }
        /* Out of order: check the keys, then write the items again by index. */
        lua_pop(L, 2);
        lv->i = 0;
        if (array_length(E, lv->table, array_mark(E, lv->table) == 1, &lv->n) != 0) {
          E->err_on_key = 1;  /* about this array itself: the path ends at it */
          return -1;
        }
        lv->kind = LEVEL_ARRAY;
        E->b->len = lv->start + 1;
        goto next;
      }
      if (lv->i > 0 && put_newline(E, E->depth - 1) != 0) return -1;
      PUT_CHAR(E, ']');
      close_level(E);
      lua_pop(L, 1);
      goto next;
    case LEVEL_ARRAY:
      if (lv->i < lv->n) {
        if (lv->i > 0) PUT_CHAR(E, ',');
        if (put_newline(E, E->depth) != 0) return -1;
        lua_rawgeti(L, lv->table, ++lv->i);
        if (lua_isnil(L, -1)) return encode_fail(E, "array changed while it was encoded");
        goto value;
      }
      if (put_newline(E, E->depth - 1) != 0) return -1;
      PUT_CHAR(E, ']');
      close_level(E);
      lua_pop(L, 1);
      goto next;
    case LEVEL_OBJECT:
      while (lua_next(L, lv->table)) {
      object_item:  /* key and value of the walk at the top */
        if (put_member_key(E, lv) != 0) return -1;
        /* strings and numbers here, without the round through value and next */
        type = lua_type(L, -1);
        if (type == LUA_TSTRING) { if (put_string(E, -1, 0) != 0) return -1; }
        else if (type == LUA_TNUMBER) { if (put_number(E, -1) != 0) return -1; }
        else goto typed;
        lua_pop(L, 1);
      }
      if (lv->i > 0 && put_newline(E, E->depth - 1) != 0) return -1;
      PUT_CHAR(E, '}');
      close_level(E);
      lua_pop(L, 1);
      goto next;
    default: /* LEVEL_SORTED */
      if (lv->i < lv->n) {
        if (lv->i > 0) PUT_CHAR(E, ',');
        if (put_newline(E, E->depth) != 0) return -1;
        lv->i++;
        lua_rawgeti(L, lv->table + 1, 2 * lv->i - 1);
        if (put_string(E, -1, 1) != 0) return -1;
        lua_pop(L, 1);
        PUT_CHAR(E, ':');
        if (E->indent) PUT_CHAR(E, ' ');
        lua_rawgeti(L, lv->table + 1, 2 * lv->i);
        lua_rawget(L, lv->table);
        goto value;
      }
      if (put_newline(E, E->depth - 1) != 0) return -1;
      PUT_CHAR(E, '}');
      close_level(E);
      lua_pop(L, 2);
      goto next;
  }
}

/* Appends one path step for the key at the top (popped): .name, ["odd key"] or [3]. */
static void path_key(lua_State *L, bic_buffer *p) {
  size_t len, i;
  const char *s;
  int ident;
  if (lua_type(L, -1) != LUA_TSTRING) {
    lua_pushvalue(L, -1);  /* a number: convert a copy */
    s = lua_tolstring(L, -1, &len);
    bic_buffer_puts(p, "[\"");
    bic_buffer_put(p, s, len);
    bic_buffer_puts(p, "\"]");
    lua_pop(L, 2);
    return;
  }
  s = lua_tolstring(L, -1, &len);
  ident = len > 0 && !IS_DIGIT(s[0]);
  for (i = 0; i < len && ident; i++)
    ident = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_' || IS_DIGIT(s[i]);
  if (ident) {
    bic_buffer_putc(p, '.');
    bic_buffer_put(p, s, len);
  } else {
    bic_buffer_putc(p, '[');
    bic_json_put_string(p, s, len, BIC_JSON_REPLACE_INVALID);
    bic_buffer_putc(p, ']');
  }
  lua_pop(L, 1);
}

/* Pushes "<error> at <path>", the path of the value being written ($ is the
 * whole value, array steps count from 1 as in Lua). */
static void push_encode_error(encoder *E) {
  lua_State *L = E->L;
  bic_buffer *p = bic_buffer_push(L);
  int i, n;
  lua_replace(L, ENC_PATH);
  i = unchecked_cycle(E);
  if (i >= 0) {
    E->depth = i;
    E->err = CYCLE_ERROR;
    E->err_on_key = 0;
  }
  n = E->depth;
  bic_buffer_put(p, E->err, strlen(E->err));
  bic_buffer_puts(p, " at $");
  if (E->err_on_key && n > 0) n--;
  for (i = 0; i < n; i++) {
    enc_level *lv = &E->levels[i];
    if (n > 24 && i == 12) {  /* a deep path keeps its two ends */
      bic_buffer_puts(p, "...");
      i = n - 12;
      lv = &E->levels[i];
    }
    if (lv->kind == LEVEL_ARRAY || lv->kind == LEVEL_WALK) {
      char num[24];
      snprintf(num, sizeof num, "[%ld]", (long)lv->i);
      bic_buffer_put(p, num, strlen(num));
    } else if (lv->kind == LEVEL_OBJECT) {
      lua_pushvalue(L, lv->table + 1);
      path_key(L, p);
    } else {
      lua_rawgeti(L, lv->table + 1, 2 * lv->i - 1);
      path_key(L, p);
    }
  }
  lua_pushnil(L);
  if (p->data == NULL || p->len < strlen(E->err)) lua_pushstring(L, E->err);  /* no memory for the path */
  else lua_pushlstring(L, p->data, p->len);
}

/* encode(value [, opts]) -> text | nil, "what at $.path" */
/* The memory of the output buffer, kept by encode between calls (in a
 * userdata, upvalue 2 of encode), as lua-cjson keeps its buffer: a large
 * answer does not grow a fresh buffer by doubling, page by page, on every
 * call. A call moves it into its own buffer (a userdata on its stack, which
 * frees it if a Lua error cuts the call short) and gives it back at the end;
 * a call made meanwhile (from a finalizer) finds none and grows its own.
 * Beyond SHARED_BUFFER_KEPT bytes it is kept only while the answers fill a
 * quarter of it: one large answer among small ones gives its memory back. */
#define SHARED_BUFFER lua_upvalueindex(2)
#define SHARED_BUFFER_KEPT ((size_t)8 << 20)

static int json_encode(lua_State *L) {
  static const char *const known[] = {"sort_keys", "indent", "nan_as_null", "replace_invalid_utf8",
                                      "max_depth", NULL};
  encoder E;
  bic_buffer *shared;
  int r;
  luaL_checkany(L, ENC_VALUE);
  lua_settop(L, ENC_OPTS);  /* extra arguments would shift the slots below */
  E.L = L;
  E.flags = 0;
  E.nan_as_null = E.sort_keys = E.cjson_known = E.err_on_key = 0;
  E.array_mt = lua_topointer(L, ARRAY_MT);
  E.keys = NULL;
  E.keys_wait = KEYS_AFTER;
  E.cjson_array_mt = E.cjson_empty_mt = NULL;
  E.max_depth = DEFAULT_MAX_DEPTH;
  E.indent = NULL;
  E.indent_len = 0;
  E.levels = E.local;
  E.cap = (int)(sizeof E.local / sizeof E.local[0]);
  E.depth = 0;
  E.err = NULL;
  if (!lua_isnoneornil(L, ENC_OPTS)) {
    luaL_checktype(L, ENC_OPTS, LUA_TTABLE);
    check_option_names(L, ENC_OPTS, known);
    E.sort_keys = opt_boolean(L, ENC_OPTS, "sort_keys", 0);
    E.nan_as_null = opt_boolean(L, ENC_OPTS, "nan_as_null", 0);
    if (opt_boolean(L, ENC_OPTS, "replace_invalid_utf8", 0)) E.flags |= BIC_JSON_REPLACE_INVALID;
    E.max_depth = opt_depth(L, ENC_OPTS);
    lua_getfield(L, ENC_OPTS, "indent");
    if (lua_type(L, -1) == LUA_TNUMBER) {
      lua_Number n = lua_tonumber(L, -1);
      static const char spaces[] = "                ";
      if (!(n >= 0 && n <= 16) || n != floor(n)) luaL_error(L, "option 'indent' must be 0..16 or a string");
      if (n > 0) { E.indent = spaces; E.indent_len = (size_t)n; }
    } else if (lua_type(L, -1) == LUA_TSTRING) {
      E.indent = lua_tolstring(L, -1, &E.indent_len);  /* anchored in ENC_INDENT below */
    } else if (!lua_isnil(L, -1)) {
      luaL_error(L, "option 'indent' must be 0..16 or a string");
    }
    /* left on the stack: an __index of opts may have made the string up, and
     * nothing else would keep it alive while the encoder reads it */
  }
  lua_settop(L, ENC_OPTS + 1);  /* the indent value, or nil */
  E.b = bic_buffer_push(L);
  shared = (bic_buffer *)lua_touserdata(L, SHARED_BUFFER);
  if (shared != NULL) {
    *E.b = *shared;  /* the memory kept from the calls before, if any */
    bic_buffer_init(shared);
    E.b->len = 0;
  }
  lua_settop(L, ENC_TOP);
  lua_pushvalue(L, ENC_OPTS + 1);
  lua_replace(L, ENC_INDENT);
  lua_pushvalue(L, ENC_OPTS + 2);
  lua_replace(L, ENC_OUT);
  lua_pushnil(L);
  lua_replace(L, ENC_LEVELS);
  r = encode_document(&E);
  if (r != 0) push_encode_error(&E);
  else lua_pushlstring(L, E.b->data ? E.b->data : "", E.b->len);
  if (shared != NULL && shared->data == NULL &&
      (E.b->cap <= SHARED_BUFFER_KEPT || E.b->len >= E.b->cap / 4)) {
    *shared = *E.b;  /* kept for the next call */
    bic_buffer_init(E.b);
  } else {
    bic_buffer_free(E.b);
  }
  return r != 0 ? 2 : 1;
}

static int shared_buffer_gc(lua_State *L) {
  bic_buffer_free((bic_buffer *)lua_touserdata(L, 1));
  return 0;
}

/* as_array(t) -> t, marked so that it encodes as an array even when empty */
static int json_as_array(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushvalue(L, ARRAY_MT);
  lua_setmetatable(L, 1);
  return 1;
}

int bic_open_json(lua_State *L) {
  static const luaL_Reg functions[] = {
    {"decode", json_decode},
    {"as_array", json_as_array},
    {NULL, NULL},
  };
  bic_buffer *sb;
  lua_newtable(L);
  lua_newtable(L);  /* the array marker */
  lua_pushliteral(L, "array");
  lua_setfield(L, -2, "__jsontype");
  lua_pushliteral(L, "biconnector.json.array");
  lua_setfield(L, -2, "__name");
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "array_mt");
  luaL_setfuncs(L, functions, 1);
  lua_getfield(L, -1, "array_mt");
  sb = (bic_buffer *)lua_newuserdata(L, sizeof(bic_buffer));
  bic_buffer_init(sb);
  lua_newtable(L);
  lua_pushcfunction(L, shared_buffer_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushcclosure(L, json_encode, 2);
  lua_setfield(L, -2, "encode");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_setfield(L, -2, "json");
  return 0;
}
