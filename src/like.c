/* SQL LIKE in time linear in the subject for the patterns filters send.
 *
 * The semantics are SQLite's built-in like() (and biconnector.filter's LIKE):
 * `%` matches any run of characters, `_` exactly one character, the escape
 * character makes the next one literal, ASCII letters match either case and
 * every other character only itself. A "character" is what SQLite's UTF-8
 * reader takes: a byte below 0xC0 alone, or a byte from 0xC0 with every
 * continuation byte (0x80-0xBF) after it.
 *
 * SQLite's own implementation backtracks: '%aaa...ab%' over a long run of 'a'
 * compares the whole needle at every position, O(n*m) inside one call that no
 * interrupt reaches (minutes for a few MB). Here the pattern is cut at its `%`
 * into segments; each must follow the previous one, the first at the start and
 * the last at the end unless a `%` frees them. Taking each middle segment at
 * its leftmost place is optimal (it leaves the most room to the rest), and a
 * segment of literal characters is found by Knuth-Morris-Pratt over bytes with
 * ASCII folding: O(n + m). A segment holding `_` (its length in bytes varies)
 * is tried at each character: O(n * m), checked against *stop every few
 * thousand places. */
#include <stdlib.h>
#include <string.h>
#include "sql.h"

typedef struct item {
  int any;           /* `_` */
  size_t off, len;   /* a literal: bytes lit[off .. off+len) */
  int multibyte_end; /* the literal's last character started with a byte >= 0xC0 */
} item;

typedef struct segment {
  size_t first, count; /* items[first .. first+count) */
  int has_any;
  size_t *fail;        /* KMP table of a literal-only segment (one item) */
} segment;

typedef struct pattern {
  item *items;
  segment *segs;
  size_t nitems, nsegs;
  unsigned char *lit;  /* literal bytes, folded */
  int lead, trail;     /* the pattern starts / ends with `%` */
  int ok;              /* 0: a dangling escape, nothing matches */
} pattern;

static unsigned char fold(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c; }

/* Bytes of the character at s[i] (i < n), as SQLite reads it. */
static size_t char_len(const unsigned char *s, size_t i, size_t n) {
  size_t j = i + 1;
  if (s[i] < 0xC0) return 1;
  while (j < n && (s[j] & 0xC0) == 0x80) j++;
  return j - i;
}

static int is_continuation(const unsigned char *s, size_t i, size_t n) {
  return i < n && (s[i] & 0xC0) == 0x80;
}

/* Whether s[i] starts a character, given that s[from] does (from <= i): a
 * continuation byte does unless a lead byte (>= 0xC0) before it, with only
 * continuation bytes between, takes it in. */
static int char_start(const unsigned char *s, size_t from, size_t i) {
  if ((s[i] & 0xC0) != 0x80) return 1;
  while (i > from && (s[i - 1] & 0xC0) == 0x80) i--;
  return i == from || s[i - 1] < 0xC0;
}

static void pattern_free(pattern *p) {
  for (size_t k = 0; p->segs && k < p->nsegs; k++) free(p->segs[k].fail);
  free(p->items);
  free(p->segs);
  free(p->lit);
}

/* Cuts the pattern into segments and items; -1 when memory ran out. */
static int pattern_parse(pattern *p, const unsigned char *pat, size_t plen, const unsigned char *esc,
                         size_t esclen) {
  size_t i = 0, nlit = 0;
  int in_lit = 0, new_seg = 1;
  memset(p, 0, sizeof *p);
  p->ok = 1;
  /* at most one item and one segment per pattern byte, plus one */
  p->items = (item *)calloc(plen + 1, sizeof *p->items);
  p->segs = (segment *)calloc(plen + 1, sizeof *p->segs);
  p->lit = (unsigned char *)malloc(plen + 1);
  if (!p->items || !p->segs || !p->lit) return -1;
  while (i < plen) {
    size_t cl = char_len(pat, i, plen);
    if (esclen > 0 && cl == esclen && memcmp(pat + i, esc, esclen) == 0) {
      i += cl;
      if (i >= plen) { p->ok = 0; return 0; } /* SQLite: no match */
      cl = char_len(pat, i, plen);
    } else if (cl == 1 && pat[i] == '%') {
      if (i == 0) p->lead = 1;
      if (i + 1 == plen) p->trail = 1;
      new_seg = 1;
      in_lit = 0;
      i++;
      continue;
    } else if (cl == 1 && pat[i] == '_') {
      if (new_seg) { p->segs[p->nsegs].first = p->nitems; p->nsegs++; new_seg = 0; }
      p->items[p->nitems].any = 1;
      p->nitems++;
      p->segs[p->nsegs - 1].count++;
      p->segs[p->nsegs - 1].has_any = 1;
      in_lit = 0;
      i++;
      continue;
    }
    /* a literal character pat[i .. i+cl) */
    if (new_seg) { p->segs[p->nsegs].first = p->nitems; p->nsegs++; new_seg = 0; }
    /* a character that starts with a continuation byte right after one with a
     * lead byte (broken UTF-8): its own item, so that the subject's character
     * must end between the two */
    if (in_lit && p->items[p->nitems - 1].multibyte_end && (pat[i] & 0xC0) == 0x80) in_lit = 0;
    if (!in_lit) {
      p->items[p->nitems].off = nlit;
      p->nitems++;
      p->segs[p->nsegs - 1].count++;
      in_lit = 1;
    }
    for (size_t k = 0; k < cl; k++) p->lit[nlit++] = fold(pat[i + k]);
    p->items[p->nitems - 1].len += cl;
    p->items[p->nitems - 1].multibyte_end = pat[i] >= 0xC0;
    i += cl;
  }
  if (plen > 0 && p->nsegs == 0) p->lead = p->trail = 1; /* only `%` */
  for (size_t k = 0; k < p->nsegs; k++) {
    segment *g = &p->segs[k];
    if (!g->has_any && g->count == 1) { /* KMP table of the literal */
      const unsigned char *w = p->lit + p->items[g->first].off;
      size_t m = p->items[g->first].len, q = 0;
      g->fail = (size_t *)malloc((m ? m : 1) * sizeof *g->fail);
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

/* Whether segment g matches s at i (a character start) within [i, end);
 * the end of the match in *out. */
static int seg_at(const pattern *p, const segment *g, const unsigned char *s, size_t i, size_t end,
                  size_t *out) {
  for (size_t k = 0; k < g->count; k++) {
    const item *it = &p->items[g->first + k];
    if (it->any) {
      if (i >= end) return 0;
      i += char_len(s, i, end);
      continue;
    }
    if (end - i < it->len) return 0;
    for (size_t b = 0; b < it->len; b++)
      if (fold(s[i + b]) != p->lit[it->off + b]) return 0;
    i += it->len;
    /* the subject's character must end where the literal's does */
    if (it->multibyte_end && is_continuation(s, i, end)) return 0;
  }
  *out = i;
  return 1;
}

/* Leftmost match of segment g in s[from .. end): its start and end, 1; 0 none;
 * -1 stopped. from is a character start. */
static int seg_find(const pattern *p, const segment *g, const unsigned char *s, size_t from, size_t end,
                    size_t *start, size_t *stop_at, volatile int *stop) {
  unsigned long tries = 0;
  if (g->fail) {
    const item *it = &p->items[g->first];
    const unsigned char *w = p->lit + it->off;
    size_t m = it->len, q = 0;
    for (size_t j = from; j < end; j++) {
      unsigned char c = fold(s[j]);
      if ((++tries & 0xFFFFF) == 0 && stop && *stop) return -1;
      while (q > 0 && c != w[q]) q = g->fail[q - 1];
      if (c == w[q]) q++;
      if (q == m) {
        /* a match whose first byte is a character start (it always is when
         * the pattern is valid UTF-8) and whose last character ends where
         * the subject's does */
        size_t st = j + 1 - m;
        if (char_start(s, from, st) && !(it->multibyte_end && is_continuation(s, j + 1, end))) {
          *start = st;
          *stop_at = j + 1;
          return 1;
        }
        q = g->fail[q - 1];
      }
    }
    return 0;
  }
  for (size_t i = from; i < end; i += char_len(s, i, end)) {
    if ((++tries & 0xFFF) == 0 && stop && *stop) return -1;
    if (seg_at(p, g, s, i, end, stop_at)) {
      *start = i;
      return 1;
    }
  }
  return 0;
}

/* Character starts of s[0..n) walked back from n: the start of the character
 * that holds byte n-1 (SQLite's reading goes forward; backward, a run of
 * continuation bytes belongs to the lead byte before it, if any). */
static size_t back_one(const unsigned char *s, size_t n) {
  size_t i = n - 1;
  while (i > 0 && (s[i] & 0xC0) == 0x80) i--;
  if (s[i] >= 0xC0) return i;
  return n - 1; /* a lone continuation byte after a byte below 0xC0 is a character alone */
}

/* Where the last segment must start so that it ends at n: 1 and *at, or 0. */
static int seg_suffix(const pattern *p, const segment *g, const unsigned char *s, size_t lo, size_t n,
                      size_t *at) {
  size_t i = n;
  for (size_t k = g->count; k-- > 0;) {
    const item *it = &p->items[g->first + k];
    if (it->any) {
      if (i <= lo) return 0;
      i = back_one(s, i);
      continue;
    }
    if (i - lo < it->len) return 0;
    i -= it->len;
  }
  /* checked forward from the start found, with SQLite's reading */
  {
    size_t e;
    if (!char_start(s, lo, i)) return 0;
    if (!seg_at(p, g, s, i, n, &e) || e != n) return 0;
  }
  *at = i;
  return 1;
}

int bic_like(const char *pattern_text, size_t plen, const char *subject, size_t n, const char *esc,
             size_t esclen, volatile int *stop) {
  const unsigned char *s = (const unsigned char *)subject;
  pattern p;
  size_t pos = 0, end = n;
  long lo, hi, k;
  int rc = 0;
  if (pattern_parse(&p, (const unsigned char *)pattern_text, plen, (const unsigned char *)esc, esclen) != 0) {
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
    if (p.nsegs == 1 && !p.trail) { rc = pos == n; goto out; }
    lo = 1;
  }
  if (!p.trail && hi >= lo) { /* the last segment at the end, after the first */
    size_t at;
    if (!seg_suffix(&p, &p.segs[hi], s, pos, n, &at)) goto out;
    end = at;
    hi--;
  }
  for (k = lo; k <= hi; k++) { /* the others in order, each at its leftmost place */
    size_t st, e;
    int f = seg_find(&p, &p.segs[k], s, pos, end, &st, &e, stop);
    if (f < 0) { rc = -1; goto out; }
    if (!f) goto out;
    pos = e;
  }
  rc = 1;
out:
  pattern_free(&p);
  return rc;
}
