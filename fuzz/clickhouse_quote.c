/* libFuzzer target: ClickHouse's text rules (src/sql_ch_text.c), the one
 * place where values become SQL text on servers without query parameters.
 *
 * - bic_ch_quote: for any bytes and each mark (' ` "), the quoted text is
 *   one token as ClickHouse's lexer reads it (it ends at the first mark not
 *   escaped by a backslash, which must be the last byte) and decodes, by
 *   ClickHouse's escape rules, to exactly the input; it holds no control byte;
 * - bic_ch_render: a statement with $N placeholders and string parameters
 *   either is refused (-1) or every $N outside quotes and comments becomes
 *   that parameter's quoted text, and the rest of the statement is unchanged;
 *   with query parameters, each value goes to the URL percent-encoded, and
 *   decodes back to itself;
 * - bic_ch_unescape: never writes past the field, never grows it.
 * The readers below are written from ClickHouse's lexer and escape rules,
 * not from the code under test.
 * Build: fuzz/build.sh clickhouse_quote; run: fuzz/run.sh clickhouse_quote [SECONDS]. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/buffer.h"
#include "../src/sql.h"

#define CHECK(cond) \
  do {              \
    if (!(cond)) abort(); \
  } while (0)

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* ClickHouse's lexer: the quoted token starting at s[0] (the mark) ends after
 * the first mark not escaped by a backslash: its length, or 0 if unclosed. */
static size_t token_length(const char *s, size_t n) {
  for (size_t i = 1; i < n; i++) {
    if (s[i] == '\\') i++;
    else if (s[i] == s[0]) return i + 1;
  }
  return 0;
}

/* ClickHouse's parser: the bytes a quoted token stands for (escapes \b \f \n
 * \r \t \0 \a \v \xHH, a backslash before any other byte is that byte, a
 * doubled mark is one mark). */
static size_t decode(const char *s, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 1; i + 1 < n; i++) {
    char c = s[i];
    if (c == s[0]) { /* a doubled mark inside (never written by the quoter) */
      out[o++] = c;
      i++;
      continue;
    }
    if (c != '\\') {
      out[o++] = c;
      continue;
    }
    c = s[++i];
    switch (c) {
    case 'b': out[o++] = '\b'; break;
    case 'f': out[o++] = '\f'; break;
    case 'n': out[o++] = '\n'; break;
    case 'r': out[o++] = '\r'; break;
    case 't': out[o++] = '\t'; break;
    case '0': out[o++] = '\0'; break;
    case 'a': out[o++] = '\a'; break;
    case 'v': out[o++] = '\v'; break;
    case 'x':
      CHECK(i + 2 < n && hexval((unsigned char)s[i + 1]) >= 0 && hexval((unsigned char)s[i + 2]) >= 0);
      out[o++] = (char)(hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]));
      i += 2;
      break;
    default: out[o++] = c; break;
    }
  }
  return o;
}

static void check_quote(const char *s, size_t n, char mark) {
  bic_buffer b;
  char *back;
  bic_buffer_init(&b);
  CHECK(bic_ch_quote(&b, s, n, mark) == 0);
  CHECK(b.len >= 2 && b.data[0] == mark && b.data[b.len - 1] == mark);
  CHECK(token_length(b.data, b.len) == b.len);
  for (size_t i = 0; i < b.len; i++) CHECK((unsigned char)b.data[i] >= 0x20 && b.data[i] != 0x7f);
  back = malloc(b.len + 1);
  CHECK(back != NULL);
  CHECK(decode(b.data, b.len, back) == n && memcmp(back, s, n) == 0);
  free(back);
  bic_buffer_free(&b);
}

/* Percent-decoding, then a TabSeparated field's escapes: a query parameter's value. */
static size_t param_value(const char *s, size_t n, char *out) {
  size_t o = 0;
  char *tmp = malloc(n + 1);
  size_t t = 0;
  CHECK(tmp != NULL);
  for (size_t i = 0; i < n; i++) {
    CHECK(s[i] != '&' && s[i] != '=' && s[i] != '+');
    if (s[i] == '%') {
      CHECK(i + 2 < n && hexval((unsigned char)s[i + 1]) >= 0 && hexval((unsigned char)s[i + 2]) >= 0);
      tmp[t++] = (char)(hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]));
      i += 2;
    } else {
      tmp[t++] = s[i];
    }
  }
  for (size_t i = 0; i < t; i++) {
    CHECK(tmp[i] != '\t' && tmp[i] != '\n');
    if (tmp[i] != '\\') {
      out[o++] = tmp[i];
      continue;
    }
    CHECK(i + 1 < t);
    switch (tmp[++i]) {
    case 't': out[o++] = '\t'; break;
    case 'n': out[o++] = '\n'; break;
    case 'r': out[o++] = '\r'; break;
    case '0': out[o++] = '\0'; break;
    default: out[o++] = tmp[i]; break;
    }
  }
  free(tmp);
  return o;
}

/* Where the text that s[i] starts and the renderer copies untouched ends (a
 * comment: -- or # to the line's end, C style; a heredoc $tag$...$tag$), or
 * 0 when s[i] starts none. (size_t)-1: unclosed. */
static size_t untouched(const char *s, size_t n, size_t i) {
  if ((s[i] == '-' && i + 1 < n && s[i + 1] == '-') || s[i] == '#') {
    const char *nl = memchr(s + i, '\n', n - i);
    return nl ? (size_t)(nl - s) + 1 : n;
  }
  if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
    for (size_t j = i + 2; j + 1 < n; j++)
      if (s[j] == '*' && s[j + 1] == '/') return j + 2;
    return (size_t)-1;
  }
  if (s[i] == '$' && !(i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9')) {
    size_t j = i + 1, tag;
    while (j < n && (s[j] == '_' || (s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z') ||
                     (s[j] >= '0' && s[j] <= '9')))
      j++;
    if (j >= n || s[j] != '$') return 0;
    tag = j + 1 - i;
    for (j++; j + tag <= n; j++)
      if (memcmp(s + j, s + i, tag) == 0) return j + tag;
    return (size_t)-1;
  }
  return 0;
}

/* The input: a statement, then up to 4 string parameters, separated by 0xFF. */
static void check_render(const char *data, size_t size) {
  const char *parts[5];
  size_t lens[5];
  int np = 0;
  bic_sql_value params[4];
  char err[256];
  const char *p = data, *end = data + size;
  while (np < 5) {
    const char *sep = memchr(p, 0xFF, (size_t)(end - p));
    parts[np] = p;
    lens[np] = sep ? (size_t)(sep - p) : (size_t)(end - p);
    np++;
    if (!sep) break;
    p = sep + 1;
  }
  for (int i = 1; i < np; i++) {
    memset(&params[i - 1], 0, sizeof params[0]);
    params[i - 1].kind = BIC_SQL_TEXT;
    params[i - 1].s = parts[i];
    params[i - 1].len = lens[i];
  }
  for (int mode = 0; mode < 2; mode++) {
    bic_buffer out, url;
    int rc;
    bic_buffer_init(&out);
    bic_buffer_init(&url);
    rc = bic_ch_render(&out, mode ? &url : NULL, parts[0], lens[0], params, np - 1, err, sizeof err);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
      /* walk statement and output together: outside quotes and comments they
       * are equal but for each $N, which is the parameter's quoted text (or
       * {pN:String}); quoted text and comments are copied unchanged */
      const char *s = parts[0];
      size_t n = lens[0], i = 0, o = 0;
      while (i < n) {
        char c = s[i];
        size_t skip = untouched(s, n, i);
        CHECK(skip != (size_t)-1);
        if (skip > 0) {
          CHECK(o + (skip - i) <= out.len && memcmp(out.data + o, s + i, skip - i) == 0);
          o += skip - i;
          i = skip;
          continue;
        }
        if (c == '$' && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9') {
          size_t j = i + 1;
          long k = 0;
          while (j < n && s[j] >= '0' && s[j] <= '9' && k <= 100000) k = k * 10 + (s[j++] - '0');
          CHECK(k >= 1 && k <= np - 1);
          if (mode == 0) {
            bic_buffer q;
            bic_buffer_init(&q);
            CHECK(bic_ch_quote(&q, params[k - 1].s, params[k - 1].len, '\'') == 0);
            CHECK(o + q.len <= out.len && memcmp(out.data + o, q.data, q.len) == 0);
            o += q.len;
            bic_buffer_free(&q);
          } else {
            CHECK(o < out.len && out.data[o] == '{');
            while (o < out.len && out.data[o] != '}') o++;
            o++;
          }
          i = j;
          continue;
        }
        CHECK(o < out.len && out.data[o] == c);
        i++;
        o++;
        if (c == '\'' || c == '`' || c == '"') { /* the quoted text is copied as is */
          size_t len = token_length(s + i - 1, n - i + 1);
          CHECK(len > 0);
          CHECK(o - 1 + len <= out.len && memcmp(out.data + o - 1, s + i - 1, len) == 0);
          i += len - 1;
          o += len - 1;
        }
      }
      CHECK(o == out.len);
      if (mode == 1 && url.len > 0) { /* &param_pN=VALUE..., each value decoding back */
        const char *u = url.data, *ue = url.data + url.len;
        while (u < ue) {
          const char *eq, *next;
          long k;
          char *val;
          CHECK(ue - u > 9 && memcmp(u, "&param_p", 8) == 0);
          k = strtol(u + 8, NULL, 10);
          CHECK(k >= 1 && k <= np - 1);
          eq = memchr(u, '=', (size_t)(ue - u));
          CHECK(eq != NULL);
          next = memchr(eq, '&', (size_t)(ue - eq));
          if (!next) next = ue;
          val = malloc((size_t)(next - eq) + 1);
          CHECK(val != NULL);
          CHECK(param_value(eq + 1, (size_t)(next - eq - 1), val) == params[k - 1].len &&
                memcmp(val, params[k - 1].s, params[k - 1].len) == 0);
          free(val);
          u = next;
        }
      }
    }
    bic_buffer_free(&out);
    bic_buffer_free(&url);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  char *copy;
  size_t n;
  check_quote(s, size, '\'');
  check_quote(s, size, '`');
  check_quote(s, size, '"');
  check_render(s, size);
  copy = malloc(size + 1);
  if (!copy) return 0;
  memcpy(copy, data, size);
  n = bic_ch_unescape(copy, size);
  CHECK(n <= size);
  free(copy);
  return 0;
}
