/* JSON codec: the writing primitives of json.h (shared with the urlData row
 * encoder), then decode and encode for Lua. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
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

static const char hex_digits[] = "0123456789abcdef";

int bic_json_put_string(bic_buffer *b, const char *str, size_t len, int flags) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0, run = 0;
  /* The common case, nothing to escape, costs one reservation and one copy. */
  if (b->cap - b->len < len + 2 && bic_buffer_grow(b, len + 2) != 0) return -1;
  b->data[b->len++] = '"';
  while (i < len) {
    unsigned char c = s[i];
    unsigned char k = string_class[c];
    size_t skip;
    int n;
    if (k == 0) { i++; continue; }
    if (k == 2) {
      n = utf8_sequence(s + i, len - i, &skip);
      if (n) { i += (size_t)n; continue; }
      if (!(flags & BIC_JSON_REPLACE_INVALID)) return -2;
    }
    /* Flush the plain run s[run..i), then write the escape or replacement. */
    if (bic_buffer_put(b, s + run, i - run) != 0) return -1;
    if (k == 2) {
      if (bic_buffer_puts(b, "\xEF\xBF\xBD") != 0) return -1;
      i += skip;
    } else {
      char esc[6] = {'\\', 0, '0', '0', 0, 0};
      size_t elen = 2;
      switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
          esc[1] = 'u'; esc[4] = hex_digits[c >> 4]; esc[5] = hex_digits[c & 15];
          elen = 6;
      }
      if (bic_buffer_put(b, esc, elen) != 0) return -1;
      i++;
    }
    run = i;
  }
  if (b->cap - b->len < i - run + 1 && bic_buffer_grow(b, i - run + 1) != 0) return -1;
  memcpy(b->data + b->len, s + run, i - run);
  b->len += i - run;
  b->data[b->len++] = '"';
  return 0;
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
  char tmp[24];
  char *p = format_integer(tmp + sizeof tmp, v);
  return bic_buffer_put(b, p, (size_t)(tmp + sizeof tmp - p));
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
    uint32_t div = (uint32_t)powers_of_10[kappa - 1];
    uint32_t d = p1 / div;
    uint64_t rest;
    p1 %= div;
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

/* Digits of a finite positive d into buf (at most 17), d = digits * 10^*k. */
static int grisu2(double d, char *buf, int *k) {
  uint64_t u;
  diy_fp v, w_plus, w_minus, c, w;
  int biased, q, index;
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
  w_minus.f++;
  w_plus.f--;
  return digit_gen(w, w_plus, w_plus.f - w_minus.f, buf, k);
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

/* Grisu2 leaves a few 16- and 17-digit answers longer than needed (where the
 * shortest candidate lies on the edge of the rounding interval): drop digits
 * while the rounded (or, on a tie, the truncated) prefix still reads back. */
static int shorten(double d, char *digits, int n, int *k) {
  char cand[20];
  while (n > 1) {
    int m = n - 1, kk = *k + 1, i;
    memcpy(cand, digits, (size_t)m);
    if (digits[m] >= '5') {
      for (i = m - 1; i >= 0 && cand[i] == '9'; i--) cand[i] = '0';
      if (i < 0) { cand[0] = '1'; m = 1; kk = *k + n; }
      else cand[i]++;
    }
    while (m > 1 && cand[m - 1] == '0') { m--; kk++; }
    if (!reads_back(d, cand, m, kk)) {
      if (digits[n - 1] != '5') break;
      /* A tie: the value may lie below the halfway point. */
      m = n - 1;
      kk = *k + 1;
      memcpy(cand, digits, (size_t)m);
      while (m > 1 && cand[m - 1] == '0') { m--; kk++; }
      if (!reads_back(d, cand, m, kk)) break;
    }
    memcpy(digits, cand, (size_t)m);
    n = m;
    *k = kk;
  }
  return n;
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
  if (n >= 16) n = shorten(d, digits, n, &k);
  point = n + k; /* d = 0.digits * 10^point */
  if (point > 0 && point <= 17) {
    if (n <= point) {             /* 1234500.0 */
      memcpy(out + len, digits, (size_t)n);
      len += n;
      for (i = n; i < point; i++) out[len++] = '0';
      out[len++] = '.';
      out[len++] = '0';
    } else {                      /* 12.345 */
      memcpy(out + len, digits, (size_t)point);
      len += point;
      out[len++] = '.';
      memcpy(out + len, digits + point, (size_t)(n - point));
      len += n - point;
    }
  } else if (point <= 0 && point > -5) { /* 0.0012345 */
    out[len++] = '0';
    out[len++] = '.';
    for (i = point; i < 0; i++) out[len++] = '0';
    memcpy(out + len, digits, (size_t)n);
    len += n;
  } else {                        /* 1.2345e+20, 1e-7 */
    int e = point - 1;
    out[len++] = digits[0];
    if (n > 1) {
      out[len++] = '.';
      memcpy(out + len, digits + 1, (size_t)(n - 1));
      len += n - 1;
    }
    out[len++] = 'e';
    if (e >= 0) out[len++] = '+';
    len = (int)(put_exponent(out + len, e) - out);
  }
  return len;
}

int bic_json_put_double(bic_buffer *b, double d) {
  char tmp[40];
  if (!isfinite(d)) return -2;
  return bic_buffer_put(b, tmp, (size_t)format_double(tmp, d));
}

int bic_open_json(lua_State *L) {
  (void)L;
  return 0;
}
