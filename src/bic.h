/* Shared declarations of the biconnector C core (biconnector/core.so). */
#ifndef BIC_H
#define BIC_H

#include "compat.h"

#define BIC_VERSION "0.2.0"

/* Only luaopen_biconnector_core is exported; everything else is hidden. */
#define BIC_EXPORT __attribute__((visibility("default")))

/* Each part of the core adds itself to the module table at the top of the stack
 * (for example core.json = {...}) and returns 0, leaving the stack as it found it. */
int bic_open_json(lua_State *L);
int bic_open_form(lua_State *L);
int bic_open_rows(lua_State *L);
int bic_open_http_client(lua_State *L);
int bic_open_http_server(lua_State *L);
int bic_open_sql(lua_State *L);
int bic_open_sha256(lua_State *L);
int bic_open_os(lua_State *L); /* last: it adds the older names to core.http and core.process */

/* The Lua helpers the parts share (luax.c). */
/* Registers the metatable name (once; luaL_newmetatable): __index a table of
 * methods (none when NULL), and __gc, __close and __tostring where given (NULL:
 * none). Leaves the stack as it found it. */
void bic_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc, lua_CFunction close,
               lua_CFunction tostring);
/* Pushes a new userdata of size bytes, zero-filled, with the metatable name
 * (bic_class): a finalizer meets a zeroed object until the caller fills it. */
void *bic_object(lua_State *L, size_t size, const char *name);
/* The options table at index t (absolute), field key. Every reader: nil gives
 * def; any other type raises "option 'key' is a <type>, expected a <type>".
 * bic_opt_string leaves the value on the stack, as the caller's anchor while
 * it uses the string (an __index may have made it up); len (may be NULL) gets
 * its length. bic_opt_number also raises when the number is not within
 * [lo, hi] (NaN never is); the others leave the stack as they found it. */
const char *bic_opt_string(lua_State *L, int t, const char *key, const char *def, size_t *len);
double bic_opt_number(lua_State *L, int t, const char *key, double def, double lo, double hi);
int bic_opt_boolean(lua_State *L, int t, const char *key, int def);

/* The urlData row encoder's C entry (rows.c), for rows a database hands out. */
struct bic_sql_value;
typedef struct rows_encoder rows_encoder;
rows_encoder *bic_rows_check(lua_State *L, int idx); /* an open encoder, or raises */
int bic_rows_width(const rows_encoder *e);
size_t bic_rows_pending(const rows_encoder *e);
int bic_rows_add_values(rows_encoder *e, const struct bic_sql_value *v, int n, int *bad_col, char *why,
                        size_t whylen);
/* For rows encoded on another thread (sql_job.c): a C-owned copy of e's
 * settings, its buffer, and moving encoded text into an encoder. */
struct bic_buffer;
rows_encoder *bic_rows_clone(const rows_encoder *e);
void bic_rows_free(rows_encoder *e);
struct bic_buffer *bic_rows_buffer(rows_encoder *e);
int bic_rows_put(rows_encoder *e, struct bic_buffer *src, size_t off, size_t n, double nrows);

/* Waits up to seconds until no thread of sql_job.c is inside a client library
 * (a job's thread alive, the service thread cancelling) -> how many still are.
 * core.process.fork calls it: a child that uses a database must not inherit a
 * library's lock (SQLite's allocator mutex, say) held by a thread it lacks. */
int bic_sql_settle(double seconds);

#endif
