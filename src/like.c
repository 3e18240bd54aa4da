/* SQL LIKE in time linear in the subject for the patterns filters send.
 *
 * The semantics are SQLite's built-in like() (and biconnector.filter's LIKE):
 * `%` matches any run of characters, `_` exactly one character, the escape
 * character makes the next one literal, ASCII letters match either case and
 * every other character only itself. Characters are code points read the way
 * SQLite reads UTF-8 (sqlite3Utf8Read): a byte below 0xC0 alone; a byte from
 * 0xC0 with every continuation byte (0x80-0xBF) after it, decoded, and a
 * sequence that decodes below 0x80, to a surrogate or to U+FFFE/U+FFFF is
 * U+FFFD. So broken UTF-8 compares as SQLite compares it (fuzz/like.c checks
 * the two against each other).
 *
 * SQLite's own implementation backtracks: '%aaa...ab%' over a long run of 'a'
 * compares the whole needle at every place, O(n*m) inside one call that no
 * interrupt reaches (minutes for a few MB). Here the pattern is cut at its `%`
 * into segments; each must follow the previous one, the first at the start and
 * the last at the end unless a `%` frees them. Taking each middle segment at
 * its leftmost place is optimal (it leaves the most room to the rest), and a
 * segment of literal characters is found by Knuth-Morris-Pratt over code
 * points: O(n + m). A segment holding `_` is tried at each character, O(n*m),
 * checked against *stop every few thousand places. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "sql.h"

/* sqlite3Utf8Trans1: the bits a lead byte from 0xC0 contributes. */
static const unsigned char trans1[64] = {
  0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
  0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
  0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
  0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x00, 0x01, 0x02, 0x03, 0x00, 0x01, 0x00, 0x00,
};

/* The character at s[*i] (*i < n), *i moved past it, as SQLite reads it. */
static uint32_t read_char(const unsigned char *s, size_t *i, size_t n) {
  uint32_t c = s[(*i)++];
  if (c >= 0xC0) {
    c = trans1[c - 0xC0];
    while (*i < n && (s[*i] & 0xC0) == 0x80) c = (c << 6) + (0x3F & s[(*i)++]);
    if (c < 0x80 || (c & 0xFFFFF800u) == 0xD800u || (c & 0xFFFFFFFEu) == 0xFFFEu) c = 0xFFFD;
  }
  return c;
}

/* ASCII letters in lower case, every other character as it is. */
static uint32_t fold(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

#define ANY ((uint64_t)1 << 32) /* `_` in a segment: above every character (a read may give any 32 bits) */

typedef struct segment {
  size_t first, count; /* chars[first .. first+count): folded characters and ANY */
  int has_any;
  size_t *fail;        /* KMP table of a segment without ANY */
} segment;

typedef struct pattern {
  uint64_t *chars;
  segment *segs;
  size_t nchars, nsegs;
  int lead, trail; /* the pattern starts / ends with `%` */
  int ok;          /* 0: a dangling escape, nothing matches */
} pattern;

static void pattern_free(pattern *p) {
  for (size_t k = 0; p->segs && k < p->nsegs; k++) free(p->segs[k].fail);
  free(p->chars);
  free(p->segs);
}

/* Cuts the pattern into segments; -1 when memory ran out. esc: the escape
 * character or 0 for none (SQLite: an escape that is `%` or `_` takes that
 * wildcard's place). */
static int pattern_parse(pattern *p, const unsigned char *pat, size_t plen, uint32_t esc) {
  size_t i = 0;
  int new_seg = 1, seen = 0;
  memset(p, 0, sizeof *p);
  p->ok = 1;
  p->chars = (uint64_t *)malloc((plen + 1) * sizeof *p->chars);
  p->segs = (segment *)calloc(plen + 1, sizeof *p->segs);
  if (!p->chars || !p->segs) return -1;
  while (i < plen) {
    uint32_t r = read_char(pat, &i, plen);
    uint64_t c;
    if (esc != 0 && r == esc) {
      if (i >= plen) { p->ok = 0; return 0; } /* SQLite: no match */
      c = fold(read_char(pat, &i, plen));
    } else if (r == '%') {
      if (!seen) p->lead = 1;
      p->trail = 1;
      new_seg = 1;
      seen = 1;
      continue;
    } else if (r == '_') {
      c = ANY;
    } else {
      c = fold(r);
    }
    seen = 1;
    p->trail = 0;
    if (new_seg) {
      p->segs[p->nsegs].first = p->nchars;
      p->nsegs++;
      new_seg = 0;
    }
    p->chars[p->nchars++] = c;
    p->segs[p->nsegs - 1].count++;
    if (c == ANY) p->segs[p->nsegs - 1].has_any = 1;
  }
  for (size_t k = 0; k < p->nsegs; k++) {
    segment *g = &p->segs[k];
    if (!g->has_any) { /* KMP table of the literal */
      const uint64_t *w = p->chars + g->first;
      size_t m = g->count, q = 0;
      g->fail = (size_t *)malloc(m * sizeof *g->fail);
      if (!g->fail) return -1;
      g->fail[0] = 0;
      for (size_t j = 1; j < m; j++) {
        while (q > 0 && w[j] != w[q]) q = g->fail[q - 1];
        if (w[j] == w[q]) q++;
        g->fail[j] = q;
      }
    }
  }
  return 0;
}

/* Whether segment g matches s at i (a character start) within [i, end); the
 * end of the match in *out. */
static int seg_at(const pattern *p, const segment *g, const unsigned char *s, size_t i, size_t end,
                  size_t *out) {
  for (size_t k = 0; k < g->count; k++) {
    uint64_t want = p->chars[g->first + k];
    uint32_t got;
    if (i >= end) return 0;
    got = read_char(s, &i, end);
    if (want != ANY && want != fold(got)) return 0;
  }
  *out = i;
  return 1;
}

/* Leftmost match of segment g in s[from .. end): its end in *stop_at and 1; 0
 * none; -1 stopped; -2 out of memory. from is a character start. */
static int seg_find(const pattern *p, const segment *g, const unsigned char *s, size_t from, size_t end,
                    size_t *stop_at, volatile int *stop) {
  unsigned long tries = 0;
  if (g->fail) {
    const uint64_t *w = p->chars + g->first;
    size_t m = g->count, q = 0, i = from;
    while (i < end) {
      uint64_t c = fold(read_char(s, &i, end));
      if ((++tries & 0xFFFFF) == 0 && stop && *stop) return -1;
      while (q > 0 && c != w[q]) q = g->fail[q - 1];
      if (c == w[q]) q++;
      if (q == m) {
        *stop_at = i;
        return 1;
      }
    }
    return 0;
  }
  for (size_t i = from; i < end;) {
    size_t next = i;
    if ((++tries & 0xFFF) == 0 && stop && *stop) return -1;
    if (seg_at(p, g, s, i, end, stop_at)) return 1;
    (void)read_char(s, &next, end);
    i = next;
  }
  return 0;
}

/* Where the last segment (g, of g->count characters) must start to end at n:
 * the start of the g->count-th character from the end of s[lo .. n), found
 * walking forward (SQLite reads forward); 1 and *at, or 0. */
static int seg_suffix(const pattern *p, const segment *g, const unsigned char *s, size_t lo, size_t n,
                      size_t *at, int *nomem) {
  size_t k = g->count, seen = 0, e;
  size_t *ring = (size_t *)malloc(k * sizeof *ring);
  if (ring == NULL) {
    *nomem = 1;
    return 0;
  }
  for (size_t i = lo; i < n; seen++) {
    ring[seen % k] = i;
    (void)read_char(s, &i, n);
  }
  if (seen < k) {
    free(ring);
    return 0;
  }
  *at = ring[(seen - k) % k];
  free(ring);
  return seg_at(p, g, s, *at, n, &e) && e == n;
}

int bic_like(const char *pattern_text, size_t plen, const char *subject, size_t n, const char *esc,
             size_t esclen, volatile int *stop) {
  const unsigned char *s = (const unsigned char *)subject;
  pattern p;
  uint32_t escape = 0;
  size_t pos = 0, end = n;
  long lo, hi, k;
  int rc = 0, nomem = 0;
  if (esclen > 0) {
    size_t i = 0;
    escape = read_char((const unsigned char *)esc, &i, esclen);
  }
  if (pattern_parse(&p, (const unsigned char *)pattern_text, plen, escape) != 0) {
    pattern_free(&p);
    return -2;
  }
  if (!p.ok) goto out;
  if (p.nsegs == 0) { /* "" matches only "", a pattern of `%` anything */
    rc = p.lead ? 1 : n == 0;
    goto out;
  }
  lo = 0;
  hi = (long)p.nsegs - 1;
  if (!p.lead) { /* the first segment at the start */
    if (!seg_at(&p, &p.segs[0], s, 0, n, &pos)) goto out;
    if (p.nsegs == 1 && !p.trail) {
      rc = pos == n;
      goto out;
    }
    lo = 1;
  }
  if (!p.trail && hi >= lo) { /* the last segment at the end, after the first */
    size_t at;
    if (!seg_suffix(&p, &p.segs[hi], s, pos, n, &at, &nomem)) {
      if (nomem) rc = -2;
      goto out;
    }
    end = at;
    hi--;
  }
  for (k = lo; k <= hi; k++) { /* the others in order, each at its leftmost place */
    size_t e;
    int f = seg_find(&p, &p.segs[k], s, pos, end, &e, stop);
    if (f < 0) {
      rc = f;
      goto out;
    }
    if (!f) goto out;
    pos = e;
  }
  rc = 1;
out:
  pattern_free(&p);
  return rc;
}
