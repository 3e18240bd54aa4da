-- biconnector.connector.rows_jit: LuaJIT's fast path for the array rows of a
-- plain list (the rows a connector's data returns as a Lua table, no filter
-- left to the framework). Under LuaJIT the C API reads of one cell
-- (lua_rawgeti, lua_type, lua_tolstring or lua_tonumber) cost as much as
-- writing it (issue 25, bench/README.md): here the rows are read by code the
-- JIT compiles, each row's cells put in an FFI array and written by one call
-- of the C core (src/rows.c, bic_rows_ffi_row), which writes exactly what the
-- C path (enc:add_list) writes for those values. Whatever it does not take (a
-- value to convert, a map row, a row too wide, invalid UTF-8) stops the fast
-- path at that row, and enc:add_list goes on from there, converting or
-- refusing it with its own words.
--
--   rows_jit.list_reader(enc) -> reader; reader:take(rows, first, last) ->
--     first, upto: rows first - 1 and before are written; enc:add_list goes on
--     with first..upto (one row when the fast path left it, so that it takes
--     the next again; all of them once the fast path is given up)
--   rows_jit.runner(enc) -> function(rows, first, last) -> next index, partial | nil
--     (nil: not under LuaJIT with its FFI, or too many columns; partial: the
--     encoder cannot say yet in which order array rows come, so the function
--     leaves every array row: ask again once enc:add_list has seen one)
local core = require "biconnector.core"

local ok_ffi, ffi = pcall(require, "ffi")
-- enabled: under LuaJIT with its FFI (BIC_ROWS_JIT=0 turns it off, to compare);
-- rows_taken: how many rows it has written in this process (for the specs)
local _M = { enabled = ok_ffi and type(jit) == "table" and os.getenv("BIC_ROWS_JIT") ~= "0", rows_taken = 0 }
if not _M.enabled then
  function _M.runner() return nil end
  return _M
end

local concat, format, rawget, type, load = table.concat, string.format, rawget, type, load
local null = core.null

-- (cdef is global to the process: declared once, whoever loaded this first)
if not pcall(ffi.typeof, "bic_ffi_cell") then
  ffi.cdef [[
    typedef struct bic_ffi_cell { double d; const char *s; size_t len; int kind; } bic_ffi_cell;
  ]]
end
local cells_type = ffi.typeof("bic_ffi_cell[?]")
local row_fn_type = ffi.typeof("int (*)(void *, const bic_ffi_cell *)")
local void_ptr = ffi.typeof("void *")

-- The reader of one layout (how wide an array row may be, which array index
-- and which code each output column reads), and kept: a process serves few
-- layouts (at most MAX_KEPT kept, the rest made per answer). The code text
-- holds integers only; the codes are read from a table (K), never spliced
-- into it.
local MAX_KEPT = 256
local kept, n_kept = {}, 0

-- One cell: the value v into cells[col - 1], or leave the row to the C path.
local function cell_lines(out, col)
  out[#out + 1] = format("      c = cells[%d]", col - 1)
  out[#out + 1] = "      if type(v) == 'string' then c.kind = 2 c.s = v c.len = #v"
  out[#out + 1] = "      elseif type(v) == 'number' then c.kind = 1 c.d = v"
  out[#out + 1] = "      elseif v == nil or v == null then c.kind = 0"
  out[#out + 1] = "      else break end"
end

local function make_reader(width, indexes, codes)
  local out = {
    "local rawget, type, null, K = ...",
  }
  out[#out + 1] = "return function(rows, i, last, put_row, e, cells)"
  out[#out + 1] = "  while i <= last do"
  out[#out + 1] = "    local row = rawget(rows, i)"
  out[#out + 1] = "    if type(row) ~= 'table' then break end"
  out[#out + 1] = "    local len = #row"
  out[#out + 1] = "    local v, c"
  out[#out + 1] = "    if len > 0 then -- an array row"
  if width < 0 then -- (which order array rows come in is not known yet: enc:add_list sees the first)
    out[#out + 1] = "      break"
  else
    out[#out + 1] = format("      if len > %d then break end", width)
    for col, index in ipairs(indexes) do
      out[#out + 1] = format("      v = rawget(row, %d)", index)
      cell_lines(out, col)
    end
  end
  out[#out + 1] = "    else -- a row keyed by code"
  for col = 1, #codes do
    out[#out + 1] = format("      v = rawget(row, K[%d])", col)
    cell_lines(out, col)
  end
  out[#out + 1] = "    end"
  out[#out + 1] = "    local r = put_row(e, cells)"
  out[#out + 1] = "    if r == 0 then break end"
  out[#out + 1] = "    i = i + 1"
  out[#out + 1] = "    if r == 2 then break end"
  out[#out + 1] = "  end"
  out[#out + 1] = "  return i"
  out[#out + 1] = "end"
  return assert(load(concat(out, "\n"), "=rows_jit", "t"))(rawget, type, null, codes)
end

-- (a reader's code grows with the columns: past MAX_COLUMNS, as many as
-- enc:add_list keeps on the stack, LuaJIT's jumps would not span it)
local MAX_COLUMNS = 200

function _M.runner(enc)
  local handle, row_fn, width, indexes, codes = enc:ffi()
  if not handle or #indexes > MAX_COLUMNS then return nil end
  -- (a code is any string: the key holds each one's length before it)
  local parts = { width, concat(indexes, ",") }
  for i, code in ipairs(codes) do parts[i + 2] = #code .. ":" .. code end
  local key = concat(parts, "|")
  local reader = kept[key]
  if not reader then
    reader = make_reader(width, indexes, codes)
    if n_kept < MAX_KEPT then
      kept[key] = reader
      n_kept = n_kept + 1
    end
  end
  -- (the light userdata made pointers once: the JIT compiles no call that converts one)
  local put_row, e = ffi.cast(row_fn_type, row_fn), ffi.cast(void_ptr, handle)
  local cells = cells_type(#indexes > 0 and #indexes or 1)
  return function(rows, first, last)
    local nxt = reader(rows, first, last, put_row, e, cells)
    _M.rows_taken = _M.rows_taken + (nxt - first)
    return nxt
  end, width < 0
end

-- The fast path of one answer's list, with what it learns on the way.
local Reader = {}
Reader.__index = Reader

-- (a list whose rows it keeps leaving, a datetime to convert in every row,
-- goes on without it after this many rows left in a row)
local MAX_MISSES = 8

function _M.list_reader(enc)
  return setmetatable({ enc = enc, run = nil, partial = false, misses = 0, off = false }, Reader)
end

function Reader:take(rows, first, last)
  if self.off then return first, last end
  if not self.run then
    self.run, self.partial = _M.runner(self.enc)
    if not self.run then
      self.off = true
      return first, last
    end
  end
  local from = first
  first = self.run(rows, first, last)
  if first > last then return first, last end
  -- the row it left (or a full chunk) through enc:add_list alone, then the fast path again
  if first > from then
    self.misses = 0
  else
    self.misses = self.misses + 1
    if self.misses >= MAX_MISSES then self.off = true end
  end
  -- the first array row tells enc:add_list their order: then a reader that takes them
  if self.partial then
    local row = rawget(rows, first)
    if type(row) == "table" and #row > 0 then self.run = nil end
  end
  return first, first
end

return _M
