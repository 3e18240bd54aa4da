/* urlData row encoder: typed rows -> JSON chunks of bounded size.
 *
 * core.rows.new(fields [, select [, opts]]) -> encoder
 *   fields: the described fields, a list of {code = ..., type = ...}
 *   select: list of 1-based indexes into fields giving the output columns
 *           (default: every field in described order)
 *   opts.chunk_size: bytes after which add_list stops (default 65536)
 *   opts.arrays: "fields" (array rows are in described order, default),
 *                "select" (array rows are in select order) or "auto" (the
 *                first array row decides for all: exactly as wide as a select
 *                of another width than the described fields, select order;
 *                else described order)
 *   opts.datetime_offset: "+HH:MM", "-HH:MM" or "Z": datetimes are written with
 *                an offset, "2024-08-30T12:19:57+02:00" (the urlData example of
 *                b24restdocs connector/index.md): a value's own zone is kept, a
 *                value without one is taken as at this offset, a time number is
 *                shown at it. Default: "YYYY-MM-DD HH:MM:SS", zones dropped.
 *   opts.invalid: "error" (default: a value that does not fit its field's type
 *                fails the row) or "null": it is written as null (normalize
 *                leaves it out) and add, add_list and normalize say so after
 *                their result: nulled, field_index (the first one), message.
 * The header row is written by new(); rows follow; finish() closes the array.
 * Values are checked and formatted by field type in C (see docs/connector.md). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bic.h"
#include "json.h"
#include "sql.h"

#define ROWS_MT "biconnector.rows"
#define ROWS_DEFAULT_CHUNK 65536

enum { T_INT, T_DOUBLE, T_STRING, T_DATE, T_DATETIME };
static const char *const type_names[] = {"int", "double", "string", "date", "datetime", NULL};

enum { S_OPEN, S_FINISHED, S_CLOSED };

/* A value that cannot be converted: the message is written into why. */
typedef struct why_buf {
  char text[240];
} why_buf;

struct rows_encoder {
  bic_buffer buf;
  size_t chunk;
  double rows;           /* rows added (a double: LuaJIT has no integers) */
  int state;
  int nfields;           /* described fields */
  int nout;              /* output columns */
  int arrays_by_select;  /* array rows follow the select order */
  int arrays_auto;       /* "auto" and no array row seen yet: the first one decides */
  int arrays_guessed;    /* "auto" and the first array row put array rows in select order */
  int *field_type;       /* [nfields] */
  int *out_field;        /* [nout] 0-based field index of each output column */
  int zone;              /* datetimes written with this offset (minutes east of UTC), or ZONE_PLAIN */
  int null_invalid;      /* opts.invalid == "null" */
  /* enc:stage: the staged row's output cells, encoded once by field, joined by enc:keep */
  bic_buffer staged;     /* the cells' JSON text, field after field */
  size_t *cell_at;       /* [nfields] where field f's text starts in staged */
  size_t *cell_len;      /* [nfields] its length (fields not written: 0) */
  unsigned char *is_out; /* [nfields] whether field f is an output column */
  int staged_ok;         /* a row is staged and not yet kept */
  int staged_refused;    /* enc:keep refuses it: add's field index (0: the row), why */
  why_buf staged_why;
};

/* rows_encoder.zone: datetimes as "YYYY-MM-DD HH:MM:SS", without an offset (the default). */
#define ZONE_PLAIN INT_MIN
/* civil.zone: the value said nothing about its zone. */
#define ZONE_UNKNOWN INT_MIN

/* The codes of the fields (a list of strings) live in the userdata's uservalue. */
#if LUA_VERSION_NUM >= 504
#define rows_setcodes(L, idx) lua_setiuservalue(L, (idx), 1)
#define rows_getcodes(L, idx) ((void)lua_getiuservalue(L, (idx), 1))
#define rows_newuserdata(L, n) lua_newuserdatauv(L, (n), 1)
#else
#define rows_setcodes(L, idx) lua_setfenv(L, (idx))
#define rows_getcodes(L, idx) lua_getfenv(L, (idx))
#define rows_newuserdata(L, n) lua_newuserdata(L, (n))
#endif

/* ---- failures -------------------------------------------------------------- */


static const char *value_kind(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t == LUA_TLIGHTUSERDATA) return "userdata";
  if (t == LUA_TNUMBER) return bic_isinteger(L, idx) ? "integer" : "number";
  return lua_typename(L, t);
}

/* ---- calendar -------------------------------------------------------------- */

typedef struct civil {
  int year, month, day, hour, min, sec;
  int zone; /* minutes east of UTC as the value gave it, or ZONE_UNKNOWN */
} civil;

static int is_leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int y, int m) {
  static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

static int civil_valid(const civil *c) {
  return c->year >= 0 && c->year <= 9999 && c->month >= 1 && c->month <= 12 && c->day >= 1 &&
         c->day <= days_in_month(c->year, c->month) && c->hour >= 0 && c->hour <= 23 &&
         c->min >= 0 && c->min <= 59 && c->sec >= 0 && c->sec <= 59;
}

/* Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm). */
static void civil_from_days(long long z, civil *c) {
  long long era, doe, yoe, doy, mp, y;
  z += 719468;
  era = (z >= 0 ? z : z - 146096) / 146097;
  doe = z - era * 146097;
  yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  y = yoe + era * 400;
  doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  mp = (5 * doy + 2) / 153;
  c->day = (int)(doy - (153 * mp + 2) / 5 + 1);
  c->month = (int)(mp < 10 ? mp + 3 : mp - 9);
  c->year = (int)(y + (c->month <= 2));
}

/* Seconds since the epoch (UTC) -> civil time; 0, or -1 outside years 0..9999. */
static int civil_from_time(double t, civil *c) {
  long long s, days, rem;
  if (!(t >= -62167219200.0 && t < 253402300800.0)) return -1; /* 0000-01-01 .. 9999-12-31 */
  s = (long long)floor(t);
  days = s >= 0 ? s / 86400 : -((-s + 86399) / 86400);
  rem = s - days * 86400;
  civil_from_days(days, c);
  c->hour = (int)(rem / 3600);
  c->min = (int)(rem % 3600 / 60);
  c->sec = (int)(rem % 60);
  c->zone = 0;
  return 0;
}

static int digits(const char *s, int n) {
  int v = 0, i;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

/* Parse "YYYY-MM-DD" or "DD.MM.YYYY" (the spelling Bitrix24 itself writes),
 * optionally followed by a time of day: " HH:MM", or for YYYY-MM-DD also ISO
 * 8601 "THH:MM"; then optional ":SS" with an optional fraction (".25" or
 * ",25"), then an optional zone (Z, +HH:MM, +HHMM or +HH, offsets up to 23:59)
 * after any of them ("2024-01-01 12:00:00.25+02" is how PostgreSQL writes a
 * timestamptz). The same spellings as a filter value (parse_moment in
 * lua/biconnector/connector/filter.lua; spec/datetime_spellings_spec.lua).
 * The fraction is dropped, the wall-clock time as written is kept, and the
 * zone goes to c->zone. Returns 1 for a date, 2 for a date and time, 0 when
 * the string is not in one of these forms or not a valid calendar time. */
static int parse_datetime(const char *s, size_t len, civil *c) {
  size_t i;
  int dotted = 0;
  memset(c, 0, sizeof *c);
  c->zone = ZONE_UNKNOWN;
  if (len < 10) return 0;
  if (s[4] == '-' && s[7] == '-') {
    c->year = digits(s, 4);
    c->month = digits(s + 5, 2);
    c->day = digits(s + 8, 2);
  } else if (s[2] == '.' && s[5] == '.') {
    dotted = 1;
    c->day = digits(s, 2);
    c->month = digits(s + 3, 2);
    c->year = digits(s + 6, 4);
  } else {
    return 0;
  }
  if (c->year < 0 || c->month < 0 || c->day < 0) return 0;
  if (len == 10) return civil_valid(c) ? 1 : 0;
  if (len < 16 || (s[10] != ' ' && (s[10] != 'T' || dotted)) || s[13] != ':') return 0;
  c->hour = digits(s + 11, 2);
  c->min = digits(s + 14, 2);
  if (c->hour < 0 || c->min < 0) return 0;
  i = 16; /* no seconds: :00 */
  if (i < len && s[i] == ':') {
    if (len < 19) return 0;
    c->sec = digits(s + 17, 2);
    if (c->sec < 0) return 0;
    i = 19;
    /* a fraction of a second (PostgreSQL and MySQL write timestamps
     * "2024-01-01 12:00:00.25"; ISO 8601 allows a comma too); it is dropped */
    if (i < len && (s[i] == '.' || s[i] == ',')) {
      i++;
      if (i == len || s[i] < '0' || s[i] > '9') return 0;
      while (i < len && s[i] >= '0' && s[i] <= '9') i++;
    }
  }
  if (!civil_valid(c)) return 0;
  if (i == len) return 2;
  if (s[i] == 'Z' && i + 1 == len) {
    c->zone = 0;
    return 2;
  }
  if (s[i] == '+' || s[i] == '-') {
    const char *z = s + i + 1;
    size_t n = len - i - 1;
    int hh, mm = 0;
    if (n == 2) hh = digits(z, 2);
    else if (n == 4) hh = digits(z, 2), mm = digits(z + 2, 2);
    else if (n == 5 && z[2] == ':') hh = digits(z, 2), mm = digits(z + 3, 2);
    else return 0;
    if (hh < 0 || hh > 23 || mm < 0 || mm > 59) return 0;
    c->zone = (s[i] == '-' ? -1 : 1) * (hh * 60 + mm);
    return 2;
  }
  return 0;
}

/* A date table like os.date("*t"): year, month, day required; hour, min, sec default 0. */
static int table_field(lua_State *L, int idx, const char *key, int dflt, int *out) {
  int ok = 1;
  lua_pushstring(L, key);
  lua_rawget(L, idx); /* raw: no metamethod may raise while a row is half written */
  if (lua_isnil(L, -1)) {
    if (dflt < 0) ok = 0;
    *out = dflt;
  } else if (lua_type(L, -1) == LUA_TNUMBER) {
    double d = (double)lua_tonumber(L, -1);
    if (d != floor(d) || d < -1e6 || d > 1e6) ok = 0;
    else *out = (int)d;
  } else {
    ok = 0;
  }
  lua_pop(L, 1);
  return ok;
}

static int civil_from_table(lua_State *L, int idx, civil *c) {
  if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
  c->zone = ZONE_UNKNOWN;
  return table_field(L, idx, "year", -1, &c->year) && table_field(L, idx, "month", -1, &c->month) &&
         table_field(L, idx, "day", -1, &c->day) && table_field(L, idx, "hour", 0, &c->hour) &&
         table_field(L, idx, "min", 0, &c->min) && table_field(L, idx, "sec", 0, &c->sec) &&
         civil_valid(c);
}

static void put2(char *p, int v) {
  p[0] = (char)('0' + v / 10);
  p[1] = (char)('0' + v % 10);
}

/* Writes "YYYY-MM-DD" or "YYYY-MM-DD HH:MM:SS" into out (20 bytes); returns the length. */
static size_t format_civil(const civil *c, int with_time, char *out) {
  put2(out, c->year / 100);
  put2(out + 2, c->year % 100);
  out[4] = '-';
  put2(out + 5, c->month);
  out[7] = '-';
  put2(out + 8, c->day);
  if (!with_time) return 10;
  out[10] = ' ';
  put2(out + 11, c->hour);
  out[13] = ':';
  put2(out + 14, c->min);
  out[16] = ':';
  put2(out + 17, c->sec);
  return 19;
}

/* Writes c as a datetime into out (26 bytes): "YYYY-MM-DD HH:MM:SS" when zone is
 * ZONE_PLAIN, else "YYYY-MM-DDTHH:MM:SS+HH:MM" at c's own zone, or at zone when c
 * has none. Returns the length. */
static size_t format_datetime(const civil *c, int zone, char *out) {
  size_t n = format_civil(c, 1, out);
  int z;
  if (zone == ZONE_PLAIN) return n;
  z = c->zone != ZONE_UNKNOWN ? c->zone : zone;
  out[10] = 'T';
  out[n] = z < 0 ? '-' : '+';
  if (z < 0) z = -z;
  put2(out + n + 1, z / 60);
  out[n + 3] = ':';
  put2(out + n + 4, z % 60);
  return n + 6;
}

/* A time number (seconds since the epoch) as civil time at zone (ZONE_PLAIN: UTC). */
static int civil_from_time_at(double t, int zone, civil *c) {
  if (zone == ZONE_PLAIN) return civil_from_time(t, c);
  if (civil_from_time(t + 60.0 * zone, c) != 0) return -1;
  c->zone = zone;
  return 0;
}

/* ---- value conversion -------------------------------------------------------- */

/* The converted value of one cell, before it is written as JSON or pushed to Lua. */
typedef struct cell {
  enum { C_NULL, C_INT, C_DOUBLE, C_STRING, C_TEXT } kind;
  long long i;
  double d;
  const char *s; /* C_STRING: points into a Lua string on the stack */
  size_t len;
  char text[32]; /* C_TEXT: a formatted date, datetime or number as text */
} cell;

/* The Lua value at idx, of type t, is nil or biconnector.null. */
static int is_null(lua_State *L, int idx, int t) {
  return t == LUA_TNIL || (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL);
}

/* A decimal number as text: what strtod accepts, whole string, finite; no hex, inf, nan.
 * Any length: a database's decimal text may hold 66 characters (MySQL
 * DECIMAL(65,30)) or hundreds (a PostgreSQL numeric), and is the nearest
 * double all the same (0 below the smallest one). */
static int parse_double_string(const char *s, size_t len, double *out) {
  char tmp[64];
  char *buf = tmp, *end;
  size_t i;
  int ok;
  if (len == 0) return 0;
  for (i = 0; i < len; i++) {
    char ch = s[i];
    if (!((ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == '.' || ch == 'e' || ch == 'E'))
      return 0;
  }
  if (len >= sizeof tmp && !(buf = malloc(len + 1))) return 0;
  memcpy(buf, s, len);
  buf[len] = '\0';
  *out = strtod(buf, &end);
  ok = end == buf + len && isfinite(*out);
  if (buf != tmp) free(buf);
  return ok;
}

/* Integral doubles within the 64-bit range become integers. */
static int double_to_int(double d, long long *out) {
  if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return 0; /* NaN too */
  *out = (long long)d; /* toward zero: the same value when d is integral */
  return (double)*out == d;
}

/* A value to convert: a database value (sql.h), or a Lua value read into the
 * same form (read_lua). A Lua value keeps where it came from: a boolean or a
 * function fits no type, a table may be a date, and a failure is told in Lua's
 * words. */
typedef struct value {
  bic_sql_value v;
  lua_State *L; /* a Lua value: its state and index; NULL for a database value */
  int idx;
  int lua_other; /* a Lua value that is no number, string or null (a table, a boolean, ...) */
} value;

static void read_lua(lua_State *L, int idx, value *x) {
  int t = lua_type(L, idx);
  x->L = L;
  x->idx = idx;
  x->lua_other = 0;
  x->v.kind = BIC_SQL_NULL;
  if (is_null(L, idx, t)) return;
  if (t == LUA_TNUMBER) {
#if BIC_HAS_INTEGERS
    if (lua_isinteger(L, idx)) {
      x->v.kind = BIC_SQL_INT;
      x->v.i = (long long)lua_tointeger(L, idx);
      return;
    }
#endif
    x->v.kind = BIC_SQL_DOUBLE;
    x->v.d = (double)lua_tonumber(L, idx);
  } else if (t == LUA_TSTRING) {
    x->v.kind = BIC_SQL_TEXT;
    x->v.s = lua_tolstring(L, idx, &x->v.len);
  } else {
    x->lua_other = 1;
  }
}

static void read_sql(const bic_sql_value *v, value *x) {
  x->v = *v;
  x->L = NULL;
  x->idx = 0;
  x->lua_other = 0;
}

/* Describe the offending value briefly: type and, for scalars, a shortened value. */
static void explain(const value *x, why_buf *why, const char *expected) {
  const bic_sql_value *v = &x->v;
  if (x->lua_other) {
    if (lua_type(x->L, x->idx) == LUA_TBOOLEAN)
      snprintf(why->text, sizeof why->text, "expected %s, got boolean %s", expected,
               lua_toboolean(x->L, x->idx) ? "true" : "false");
    else
      snprintf(why->text, sizeof why->text, "expected %s, got %s", expected, value_kind(x->L, x->idx));
    return;
  }
  switch (v->kind) {
  case BIC_SQL_TEXT: {
    char shown[41];
    size_t i, n = v->len > 32 ? 32 : v->len;
    for (i = 0; i < n; i++) shown[i] = (v->s[i] >= 32 && v->s[i] < 127) ? v->s[i] : '?';
    shown[n] = '\0';
    snprintf(why->text, sizeof why->text, "expected %s, got %s \"%s%s\"", expected, x->L ? "string" : "text", shown,
             v->len > n ? "..." : "");
    break;
  }
  case BIC_SQL_INT:
    if (x->L) /* as Lua shows a number */
      snprintf(why->text, sizeof why->text, "expected %s, got integer %.17g", expected, (double)v->i);
    else
      snprintf(why->text, sizeof why->text, "expected %s, got integer %lld", expected, v->i);
    break;
  case BIC_SQL_DOUBLE: snprintf(why->text, sizeof why->text, "expected %s, got number %.17g", expected, v->d); break;
  case BIC_SQL_BLOB: snprintf(why->text, sizeof why->text, "expected %s, got a BLOB of %zu bytes", expected, v->len); break;
  case BIC_SQL_BOOL: snprintf(why->text, sizeof why->text, "expected %s, got boolean %s", expected, v->i ? "true" : "false"); break;
  default: snprintf(why->text, sizeof why->text, "expected %s", expected); break;
  }
}

/* A number as a string field writes it: an integer in decimal, an integral
 * double under 1e15 as an integer, else its shortest JSON form. 0, or -1. */
static int number_text(const bic_sql_value *v, cell *out) {
  long long i;
  if (v->kind == BIC_SQL_INT) {
    out->len = (size_t)snprintf(out->text, sizeof out->text, "%lld", v->i);
  } else if (!isfinite(v->d)) {
    return -1;
  } else if (double_to_int(v->d, &i) && fabs(v->d) < 1e15) {
    out->len = (size_t)snprintf(out->text, sizeof out->text, "%lld", i);
  } else {
    bic_buffer tmp;
    bic_buffer_init(&tmp);
    if (bic_json_put_double(&tmp, v->d) != 0 || tmp.len >= sizeof out->text) {
      bic_buffer_free(&tmp);
      return -1;
    }
    memcpy(out->text, tmp.data, tmp.len);
    out->len = tmp.len;
    bic_buffer_free(&tmp);
  }
  out->kind = C_TEXT;
  return 0;
}

/* Converts x to a cell of the given type, datetimes at zone (format_datetime):
 * 0, or -1 with why set. The rules: an integral number or integer text for int;
 * a finite number or numeric text for double; text or a number's spelling for
 * string; date text or a time number (or, from Lua, a date table) for date and
 * datetime. A database's booleans count as 0 and 1 (and "true"/"false"); Lua's
 * fit no type. */
static int convert(const value *x, int type, int zone, cell *out, why_buf *why) {
  const bic_sql_value *v = &x->v;
  civil c;
  if (v->kind == BIC_SQL_NULL && !x->lua_other) {
    out->kind = C_NULL;
    return 0;
  }
  switch (type) {
  case T_INT:
    if (v->kind == BIC_SQL_INT || v->kind == BIC_SQL_BOOL) {
      out->kind = C_INT;
      out->i = v->i;
      return 0;
    }
    if ((v->kind == BIC_SQL_DOUBLE && double_to_int(v->d, &out->i)) ||
        (v->kind == BIC_SQL_TEXT && bic_sql_parse_int(v->s, v->len, &out->i))) {
      out->kind = C_INT;
      return 0;
    }
    explain(x, why, "an integer");
    return -1;
  case T_DOUBLE:
    if (v->kind == BIC_SQL_INT || v->kind == BIC_SQL_BOOL) {
      out->kind = C_DOUBLE;
      out->d = (double)v->i;
      return 0;
    }
    if (v->kind == BIC_SQL_DOUBLE && isfinite(v->d)) {
      out->kind = C_DOUBLE;
      out->d = v->d;
      return 0;
    }
    if (v->kind == BIC_SQL_TEXT && parse_double_string(v->s, v->len, &out->d)) {
      out->kind = C_DOUBLE;
      return 0;
    }
    explain(x, why, x->L && v->kind == BIC_SQL_DOUBLE ? "a finite number" : "a number");
    return -1;
  case T_STRING:
    if (v->kind == BIC_SQL_TEXT || v->kind == BIC_SQL_BLOB) {
      out->kind = C_STRING; /* put_cell refuses invalid UTF-8 */
      out->s = v->len ? v->s : "";
      out->len = v->len;
      return 0;
    }
    if (v->kind == BIC_SQL_BOOL) {
      out->len = (size_t)snprintf(out->text, sizeof out->text, "%s", v->i ? "true" : "false");
      out->kind = C_TEXT;
      return 0;
    }
    if ((v->kind == BIC_SQL_INT || v->kind == BIC_SQL_DOUBLE) && number_text(v, out) == 0) return 0;
    /* a Lua number without a spelling (inf, nan) is told as Lua's type name */
    explain(x, why, x->L && v->kind == BIC_SQL_DOUBLE ? type_names[type] : "a string");
    return -1;
  case T_DATE:
  case T_DATETIME: {
    int ok = 0;
    int at = type == T_DATETIME ? zone : ZONE_PLAIN;
    if (v->kind == BIC_SQL_TEXT) ok = parse_datetime(v->s, v->len, &c) > 0;
    else if (v->kind == BIC_SQL_INT) ok = civil_from_time_at((double)v->i, at, &c) == 0;
    else if (v->kind == BIC_SQL_DOUBLE) ok = civil_from_time_at(v->d, at, &c) == 0;
    else if (x->lua_other && lua_type(x->L, x->idx) == LUA_TTABLE) ok = civil_from_table(x->L, x->idx, &c);
    if (ok) {
      out->kind = C_TEXT;
      out->len = type == T_DATETIME ? format_datetime(&c, zone, out->text) : format_civil(&c, 0, out->text);
      return 0;
    }
    if (x->L)
      explain(x, why, type == T_DATE ? "a date (YYYY-MM-DD, a time number or a date table)"
                                     : "a datetime (YYYY-MM-DD HH:MM:SS, ISO 8601, a time number or a date table)");
    else
      explain(x, why, type == T_DATE ? "a date (YYYY-MM-DD or a time number)"
                                     : "a datetime (YYYY-MM-DD HH:MM:SS, ISO 8601 or a time number)");
    return -1;
  }
  }
  explain(x, why, type_names[type]);
  return -1;
}

/* The Lua value at idx as a cell (convert). */
static int convert_lua(lua_State *L, int idx, int type, int zone, cell *out, why_buf *why) {
  value x;
  read_lua(L, idx, &x);
  return convert(&x, type, zone, out, why);
}

/* "00" .. "99": two digits at a time. */
static const char two_digits[201] =
    "0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849"
    "5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/* Writes the n last decimal digits of u (zeros in front when it has fewer) ending at end. */
static void put_digits(char *end, unsigned long long u, int n) {
  for (; n >= 2; n -= 2) {
    unsigned r = (unsigned)(u % 100);
    u /= 100;
    end -= 2;
    memcpy(end, two_digits + 2 * r, 2);
  }
  if (n) end[-1] = (char)('0' + u % 10);
}

/* How many decimal digits u has (at least 1). */
static int count_digits(unsigned long long u) {
  int n = 1;
  while (u >= 100) {
    u /= 100;
    n += 2;
  }
  return n + (u >= 10);
}

/* An integer in decimal, as bic_json_put_integer writes it, straight into b. */
static int put_integer(bic_buffer *b, long long v) {
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  int n = count_digits(u), neg = v < 0;
  if (b->cap - b->len < 24 && bic_buffer_grow(b, 24) != 0) return -1;
  if (neg) b->data[b->len] = '-';
  b->len += (size_t)(n + neg);
  put_digits(b->data + b->len, u, n);
  return 0;
}

/* Doubles with at most three decimals and under 1e12 (money, rates, quantities)
 * are written directly: m / 10^k == d exactly means "m/10^k" as decimal text
 * reads back to d, and the smallest such k gives the shortest text, which is
 * what bic_json_put_double would write. Everything else goes to it.
 * One rounding serves every k: when some k <= 3 fits with m, 3 fits with
 * m * 10^(3-k) (a * 1000 is within half a unit of it below 1e15, and both
 * quotients are the same real number correctly rounded), so the text is the
 * rounding at 3 with three decimals, less their trailing zeros (one kept). */
static int put_double(bic_buffer *b, double d) {
  double a = fabs(d);
  if (a >= 1e-3 && a < 1e12) {
    long long m = (long long)(a * 1000.0 + 0.5); /* floor: positive */
    if ((double)m / 1000.0 == a) {
      unsigned long long ip = (unsigned long long)m / 1000;
      int n = count_digits(ip), t = 4;
      char *o;
      if (b->cap - b->len < 24 && bic_buffer_grow(b, 24) != 0) return -1; /* under 1e12: 12 + 1 + 3 + sign */
      o = b->data + b->len;
      if (d < 0) *o++ = '-';
      put_digits(o + n, ip, n);
      o += n;
      o[0] = '.';
      put_digits(o + 4, (unsigned long long)m - ip * 1000, 3);
      while (t > 2 && o[t - 1] == '0') t--; /* ".660" -> ".66", ".000" -> ".0" */
      b->len = (size_t)(o - b->data) + (size_t)t;
      return 0;
    }
  }
  return bic_json_put_double(b, d);
}

/* Append a converted cell as JSON; 0, or with why set -2 (invalid UTF-8) or -1 (memory). */
static int put_cell(bic_buffer *b, const cell *v, why_buf *why) {
  int rc = 0;
  switch (v->kind) {
  case C_NULL: rc = bic_buffer_puts(b, "null"); break;
  case C_INT: rc = bic_json_put_integer(b, v->i); break;
  case C_DOUBLE: rc = put_double(b, v->d); break;
  case C_STRING:
    rc = bic_json_put_string(b, v->s, v->len, 0);
    if (rc == -2) {
      snprintf(why->text, sizeof why->text, "expected a string, got invalid UTF-8");
      return -2;
    }
    break;
  case C_TEXT:
    if (bic_buffer_putc(b, '"') || bic_buffer_put(b, v->text, v->len) || bic_buffer_putc(b, '"')) rc = -1;
    break;
  }
  if (rc != 0) {
    snprintf(why->text, sizeof why->text, "out of memory");
    return -1;
  }
  return 0;
}

/* ---- the encoder ------------------------------------------------------------ */

static rows_encoder *check_open(lua_State *L) {
  rows_encoder *e = (rows_encoder *)luaL_checkudata(L, 1, ROWS_MT);
  if (e->state == S_CLOSED) luaL_argerror(L, 1, "encoder is closed");
  return e;
}

static int type_index(const char *s) {
  int i;
  for (i = 0; type_names[i] != NULL; i++)
    if (strcmp(s, type_names[i]) == 0) return i;
  return -1;
}

/* Whether the array row at index row (absolute) is in select order. */
static int array_by_select(lua_State *L, rows_encoder *e, int row) {
  if (e->arrays_auto) {
    e->arrays_auto = 0;
    e->arrays_by_select = e->nout != e->nfields && (int)lua_rawlen(L, row) == e->nout;
    e->arrays_guessed = e->arrays_by_select;
  }
  return e->arrays_by_select;
}

/* An array row wider than its order allows: says so in why, and when "auto"
 * took the first array row for one in select order, why it did (a row in
 * described order whose last values are nil has the length of its last
 * value: as wide as the select, it looks like a row in select order). */
static void too_wide(const rows_encoder *e, why_buf *why, size_t len, int width) {
  if (e->arrays_guessed)
    snprintf(why->text, sizeof why->text,
             "array row has %d values, expected at most %d: the first array row had %d, as many as the select, "
             "so array rows are read in select order (write a missing value as biconnector.null, not nil)",
             (int)len, width, e->nout);
  else
    snprintf(why->text, sizeof why->text, "array row has %d values, expected at most %d", (int)len, width);
}

/* Pushes the value of output column col of the row at index row (absolute)
 * and returns its type (Lua 5.3 on tells it as it pushes); as_array: 0 a map
 * row, 1 an array in described order, 2 in select order. A map row is read by
 * the code at keys + col on the stack (the output columns' codes pushed once
 * for many rows), or with keys 0 by the code in codes. */
static int push_column(lua_State *L, rows_encoder *e, int row, int codes, int keys, int col, int as_array) {
  int field = e->out_field[col];
#if LUA_VERSION_NUM >= 503
  if (as_array) return lua_rawgeti(L, row, as_array == 2 ? col + 1 : field + 1);
  if (keys) lua_pushvalue(L, keys + col);
  else lua_rawgeti(L, codes, field + 1);
  return lua_rawget(L, row);
#else
  if (as_array) {
    lua_rawgeti(L, row, as_array == 2 ? col + 1 : field + 1);
  } else {
    if (keys) lua_pushvalue(L, keys + col);
    else lua_rawgeti(L, codes, field + 1);
    lua_rawget(L, row);
  }
  return lua_type(L, -1);
#endif
}

/* An array row has a value at [1] or a non-zero length; otherwise it is keyed by
 * code. *len: the row's length (lua_rawlen). */
static int row_is_array(lua_State *L, int row, size_t *len) {
  int yes;
  *len = (size_t)lua_rawlen(L, row);
  if (*len > 0) return 1;
  lua_rawgeti(L, row, 1);
  yes = !lua_isnil(L, -1);
  lua_pop(L, 1);
  return yes;
}

/* Two decimal digits at s, or -1. */
static int two_digit(const char *s) {
  unsigned a = (unsigned)(unsigned char)s[0] - '0', b = (unsigned)(unsigned char)s[1] - '0';
  return a > 9 || b > 9 ? -1 : (int)(a * 10 + b);
}

/* A date or datetime text already in the spelling it is written in
 * ("YYYY-MM-DD"; "YYYY-MM-DD HH:MM:SS" when datetimes carry no offset) and
 * valid: convert + format_civil would write it back byte for byte. */
static int written_as_is(const char *s, size_t len, int type, int zone) {
  int century, year, month, day, hour, min, sec;
  if (!(type == T_DATE ? len == 10 : zone == ZONE_PLAIN && len == 19 && s[10] == ' ' && s[13] == ':' && s[16] == ':'))
    return 0;
  century = two_digit(s);
  year = two_digit(s + 2);
  month = two_digit(s + 5);
  day = two_digit(s + 8);
  if (s[4] != '-' || s[7] != '-' || century < 0 || year < 0 || month < 1 || month > 12 || day < 1 ||
      day > days_in_month(century * 100 + year, month))
    return 0;
  if (len == 10) return 1;
  hour = two_digit(s + 11);
  min = two_digit(s + 14);
  sec = two_digit(s + 17);
  return hour >= 0 && hour <= 23 && min >= 0 && min <= 59 && sec >= 0 && sec <= 59;
}

/* The common exact matches of a Lua value (at the top of the stack, of Lua
 * type t) and its field's type, written as convert + put_cell would, with
 * fewer reads of the value (the Lua-list rows of an answer spend most of
 * their time per cell): 1 written, 0 not one of them (nothing written:
 * convert decides), -1 out of memory. */
static int put_lua_exact(lua_State *L, bic_buffer *b, int t, int type, int zone) {
  if (t == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (type == T_STRING) {
      size_t at = b->len;
      int rc = bic_json_put_string(b, s, len, 0);
      if (rc == -2) b->len = at; /* invalid UTF-8: put_cell's words */
      return rc == -2 ? 0 : rc == 0 ? 1 : -1;
    }
    if ((type == T_DATE || type == T_DATETIME) && written_as_is(s, len, type, zone)) {
      char *o;
      if (b->cap - b->len < len + 2 && bic_buffer_grow(b, len + 2) != 0) return -1;
      o = b->data + b->len;
      o[0] = '"';
      memcpy(o + 1, s, len);
      o[len + 1] = '"';
      b->len += len + 2;
      return 1;
    }
    return 0;
  }
  if (t == LUA_TNUMBER && (type == T_INT || type == T_DOUBLE)) {
    double d;
#if BIC_HAS_INTEGERS
    if (lua_isinteger(L, -1)) {
      long long i = (long long)lua_tointeger(L, -1);
      if (type == T_INT) return put_integer(b, i) == 0 ? 1 : -1;
      return put_double(b, (double)i) == 0 ? 1 : -1;
    }
#endif
    d = (double)lua_tonumber(L, -1);
    if (type == T_INT) {
      long long i;
      if (!double_to_int(d, &i)) return 0;
      return put_integer(b, i) == 0 ? 1 : -1;
    }
    if (!isfinite(d)) return 0;
    return put_double(b, d) == 0 ? 1 : -1;
  }
  if (is_null(L, -1, t)) return bic_buffer_puts(b, "null") == 0 ? 1 : -1;
  return 0;
}

/* What a row had that did not fit (invalid = "null"): how many values, the first
 * one's 1-based field index and why. */
typedef struct nulls {
  int count, field;
  why_buf why;
} nulls;

/* Counts a value left out or written as null; the first one is the one told. */
static void nulls_add(nulls *n, int field, const why_buf *why) {
  if (n->count++ == 0) {
    n->field = field;
    n->why = *why;
  }
}

/* After a result: nulled, field_index, message when values were nulled. */
static int nulls_push(lua_State *L, const nulls *n) {
  if (n->count == 0) return 0;
  lua_pushinteger(L, n->count);
  lua_pushinteger(L, n->field);
  lua_pushstring(L, n->why.text);
  return 3;
}

/* Encode the table at index row (absolute). On failure, returns the 1-based field
 * index (0 for a row-level problem) and sets why; the buffer is left as it was.
 * With invalid = "null" a value that does not fit is written as null and counted
 * in *nl instead. keys: see push_column. keep: the cells' values are left on
 * the stack (room for nout more checked by the caller, who drops them), one
 * pop per row instead of one per cell. */
static int encode_row(lua_State *L, rows_encoder *e, int row, int codes, int keys, int keep, why_buf *why,
                      nulls *nl) {
  size_t mark = e->buf.len, len;
  int col, as_array, width, type, t;
  if (lua_type(L, row) != LUA_TTABLE) {
    snprintf(why->text, sizeof why->text, "expected a row table, got %s", value_kind(L, row));
    return 0;
  }
  as_array = row_is_array(L, row, &len);
  if (as_array) {
    if (array_by_select(L, e, row)) as_array = 2;
    width = as_array == 2 ? e->nout : e->nfields;
    if (len > (size_t)width) {
      too_wide(e, why, len, width);
      return 0;
    }
  }
  if (bic_buffer_puts(&e->buf, ",[")) goto nomem;
  for (col = 0; col < e->nout; col++) {
    cell v;
    size_t at;
    int rc;
    if (col > 0 && bic_buffer_putc(&e->buf, ',')) goto nomem;
    at = e->buf.len;
    t = push_column(L, e, row, codes, keys, col, as_array);
    type = e->field_type[e->out_field[col]];
    rc = put_lua_exact(L, &e->buf, t, type, e->zone);
    if (rc > 0) {
      if (!keep) lua_pop(L, 1);
      continue;
    }
    if (rc < 0) {
      e->buf.len = mark;
      snprintf(why->text, sizeof why->text, "out of memory");
      return e->out_field[col] + 1;
    }
    rc = convert_lua(L, -1, type, e->zone, &v, why) != 0 ? -2 : put_cell(&e->buf, &v, why);
    if (!keep) lua_pop(L, 1);
    if (rc == -2 && e->null_invalid) { /* does not fit: null */
      e->buf.len = at;
      nulls_add(nl, e->out_field[col] + 1, why);
      rc = bic_buffer_puts(&e->buf, "null") ? -1 : 0;
      if (rc != 0) snprintf(why->text, sizeof why->text, "out of memory");
    }
    if (rc != 0) {
      e->buf.len = mark;
      return e->out_field[col] + 1;
    }
  }
  if (bic_buffer_putc(&e->buf, ']')) goto nomem;
  e->rows += 1;
  return -1;
nomem:
  e->buf.len = mark;
  snprintf(why->text, sizeof why->text, "out of memory");
  return 0;
}

/* Whether encode_row may leave a row's values on the stack, after the output
 * columns' codes (a row of up to 200 columns, and room for both). */
static int keep_cells(lua_State *L, const rows_encoder *e) {
  return e->nout <= 200 && lua_checkstack(L, 2 * e->nout + LUA_MINSTACK);
}

/* enc:add(row) -> true [, nulled, field_index, message] | nil, field_index (0: the row itself), message */
static int rows_add(lua_State *L) {
  rows_encoder *e = check_open(L);
  why_buf why;
  nulls nl = {0, 0, {""}};
  int failed;
  if (e->state != S_OPEN) return luaL_error(L, "encoder is finished");
  lua_settop(L, 2);
  rows_getcodes(L, 1);
  failed = encode_row(L, e, 2, 3, 0, keep_cells(L, e), &why, &nl);
  lua_settop(L, 3);
  if (failed < 0) {
    lua_pushboolean(L, 1);
    return 1 + nulls_push(L, &nl);
  }
  lua_pushnil(L);
  lua_pushinteger(L, failed);
  lua_pushstring(L, why.text);
  return 3;
}

/* enc:add_list(list, first, last) -> next [, nulled, field_index, message] |
 * nil, row_index, field_index, message [, nulled, field_index, message]
 * Encodes list[first..last] and stops early once chunk_size bytes are pending;
 * returns the index of the first row not yet encoded. */
static int rows_add_list(lua_State *L) {
  rows_encoder *e = check_open(L);
  lua_Integer i, last;
  int keep, base;
  why_buf why;
  nulls nl = {0, 0, {""}};
  luaL_checktype(L, 2, LUA_TTABLE);
  i = luaL_checkinteger(L, 3);
  last = luaL_checkinteger(L, 4);
  if (e->state != S_OPEN) return luaL_error(L, "encoder is finished");
  lua_settop(L, 4);
  rows_getcodes(L, 1);
  keep = keep_cells(L, e);
  if (keep) { /* the output columns' codes at 6.., for map rows */
    int col;
    for (col = 0; col < e->nout; col++) lua_rawgeti(L, 5, e->out_field[col] + 1);
  }
  base = lua_gettop(L);
  for (; i <= last && e->buf.len < e->chunk; i++) {
    int failed;
    bic_rawgeti(L, 2, i);
    failed = encode_row(L, e, base + 1, 5, keep ? 6 : 0, keep, &why, &nl);
    lua_settop(L, base);
    if (failed >= 0) { /* and what the rows before it nulled, which the answer's warning counts */
      lua_pushnil(L);
      lua_pushinteger(L, i);
      lua_pushinteger(L, failed);
      lua_pushstring(L, why.text);
      return 4 + nulls_push(L, &nl);
    }
  }
  lua_pushinteger(L, i);
  return 1 + nulls_push(L, &nl);
}

/* ---- LuaJIT's fast path for lists of array rows (docs/architecture.md) ------
 *
 * Under LuaJIT the Lua C API reads of a cell (lua_rawgeti, lua_type,
 * lua_tolstring or lua_tonumber: about 85 instructions) cost as much as
 * writing it. connector/core.lua therefore reads the array rows of a plain
 * list in Lua code the JIT compiles (connector/rows_jit.lua), puts each row's
 * cells in a bic_ffi_cell array and calls bic_rows_ffi_row through the FFI,
 * one call a row. That function writes only what put_lua_exact writes (the
 * same bytes): anything else (a value to convert, invalid UTF-8, no memory,
 * an encoder not open) leaves the buffer as it was and answers 0, and the
 * row goes through enc:add_list, which converts it or says what is wrong. */
typedef struct bic_ffi_cell {
  double d;      /* kind 1 */
  const char *s; /* kind 2: the string's bytes (the row keeps the string) */
  size_t len;
  int kind;      /* 0 null (nil or biconnector.null), 1 a number, 2 a string */
} bic_ffi_cell;

/* -> 0 not written (nothing changed), 1 written, 2 written and the chunk is full */
static int bic_rows_ffi_row(void *handle, const bic_ffi_cell *cells) {
  rows_encoder *e = (rows_encoder *)handle;
  bic_buffer *b = &e->buf;
  size_t mark = b->len;
  int col;
  if (e->state != S_OPEN || bic_buffer_puts(b, ",[")) goto undo;
  for (col = 0; col < e->nout; col++) {
    const bic_ffi_cell *c = &cells[col];
    int type = e->field_type[e->out_field[col]];
    if (col > 0 && bic_buffer_putc(b, ',')) goto undo;
    if (c->kind == 0) {
      if (bic_buffer_puts(b, "null")) goto undo;
    } else if (c->kind == 1) {
      long long i;
      if (type == T_INT) {
        if (!double_to_int(c->d, &i) || put_integer(b, i) != 0) goto undo;
      } else if (type == T_DOUBLE) {
        if (!isfinite(c->d) || put_double(b, c->d) != 0) goto undo;
      } else {
        goto undo;
      }
    } else if (c->kind == 2 && type == T_STRING) {
      if (bic_json_put_string(b, c->s, c->len, 0) != 0) goto undo;
    } else if (c->kind == 2 && (type == T_DATE || type == T_DATETIME) && written_as_is(c->s, c->len, type, e->zone)) {
      char *o;
      if (b->cap - b->len < c->len + 2 && bic_buffer_grow(b, c->len + 2) != 0) goto undo;
      o = b->data + b->len;
      o[0] = '"';
      memcpy(o + 1, c->s, c->len);
      o[c->len + 1] = '"';
      b->len += c->len + 2;
    } else {
      goto undo;
    }
  }
  if (bic_buffer_putc(b, ']')) goto undo;
  e->rows += 1;
  return b->len >= e->chunk ? 2 : 1;
undo:
  b->len = mark;
  return 0;
}

/* enc:ffi() -> handle, row function (light userdata: the encoder and
 * bic_rows_ffi_row, for the FFI), width, {array index of each output column},
 * {code of each output column}. width: the most values an array row may have
 * (the C path refuses a longer one); -1 while the order of array rows is not
 * known yet ("auto" before the first array row, which enc:add_list must see).
 * A map row is read by the codes. */
static int rows_ffi(lua_State *L) {
  rows_encoder *e = check_open(L);
  int col, by_select;
  lua_settop(L, 1);
  by_select = e->arrays_by_select;
  lua_pushlightuserdata(L, e);
  lua_pushlightuserdata(L, (void *)(size_t)&bic_rows_ffi_row);
  lua_pushinteger(L, e->arrays_auto ? -1 : by_select ? e->nout : e->nfields);
  lua_createtable(L, e->nout, 0);
  for (col = 0; col < e->nout; col++) {
    lua_pushinteger(L, by_select ? col + 1 : e->out_field[col] + 1);
    lua_rawseti(L, -2, col + 1);
  }
  lua_createtable(L, e->nout, 0);
  rows_getcodes(L, 1);
  for (col = 0; col < e->nout; col++) {
    lua_rawgeti(L, -1, e->out_field[col] + 1);
    lua_rawseti(L, -3, col + 1);
  }
  lua_pop(L, 1);
  return 5;
}

/* Pushes nil, field_index, message (a row the encoder refuses) -> 3. */
static int push_refusal(lua_State *L, int field, const char *why) {
  lua_pushnil(L);
  lua_pushinteger(L, field);
  lua_pushstring(L, why);
  return 3;
}

/* enc:normalize(row) -> {code = value} [, nulled, field_index, message] for every
 * described field the row carries, converted by type (date/datetime as text), or
 * nil, field_index, message. With invalid = "null" a value that does not fit
 * (invalid UTF-8 included, as add writes it) is left out.
 * stage: also writes the output columns' JSON text as enc:add would, from the
 * same conversion (each value converted once), for enc:keep to append; what
 * add alone refuses (a too wide array row, invalid UTF-8 with invalid =
 * "error") enc:keep refuses, so that a row the filter drops is not checked
 * further, as when add followed normalize for the rows kept only. */
static int normalize_row(lua_State *L, int stage) {
  rows_encoder *e = check_open(L);
  why_buf why, put_why;
  nulls nl = {0, 0, {""}};
  int f, as_array, rc, put_failed = 0, put_col = 0;
  size_t len;
  lua_settop(L, 2);
  rows_getcodes(L, 1);
  if (stage) {
    if (e->state != S_OPEN) return luaL_error(L, "encoder is finished");
    e->staged.len = 0;
    e->staged_ok = 0;
  }
  if (lua_type(L, 2) != LUA_TTABLE) {
    snprintf(why.text, sizeof why.text, "expected a row table, got %s", value_kind(L, 2));
    return push_refusal(L, 0, why.text);
  }
  as_array = row_is_array(L, 2, &len);
  if (as_array && array_by_select(L, e, 2)) as_array = 2;
  lua_createtable(L, 0, e->nfields);
  for (f = 0; f < e->nfields; f++) {
    cell v;
    if (stage) e->cell_len[f] = 0;
    if (as_array) {
      if (as_array == 2) {
        int col, found = -1;
        for (col = 0; col < e->nout; col++)
          if (e->out_field[col] == f) { found = col; break; }
        if (found < 0) continue;
        lua_rawgeti(L, 2, found + 1);
      } else {
        lua_rawgeti(L, 2, f + 1);
      }
    } else {
      lua_rawgeti(L, 3, f + 1);
      lua_rawget(L, 2);
    }
    rc = convert_lua(L, -1, e->field_type[f], e->zone, &v, &why);
    if (rc == 0 && e->null_invalid && v.kind == C_STRING && !bic_utf8_valid(v.s, v.len)) {
      snprintf(why.text, sizeof why.text, "expected a string, got invalid UTF-8");
      rc = -1;
    }
    if (rc != 0) {
      if (!e->null_invalid) return push_refusal(L, f + 1, why.text);
      nulls_add(&nl, f + 1, &why);
      v.kind = C_NULL;
    }
    if (stage && e->is_out[f]) { /* the cell's JSON text, before the filter's view of a datetime */
      size_t at = e->staged.len;
      why_buf w;
      int put = put_cell(&e->staged, &v, &w);
      if (put == -1) return luaL_error(L, "out of memory");
      if (put == -2) { /* invalid UTF-8 with invalid = "error": add's refusal, told after the others */
        e->staged.len = at;
        int col = 0;
        while (e->out_field[col] != f) col++; /* add tells the first output column that fails */
        if (!put_failed || col < put_col) {
          put_failed = f + 1;
          put_col = col;
          put_why = w;
        }
      }
      e->cell_at[f] = at;
      e->cell_len[f] = e->staged.len - at;
    }
    if (v.kind == C_TEXT && v.len > 19) { /* the filter compares the wall-clock time written, not the offset */
      v.text[10] = ' ';
      v.len = 19;
    }
    lua_rawgeti(L, 3, f + 1); /* key */
    switch (v.kind) {
    case C_NULL: lua_pop(L, 2); continue;
    case C_INT: lua_pushinteger(L, (lua_Integer)v.i); break;
    case C_DOUBLE: lua_pushnumber(L, (lua_Number)v.d); break;
    case C_STRING: lua_pushvalue(L, -2); break;
    case C_TEXT: lua_pushlstring(L, v.text, v.len); break;
    }
    lua_rawset(L, -4);
    lua_pop(L, 1); /* the raw value */
  }
  if (stage) {
    int width = as_array == 2 ? e->nout : e->nfields;
    e->staged_refused = -1;
    if (as_array && len > (size_t)width) {
      e->staged_refused = 0;
      too_wide(e, &e->staged_why, len, width);
    } else if (put_failed) {
      e->staged_refused = put_failed;
      e->staged_why = put_why;
    }
    e->staged_ok = 1;
  }
  return 1 + nulls_push(L, &nl);
}

static int rows_normalize(lua_State *L) { return normalize_row(L, 0); }

/* enc:stage(row): enc:normalize(row), the row also staged for enc:keep. */
static int rows_stage(lua_State *L) { return normalize_row(L, 1); }

/* enc:keep() -> true | nil, field_index (0: the row itself), message: appends
 * the row staged by the last enc:stage as enc:add(row) would have written it,
 * or refuses it as add would have (a staged row is kept once). */
static int rows_keep(lua_State *L) {
  rows_encoder *e = check_open(L);
  size_t mark;
  int col;
  if (e->state != S_OPEN) return luaL_error(L, "encoder is finished");
  if (!e->staged_ok) return luaL_error(L, "no row is staged (enc:stage)");
  e->staged_ok = 0;
  if (e->staged_refused >= 0) return push_refusal(L, e->staged_refused, e->staged_why.text);
  mark = e->buf.len;
  if (bic_buffer_puts(&e->buf, ",[")) goto nomem;
  for (col = 0; col < e->nout; col++) {
    int f = e->out_field[col];
    if ((col > 0 && bic_buffer_putc(&e->buf, ',')) ||
        bic_buffer_put(&e->buf, e->staged.data + e->cell_at[f], e->cell_len[f]))
      goto nomem;
  }
  if (bic_buffer_putc(&e->buf, ']')) goto nomem;
  e->rows += 1;
  lua_pushboolean(L, 1);
  return 1;
nomem:
  e->buf.len = mark; /* the buffer as it was */
  return luaL_error(L, "out of memory");
}

/* enc:finish(): closes the JSON array. */
static int rows_finish(lua_State *L) {
  rows_encoder *e = check_open(L);
  if (e->state == S_OPEN) {
    if (bic_buffer_putc(&e->buf, ']')) return luaL_error(L, "out of memory");
    e->state = S_FINISHED;
  }
  return 0;
}

/* enc:take() -> the pending bytes as a string (possibly empty); the buffer empties. */
static int rows_take(lua_State *L) {
  rows_encoder *e = check_open(L);
  lua_pushlstring(L, e->buf.data ? e->buf.data : "", e->buf.len);
  e->buf.len = 0;
  /* Give back memory a single huge row may have needed. */
  if (e->buf.cap > 4 * e->chunk + 65536) bic_buffer_free(&e->buf);
  return 1;
}

static int rows_pending(lua_State *L) {
  rows_encoder *e = check_open(L);
  lua_pushinteger(L, (lua_Integer)e->buf.len);
  return 1;
}

static int rows_count(lua_State *L) {
  rows_encoder *e = (rows_encoder *)luaL_checkudata(L, 1, ROWS_MT);
  lua_pushinteger(L, (lua_Integer)e->rows);
  return 1;
}

/* The buffers of the last encoders closed, kept for the next ones (per Lua
 * state, in its registry): an answer's encoder grows its buffer to a chunk
 * and more, and freeing that at the end of every answer made glibc give the
 * top of its heap back and take it again at the next one (brk calls, each a
 * TLB flush on every core the process runs on). At most SPARES buffers of at
 * most SPARE_MAX bytes each are kept: the answers a worker streams at once.
 * The holder is finalized at lua_close before any encoder may be: closed, it
 * frees what it is handed. */
#define SPARE_KEY "biconnector.rows.spare"
#define SPARES 8
#define SPARE_MAX (256u * 1024u)
typedef struct {
  bic_buffer buf[SPARES];
  int n, closed;
} rows_spare;

static int spare_gc(lua_State *L) {
  rows_spare *sp = (rows_spare *)lua_touserdata(L, 1);
  while (sp->n > 0) bic_buffer_free(&sp->buf[--sp->n]);
  sp->closed = 1;
  return 0;
}

static rows_spare *spare_of(lua_State *L) {
  rows_spare *sp;
  lua_getfield(L, LUA_REGISTRYINDEX, SPARE_KEY);
  sp = (rows_spare *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return sp;
}

/* Keeps b's memory as a spare when there is room and b is not too large; else frees it. */
static void spare_put(lua_State *L, bic_buffer *b) {
  rows_spare *sp;
  if (b->data == NULL) return;
  sp = b->cap <= SPARE_MAX ? spare_of(L) : NULL;
  if (sp != NULL && !sp->closed && sp->n < SPARES) {
    b->len = 0;
    sp->buf[sp->n++] = *b;
    bic_buffer_init(b);
    return;
  }
  bic_buffer_free(b);
}

/* b (empty) takes a spare's memory, if there is one. */
static void spare_take(lua_State *L, bic_buffer *b) {
  rows_spare *sp = spare_of(L);
  if (sp != NULL && sp->n > 0) *b = sp->buf[--sp->n];
}

/* close, __gc and __close: frees the buffer (or keeps it as the spare); safe
 * to call more than once. */
static int rows_close(lua_State *L) {
  rows_encoder *e = (rows_encoder *)luaL_checkudata(L, 1, ROWS_MT);
  spare_put(L, &e->buf);
  bic_buffer_free(&e->staged);
  e->staged_ok = 0;
  e->state = S_CLOSED;
  return 0;
}

static int rows_tostring(lua_State *L) {
  rows_encoder *e = (rows_encoder *)luaL_checkudata(L, 1, ROWS_MT);
  lua_pushfstring(L, "biconnector.rows (%d columns, %s): %p", e->nout,
                  e->state == S_CLOSED ? "closed" : "open", (void *)e);
  return 1;
}

static int rows_chunk_size(lua_State *L, int opts) {
  lua_Integer n = ROWS_DEFAULT_CHUNK;
  if (lua_istable(L, opts)) {
    lua_getfield(L, opts, "chunk_size");
    if (!lua_isnil(L, -1)) {
      if (lua_type(L, -1) != LUA_TNUMBER) luaL_argerror(L, opts, "chunk_size must be a number");
      n = lua_tointeger(L, -1);
      if (n < 1 || n > (1 << 30)) luaL_argerror(L, opts, "chunk_size must be between 1 and 2^30");
    }
    lua_pop(L, 1);
  }
  return (int)n;
}

/* opts.datetime_offset: "+HH:MM", "-HH:MM" or "Z" -> minutes east of UTC; ZONE_PLAIN when absent. */
static int rows_zone(lua_State *L, int opts) {
  int zone = ZONE_PLAIN;
  if (lua_istable(L, opts)) {
    lua_getfield(L, opts, "datetime_offset");
    if (!lua_isnil(L, -1)) {
      size_t len;
      const char *z = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
      int hh, mm;
      if (z != NULL && len == 1 && z[0] == 'Z') {
        zone = 0;
      } else if (z != NULL && len == 6 && (z[0] == '+' || z[0] == '-') && z[3] == ':' &&
                 (hh = digits(z + 1, 2)) >= 0 && hh <= 23 && (mm = digits(z + 4, 2)) >= 0 && mm <= 59) {
        zone = (z[0] == '-' ? -1 : 1) * (hh * 60 + mm);
      } else {
        luaL_argerror(L, opts, "datetime_offset must be \"+HH:MM\", \"-HH:MM\" or \"Z\"");
      }
    }
    lua_pop(L, 1);
  }
  return zone;
}

/* core.rows.new(fields [, select [, opts]]) */
static int rows_new(lua_State *L) {
  int nfields, nout, i, arrays_by_select = 0, arrays_auto = 0, chunk, zone, null_invalid = 0;
  rows_encoder *e;
  why_buf why;
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  nfields = (int)lua_rawlen(L, 1);
  if (nfields < 1 || nfields > 100000) luaL_argerror(L, 1, "expected 1 to 100000 fields");
  nout = lua_isnil(L, 2) ? nfields : (int)lua_rawlen(L, 2);
  if (nout < 1 || nout > 100000) luaL_argerror(L, 2, "expected 1 to 100000 selected fields");
  chunk = rows_chunk_size(L, 3);
  zone = rows_zone(L, 3);
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "arrays");
    if (!lua_isnil(L, -1)) {
      const char *a = lua_tostring(L, -1);
      if (a != NULL && strcmp(a, "select") == 0) arrays_by_select = 1;
      else if (a != NULL && strcmp(a, "auto") == 0) arrays_auto = 1;
      else if (a == NULL || strcmp(a, "fields") != 0)
        luaL_argerror(L, 3, "arrays must be \"fields\", \"select\" or \"auto\"");
    }
    lua_pop(L, 1);
    lua_getfield(L, 3, "invalid");
    if (!lua_isnil(L, -1)) {
      const char *v = lua_tostring(L, -1);
      if (v != NULL && strcmp(v, "null") == 0) null_invalid = 1;
      else if (v == NULL || strcmp(v, "error") != 0) luaL_argerror(L, 3, "invalid must be \"error\" or \"null\"");
    }
    lua_pop(L, 1);
  }

  e = (rows_encoder *)rows_newuserdata(L, sizeof(rows_encoder) + sizeof(size_t) * 2 * (size_t)nfields +
                                               sizeof(int) * (size_t)(nfields + nout) + (size_t)nfields);
  bic_buffer_init(&e->buf);
  bic_buffer_init(&e->staged);
  e->staged_ok = 0;
  e->state = S_CLOSED; /* born closed until fully set up */
  e->chunk = (size_t)chunk;
  e->rows = 0;
  e->nfields = nfields;
  e->nout = nout;
  e->arrays_by_select = arrays_by_select;
  e->arrays_auto = arrays_auto;
  e->arrays_guessed = 0;
  e->zone = zone;
  e->null_invalid = null_invalid;
  e->cell_at = (size_t *)(e + 1); /* the size_t arrays first: aligned after the struct */
  e->cell_len = e->cell_at + nfields;
  e->field_type = (int *)(e->cell_len + nfields);
  e->out_field = e->field_type + nfields;
  e->is_out = (unsigned char *)(e->out_field + nout);
  memset(e->is_out, 0, (size_t)nfields);
  luaL_getmetatable(L, ROWS_MT);
  lua_setmetatable(L, -2); /* index 4 */

  lua_createtable(L, nfields, 0); /* codes, index 5 */
  for (i = 1; i <= nfields; i++) {
    const char *type;
    lua_rawgeti(L, 1, i);
    if (!lua_istable(L, -1))
      return luaL_error(L, "fields[%d]: expected a table, got %s", i, luaL_typename(L, -1));
    lua_getfield(L, -1, "code");
    if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "fields[%d].code: expected a string", i);
    lua_rawseti(L, 5, i);
    lua_getfield(L, -1, "type");
    type = lua_tostring(L, -1);
    if (lua_type(L, -1) != LUA_TSTRING || type_index(type) < 0)
      return luaL_error(L, "fields[%d].type: expected int, double, string, date or datetime", i);
    e->field_type[i - 1] = type_index(type);
    lua_pop(L, 2);
  }
  for (i = 0; i < nout; i++) {
    lua_Integer f = i + 1;
    if (!lua_isnil(L, 2)) {
      int isnum;
      lua_rawgeti(L, 2, i + 1);
#if BIC_HAS_INTEGERS
      f = lua_tointegerx(L, -1, &isnum);
#else
      isnum = lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) == floor(lua_tonumber(L, -1));
      f = lua_tointeger(L, -1);
#endif
      lua_pop(L, 1);
      if (!isnum || f < 1 || f > nfields)
        return luaL_error(L, "select[%d]: expected a field index between 1 and %d", i + 1, nfields);
    }
    e->out_field[i] = (int)(f - 1);
    e->is_out[f - 1] = 1;
  }

  /* The header row: the codes of the output columns. */
  e->state = S_OPEN;
  spare_take(L, &e->buf); /* after the metatable: its __gc gives the memory back */
  if (bic_buffer_puts(&e->buf, "[[")) return luaL_error(L, "out of memory");
  for (i = 0; i < nout; i++) {
    size_t len;
    const char *code;
    lua_rawgeti(L, 5, e->out_field[i] + 1);
    code = lua_tolstring(L, -1, &len);
    if ((i > 0 && bic_buffer_putc(&e->buf, ',')) || bic_json_put_string(&e->buf, code, len, 0) != 0) {
      snprintf(why.text, sizeof why.text, "field code %d is not valid UTF-8 or memory ran out", e->out_field[i] + 1);
      return luaL_error(L, "%s", why.text);
    }
    lua_pop(L, 1);
  }
  if (bic_buffer_putc(&e->buf, ']')) return luaL_error(L, "out of memory");
  /* The codes table becomes the encoder's uservalue. */
  rows_setcodes(L, 4);
  return 1;
}

/* ---- the C entry for database rows (sql.c) ------------------------------------ */

rows_encoder *bic_rows_check(lua_State *L, int idx) {
  rows_encoder *e = (rows_encoder *)luaL_checkudata(L, idx, ROWS_MT);
  if (e->state == S_CLOSED) luaL_argerror(L, idx, "encoder is closed");
  if (e->state != S_OPEN) luaL_argerror(L, idx, "encoder is finished");
  return e;
}

int bic_rows_width(const rows_encoder *e) { return e->nout; }

size_t bic_rows_pending(const rows_encoder *e) { return e->buf.len; }

/* Adds one row of n values in output-column order. A value that does not fit its
 * field's type is written as null: returns how many were (the first one's column,
 * 0-based, in *bad_col and the reason in why), or -1 when memory ran out or n is
 * not the encoder's width (the buffer is then left as it was). */
int bic_rows_add_values(rows_encoder *e, const bic_sql_value *v, int n, int *bad_col, char *why, size_t whylen) {
  size_t mark = e->buf.len;
  int col, nulled = 0;
  if (n != e->nout) {
    snprintf(why, whylen, "the row has %d values, the encoder %d columns", n, e->nout);
    return -1;
  }
  if (bic_buffer_puts(&e->buf, ",[")) goto nomem;
  for (col = 0; col < n; col++) {
    cell c;
    why_buf w;
    int type = e->field_type[e->out_field[col]], converted;
    if (col > 0 && bic_buffer_putc(&e->buf, ',')) goto nomem;
    /* the common exact matches, written as convert + put_cell would (the
     * rows of a large answer spend a tenth of their time here) */
    if (v[col].kind == BIC_SQL_NULL) {
      if (bic_buffer_puts(&e->buf, "null")) goto nomem;
      continue;
    }
    if (v[col].kind == BIC_SQL_INT && type == T_INT) {
      if (bic_json_put_integer(&e->buf, v[col].i)) goto nomem;
      continue;
    }
    if (v[col].kind == BIC_SQL_DOUBLE && type == T_DOUBLE && isfinite(v[col].d)) {
      if (put_double(&e->buf, v[col].d)) goto nomem;
      continue;
    }
    if ((v[col].kind == BIC_SQL_TEXT || v[col].kind == BIC_SQL_BLOB) && type == T_STRING) {
      c.kind = C_STRING;
      c.s = v[col].len ? v[col].s : "";
      c.len = v[col].len;
      converted = 1;
    } else {
      value x;
      read_sql(&v[col], &x);
      converted = convert(&x, type, e->zone, &c, &w) == 0;
    }
    if (!converted) {
      c.kind = C_NULL;
      if (nulled++ == 0) {
        *bad_col = col;
        snprintf(why, whylen, "%s", w.text);
      }
    } else if (c.kind == C_STRING) {
      size_t before = e->buf.len;
      int rc = bic_json_put_string(&e->buf, c.s, c.len, 0);
      if (rc == -1) goto nomem;
      if (rc == -2) {
        e->buf.len = before;
        if (nulled++ == 0) {
          *bad_col = col;
          snprintf(why, whylen, "expected a string, got invalid UTF-8%s", v[col].kind == BIC_SQL_BLOB ? " (a BLOB)" : "");
        }
        c.kind = C_NULL;
      } else {
        continue;
      }
    }
    if (put_cell(&e->buf, &c, &w) != 0) goto nomem;
  }
  if (bic_buffer_putc(&e->buf, ']')) goto nomem;
  e->rows += 1;
  return nulled;
nomem:
  e->buf.len = mark;
  snprintf(why, whylen, "out of memory");
  return -1;
}

/* A copy of e's settings (types, output columns) with an empty buffer and no
 * header, owned by C alone: a thread that encodes rows (sql_job.c) uses it
 * without a Lua state. NULL when memory ran out. Freed by bic_rows_free. */
rows_encoder *bic_rows_clone(const rows_encoder *e) {
  size_t extra = sizeof(int) * (size_t)(e->nfields + e->nout);
  rows_encoder *c = (rows_encoder *)malloc(sizeof *c + extra);
  if (c == NULL) return NULL;
  memcpy(c, e, sizeof *c);
  c->field_type = (int *)(c + 1);
  c->out_field = c->field_type + c->nfields;
  memcpy(c->field_type, e->field_type, extra);
  bic_buffer_init(&c->buf);
  bic_buffer_init(&c->staged); /* no enc:stage from C: nothing of e's staging is shared */
  c->cell_at = c->cell_len = NULL;
  c->is_out = NULL;
  c->staged_ok = 0;
  c->rows = 0;
  c->state = S_OPEN;
  return c;
}

void bic_rows_free(rows_encoder *e) {
  if (e == NULL) return;
  bic_buffer_free(&e->buf);
  free(e);
}

bic_buffer *bic_rows_buffer(rows_encoder *e) {
  static bic_buffer none; /* for a NULL encoder: empty, freeing it is a no-op */
  return e != NULL ? &e->buf : &none;
}

/* Appends src[off .. off+n) (row text another encoder wrote) to e, counting
 * nrows rows; when that is all of src and e holds nothing, the two buffers
 * trade places instead of copying. 0, or -1 when memory ran out. */
int bic_rows_put(rows_encoder *e, bic_buffer *src, size_t off, size_t n, double nrows) {
  if (n > 0 && off == 0 && n == src->len && e->buf.len == 0) {
    bic_buffer t = e->buf;
    e->buf = *src;
    *src = t;
  } else if (bic_buffer_put(&e->buf, src->data + off, n) != 0) {
    return -1;
  }
  e->rows += nrows;
  return 0;
}

/* enc:raw(text, nrows): appends row text another encoder wrote (",[...]" per
 * row, as take() returns it minus the header), counting nrows rows. For rows
 * encoded in another Lua state (an nginx worker thread). */
static int rows_raw(lua_State *L) {
  rows_encoder *e = bic_rows_check(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  lua_Integer n = luaL_checkinteger(L, 3);
  if (bic_buffer_put(&e->buf, s, len) != 0) return luaL_error(L, "out of memory");
  e->rows += (double)n;
  return 0;
}

int bic_open_rows(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"add", rows_add},         {"add_list", rows_add_list}, {"normalize", rows_normalize},
      {"stage", rows_stage},     {"keep", rows_keep},
      {"finish", rows_finish},   {"take", rows_take},         {"pending", rows_pending},
      {"count", rows_count},     {"close", rows_close},       {"raw", rows_raw},
      {"ffi", rows_ffi},
      {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"new", rows_new}, {NULL, NULL}};
  bic_class(L, ROWS_MT, methods, rows_close, rows_close, rows_tostring);
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  lua_setfield(L, -2, "rows");
  lua_getfield(L, LUA_REGISTRYINDEX, SPARE_KEY);
  if (lua_isnil(L, -1)) {
    rows_spare *sp = (rows_spare *)lua_newuserdata(L, sizeof *sp);
    sp->n = sp->closed = 0;
    lua_newtable(L);
    lua_pushcfunction(L, spare_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, SPARE_KEY);
  }
  lua_pop(L, 1);
  return 0;
}
