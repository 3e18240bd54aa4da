/* ClickHouse's text rules, in one place: literals and identifiers quoted by
 * ClickHouse's escaping, the placeholders $1..$n of a statement filled in,
 * and the TabSeparated escapes of its answers undone. The driver
 * (sql_clickhouse.c) renders every statement with these functions, the
 * engine module quotes names through core.sql.clickhouse_quote, and
 * fuzz/clickhouse_quote.c checks them against a reader of ClickHouse's
 * lexer rules. No Lua, no network: plain bytes in, plain bytes out.
 *
 * Quoting (bic_ch_quote): the text between two marks (' for a string literal,
 * ` for an identifier); inside, a backslash, any of the three quote marks and
 * every control byte (0x00-0x1F, 0x7F) are escaped (\\ \' \` \" \xHH); every
 * other byte, UTF-8 or not, stands for itself. ClickHouse's lexer ends a
 * quoted token at the first unescaped mark, so the token is always exactly
 * the quoted text, and its parser turns the escapes back into the bytes.
 *
 * Rendering (bic_ch_render): $N outside quotes and comments is parameter N:
 * NULL, a number written as a literal (integers in full, doubles in their
 * shortest exact form), and a string as a quoted literal, or, for servers
 * with query parameters, as {pN:String} with "&param_pN=VALUE" (the value
 * escaped as a TabSeparated field, then percent-encoded) for the URL. Text
 * inside '...', `...`, "...", comments (-- # and C style) and heredocs ($x$)
 * is never touched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "sql.h"

static const char HEX[] = "0123456789ABCDEF";

/* The bytes that need a backslash inside quotes (besides control bytes). */
static int special(unsigned char c) { return c == '\\' || c == '\'' || c == '`' || c == '"'; }

int bic_ch_quote(bic_buffer *b, const char *s, size_t n, char mark) {
  size_t i = 0, run = 0;
  if (bic_buffer_putc(b, mark)) return -1;
  while (i < n) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != 0x7f && !special(c)) {
      i++;
      continue;
    }
    if (bic_buffer_put(b, s + run, i - run)) return -1;
    if (c < 0x20 || c == 0x7f) {
      char esc[4] = {'\\', 'x', HEX[c >> 4], HEX[c & 15]};
      if (bic_buffer_put(b, esc, 4)) return -1;
    } else {
      char esc[2] = {'\\', (char)c};
      if (bic_buffer_put(b, esc, 2)) return -1;
    }
    run = ++i;
  }
  if (bic_buffer_put(b, s + run, n - run)) return -1;
  return bic_buffer_putc(b, mark);
}

int bic_ch_url_escape(bic_buffer *b, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~') {
      if (bic_buffer_putc(b, (char)c)) return -1;
    } else {
      char esc[3] = {'%', HEX[c >> 4], HEX[c & 15]};
      if (bic_buffer_put(b, esc, 3)) return -1;
    }
  }
  return 0;
}

/* A query parameter's value as ClickHouse reads it: a TabSeparated field (a
 * raw tab or newline would end it, a backslash starts an escape), then
 * percent-encoded for the URL. */
static int put_param_value(bic_buffer *b, const char *s, size_t n) {
  bic_buffer t;
  int rc = 0;
  bic_buffer_init(&t);
  for (size_t i = 0; i < n && rc == 0; i++) {
    char c = s[i];
    switch (c) {
    case '\\': rc = bic_buffer_puts(&t, "\\\\"); break;
    case '\t': rc = bic_buffer_puts(&t, "\\t"); break;
    case '\n': rc = bic_buffer_puts(&t, "\\n"); break;
    case '\r': rc = bic_buffer_puts(&t, "\\r"); break;
    case '\0': rc = bic_buffer_puts(&t, "\\0"); break;
    default: rc = bic_buffer_putc(&t, c); break;
    }
  }
  if (rc == 0) rc = bic_ch_url_escape(b, t.data ? t.data : "", t.len);
  bic_buffer_free(&t);
  return rc;
}

/* The shortest decimal text that reads back as d (nan, inf and -inf as
 * ClickHouse spells them). */
static int put_double(bic_buffer *b, double d) {
  char num[40];
  if (d != d) return bic_buffer_puts(b, "nan");
  if (d > 1.7976931348623157e308) return bic_buffer_puts(b, "inf");
  if (d < -1.7976931348623157e308) return bic_buffer_puts(b, "-inf");
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(num, sizeof num, "%.*g", prec, d);
    if (strtod(num, NULL) == d) break;
  }
  return bic_buffer_put(b, num, strlen(num));
}

/* Where the text quoted by mark q that starts at s[i] (the opening mark) ends:
 * the index after the closing mark, or 0 when it never closes. A backslash
 * escapes the next byte; a doubled mark is two quoted texts in a row. */
static size_t skip_quoted(const char *s, size_t n, size_t i, char q) {
  for (i++; i < n; i++) {
    if (s[i] == '\\') i++;
    else if (s[i] == q) return i + 1;
  }
  return 0;
}

/* A heredoc $tag$...$tag$ (tag letters, digits and _, not starting with a
 * digit) starting at s[i]: the index after it, 0 when s[i] starts none, or
 * (size_t)-1 when it never closes. */
static size_t skip_heredoc(const char *s, size_t n, size_t i) {
  size_t j = i + 1, tag;
  if (j < n && s[j] >= '0' && s[j] <= '9') return 0;
  while (j < n && (s[j] == '_' || (s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z') ||
                   (s[j] >= '0' && s[j] <= '9')))
    j++;
  if (j >= n || s[j] != '$') return 0;
  tag = j + 1 - i; /* "$tag$" */
  for (j++; j + tag <= n; j++)
    if (memcmp(s + j, s + i, tag) == 0) return j + tag;
  return (size_t)-1;
}

int bic_ch_render(bic_buffer *out, bic_buffer *url_params, const char *sql, size_t n, const bic_sql_value *params,
                  int nparams, char *err, size_t errlen) {
  size_t i = 0, run = 0;
  while (i < n) {
    char c = sql[i];
    size_t end = 0;
    if (c == '\'' || c == '`' || c == '"') {
      end = skip_quoted(sql, n, i, c);
      if (end == 0) {
        snprintf(err, errlen, "clickhouse: the statement has an unterminated %c quote at byte %zu", c, i + 1);
        return -1;
      }
    } else if ((c == '-' && i + 1 < n && sql[i + 1] == '-') || c == '#') {
      const char *nl = memchr(sql + i, '\n', n - i);
      end = nl ? (size_t)(nl - sql) + 1 : n;
    } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
      const char *close = NULL;
      for (size_t j = i + 2; j + 1 < n; j++)
        if (sql[j] == '*' && sql[j + 1] == '/') { close = sql + j; break; }
      if (!close) {
        snprintf(err, errlen, "clickhouse: the statement has an unterminated comment at byte %zu", i + 1);
        return -1;
      }
      end = (size_t)(close - sql) + 2;
    } else if (c == '$' && i + 1 < n && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
      size_t j = i + 1;
      long k = 0;
      const bic_sql_value *v;
      int rc = 0;
      while (j < n && sql[j] >= '0' && sql[j] <= '9' && k <= 100000) k = k * 10 + (sql[j++] - '0');
      if (k < 1 || k > nparams) {
        snprintf(err, errlen, "clickhouse: the statement names $%ld but has %d parameter%s", k, nparams,
                 nparams == 1 ? "" : "s");
        return -1;
      }
      if (bic_buffer_put(out, sql + run, i - run)) return -2;
      v = &params[k - 1];
      switch (v->kind) {
      case BIC_SQL_NULL: rc = bic_buffer_puts(out, "NULL"); break;
      case BIC_SQL_BOOL: rc = bic_buffer_putc(out, v->i ? '1' : '0'); break;
      case BIC_SQL_INT: {
        char num[24];
        snprintf(num, sizeof num, "%lld", v->i);
        rc = bic_buffer_put(out, num, strlen(num));
        break;
      }
      case BIC_SQL_DOUBLE: rc = put_double(out, v->d); break;
      case BIC_SQL_TEXT:
      case BIC_SQL_BLOB:
        if (url_params) {
          char name[48];
          snprintf(name, sizeof name, "{p%ld:String}", k);
          rc = bic_buffer_put(out, name, strlen(name));
          snprintf(name, sizeof name, "&param_p%ld=", k);
          if (rc == 0) rc = bic_buffer_put(url_params, name, strlen(name));
          if (rc == 0) rc = put_param_value(url_params, v->s ? v->s : "", v->len);
        } else {
          rc = bic_ch_quote(out, v->s ? v->s : "", v->len, '\'');
        }
        break;
      }
      if (rc) return -2;
      i = run = j;
      continue;
    } else if (c == '$') {
      end = skip_heredoc(sql, n, i);
      if (end == (size_t)-1) {
        snprintf(err, errlen, "clickhouse: the statement has an unterminated heredoc at byte %zu", i + 1);
        return -1;
      }
    }
    i = end > i ? end : i + 1;
  }
  if (bic_buffer_put(out, sql + run, n - run)) return -2;
  return 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

size_t bic_ch_unescape(char *s, size_t n) {
  char *p = memchr(s, '\\', n);
  size_t i, o;
  if (!p) return n;
  o = i = (size_t)(p - s);
  while (i < n) {
    char c = s[i++];
    if (c != '\\' || i == n) {
      s[o++] = c;
      continue;
    }
    c = s[i++];
    switch (c) {
    case 'b': s[o++] = '\b'; break;
    case 'f': s[o++] = '\f'; break;
    case 'n': s[o++] = '\n'; break;
    case 'r': s[o++] = '\r'; break;
    case 't': s[o++] = '\t'; break;
    case '0': s[o++] = '\0'; break;
    case 'a': s[o++] = '\a'; break;
    case 'v': s[o++] = '\v'; break;
    case 'e': s[o++] = '\x1b'; break;
    case 'x':
      if (i + 1 < n && hexval(s[i]) >= 0 && hexval(s[i + 1]) >= 0) {
        s[o++] = (char)(hexval(s[i]) * 16 + hexval(s[i + 1]));
        i += 2;
      } else {
        s[o++] = 'x';
      }
      break;
    default: s[o++] = c; break;
    }
  }
  return o;
}
