<?php
// Writes the form codec fixtures: what PHP's parse_str and http_build_query
// make of Bitrix24-style bodies and data. Run once with php-cli and commit the
// output; the test suite reads the .lua files and never needs PHP.
//   php scripts/gen-form-fixtures.php spec/fixtures/form
// PHP lists (keys 0..n-1 in order) are written as Lua sequences 1..n, the
// mapping biconnector.form documents.

$dir = $argv[1] ?? 'spec/fixtures/form';

function lua_string($s) {
  $out = '"';
  for ($i = 0; $i < strlen($s); $i++) {
    $c = $s[$i]; $o = ord($c);
    if ($c === '"' || $c === '\\') $out .= '\\' . $c;
    elseif ($o < 32 || $o == 127) $out .= sprintf('\\%03d', $o);
    else $out .= $c;
  }
  return $out . '"';
}

function lua_value($v, $ind = '') {
  if (is_null($v)) return 'null';
  if (is_bool($v)) return $v ? 'true' : 'false';
  if (is_int($v)) return (string)$v;
  if (is_float($v)) return var_export($v, true);
  if (is_string($v)) return lua_string($v);
  $inner = $ind . '  ';
  $parts = [];
  if (count($v) > 0 && array_is_list($v)) {
    foreach ($v as $x) $parts[] = $inner . lua_value($x, $inner);
  } else {
    foreach ($v as $k => $x) {
      $key = is_int($k) ? "[$k]" : '[' . lua_string($k) . ']';
      $parts[] = $inner . $key . ' = ' . lua_value($x, $inner);
    }
  }
  if (!$parts) return '{}';
  return "{\n" . implode(",\n", $parts) . "\n" . $ind . '}';
}

// [name, body]: the spellings of protocol.md sections 2 and 2.1 plus edges.
$bodies = [
  ['check, brackets encoded', 'connection%5Blogin%5D=user&connection%5Btoken%5D=abc'],
  ['check, brackets raw', 'connection[login]=user&connection[token]=abc'],
  ['table_list, empty search', 'searchString=&connection[token]=t'],
  ['table_list, UTF-8 search', 'searchString=%D0%A1%D0%B4%D0%B5%D0%BB%D0%BA%D0%B8&connection[token]=t'],
  ['plus is space, %2B is plus', 'searchString=a+b%2Bc&q=1+2%2B3'],
  ['table_description', 'table=deals&connection[token]=t'],
  ['table_description, seed name', 'name=deals&connection%5Btoken%5D=t'],
  ['data, select appended', 'table=deals&select[]=ID&select[]=TITLE&limit=10&connection[token]=t'],
  ['data, select indexed', 'select[0]=ID&select[1]=TITLE'],
  ['data, select indexed and encoded', 'select%5B0%5D=ID&select%5B1%5D=TITLE'],
  ['indexes out of order stay keys', 'select[1]=TITLE&select[0]=ID'],
  ['index not starting at 0', 'select[2]=a&select[3]=b'],
  ['filter >= date, encoded key', 'filter%5B%3E%3DDATE_CREATE%5D=31.05.2025+17%3A01%3A55'],
  ['filter > and < raw', 'filter[>ID]=5&filter[<ID]=10'],
  ['filter raw = inside the key splits there', 'filter[>=ID]=5'],
  ['filter @ list appended', 'filter[@ID][]=1&filter[@ID][]=2'],
  ['filter @ list encoded', 'filter%5B%40ID%5D%5B%5D=1&filter%5B%40ID%5D%5B%5D=2'],
  ['filter !@ list indexed', 'filter[!@ID][0]=1&filter[!@ID][1]=2'],
  ['filter group OR', 'filter[0][LOGIC]=OR&filter[0][%3E%3DID]=5&filter[0][%3CID]=2'],
  ['filter nested groups', 'filter[0][LOGIC]=OR&filter[0][0][ID]=1&filter[0][1][LOGIC]=AND&filter[0][1][%3EID]=5&filter[0][1][%3CID]=9'],
  ['filter like operators', 'filter[%25TITLE]=deal&filter[%3D%25NAME]=de%25al&filter[%25%3DCODE]=x_&filter[~NOTE]=a'],
  ['filter not-equal spellings', 'filter[!TITLE]=x&filter[%21%3DCODE]=y&filter[%3C%3EID]=3'],
  ['filter style B between', 'filter[ID][operator]=BETWEEN&filter[ID][from]=1&filter[ID][to]=5'],
  ['filter style B like and in', 'filter[TITLE][operator]=LIKE&filter[TITLE][value]=x&filter[ID][operator]=IN&filter[ID][value][]=1&filter[ID][value][]=2'],
  ['filter style B is null', 'filter[CLOSED][operator]=IS+NULL'],
  ['filter ISO datetime', 'filter%5B%3E%3DDATE_CREATE%5D=2025-05-31T17%3A01%3A55%2B02%3A00'],
  ['mapFields', 'mapFields[deal_id]=Deal&mapFields[title]=Title'],
  ['empty values', 'a=&b&c=1'],
  ['empty values appended', 'a[]=&a[]='],
  ['repeated scalar: last wins', 'a=1&a=2'],
  ['repeated nested: last wins', 'a[b]=1&a[b]=2'],
  ['scalar replaced by array', 'a=1&a[]=2'],
  ['array replaced by scalar', 'a[]=1&a=2'],
  ['UTF-8 encoded names and values', '%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82=%E2%9C%93'],
  ['UTF-8 raw bytes', 'name=Привет&city[]=Москва'],
  ['malformed percent escapes kept', 'a=%&b=%4&c=%zz&d=%%41&e=100%'],
  ['dots and spaces in names', 'a.b=1&a+b=2&a%20c=3&d[e.f]=4'],
  ['empty pairs skipped', '&&a=1&&b=2&'],
  ['empty names dropped', '=1&[x]=2&a=3'],
  ['name without value', 'flag'],
  ['explicit index then append', 'a[5]=x&a[]=y'],
  ['negative index then append', 'a[-1]=x&a[]=y'],
  ['non-canonical integers are strings', 'a[007]=x&a[-0]=y&a[1.5]=z&a[%2B1]=w'],
  ['large integer key', 'a[4294967296]=x'],
  ['deep nesting', 'a[b][c][d][e][f]=1'],
  ['mixed integer and string keys', 'a[0]=x&a[k]=y'],
  ['append around a string key', 'a[]=1&a[x]=2&a[]=3'],
  ['unterminated bracket joins the name', 'a[b=1&c.d[e=2'],
  ['unterminated inner bracket ends the path', 'a[b][c=1'],
  ['text after ] ignored', 'a[b]c=1&d[e]f[g]=2'],
  ['stray ]', 'a]=1&b[]]=2'],
  ['encoded append', 'a%5B%5D=1&a%5B%5D=2'],
  ['batch cmd strings', 'cmd[deals]=crm.deal.list%3Ffilter%5B%3EID%5D%3D0&cmd[one]=crm.deal.get%3Fid%3D%24result%5Bdeals%5D%5B0%5D%5BID%5D&halt=0'],
  ['full data request', 'table=deals&select%5B0%5D=ID&select%5B1%5D=DATE_CREATE&filter%5B%3E%3DDATE_CREATE%5D=2025-01-01&filter%5B0%5D%5BLOGIC%5D=OR&filter%5B0%5D%5B%40ID%5D%5B0%5D=1&filter%5B0%5D%5B%40ID%5D%5B1%5D=2&filter%5B0%5D%5B%21TITLE%5D=&limit=100&mapFields%5BID%5D=ID&connection%5Btoken%5D=s3cr%26t'],
  ['leading spaces in a name', '+a=1&%20%20b[c]=2'],
  ['semicolon is not a separator', 'a=1;b=2'],
  ['nested lists', 'a[b][]=1&a[b][]=2&a[c]=3&a[d][][x]=4&a[d][][x]=5'],
  ['encoded separators in values', 'connection[token]=a%26b%3Dc'],
  ['limit zero', 'limit=0'],
  ['empty body', ''],
];

$out = "-- Generated by scripts/gen-form-fixtures.php with PHP " . PHP_VERSION . "; do not edit.\n";
$out .= "-- { name, body, expected = what parse_str gives (PHP lists as Lua sequences) }\n";
$out .= "local null = require(\"biconnector.core\").null\nreturn {\n";
foreach ($bodies as [$name, $body]) {
  parse_str($body, $result);
  $out .= "  { name = " . lua_string($name) . ", body = " . lua_string($body) . ",\n    expected = " . lua_value($result, '    ') . " },\n";
}
$out .= "}\n";
file_put_contents("$dir/parse_str.lua", $out);

// Random bodies over the characters that matter to the notation, for a
// differential check beyond the hand-picked cases (fixed seed: reproducible).
mt_srand(20261122);
$alphabet = ['a', 'b', 'x', '0', '1', '5', '-', '[', '[', ']', ']', '=', '&', '%', '2', 'B', 'D', 'F', '+', '.', ' ', '_', "\xC3", "\xA9"];
$out = "-- Generated by scripts/gen-form-fixtures.php with PHP " . PHP_VERSION . "; do not edit.\n";
$out .= "-- { body, expected = what parse_str gives } for random bodies (mt_srand(20261122))\n";
$out .= "return {\n";
$n = 0;
while ($n < 1500) {
  $len = mt_rand(1, 48);
  $body = '';
  for ($i = 0; $i < $len; $i++) $body .= $alphabet[mt_rand(0, count($alphabet) - 1)];
  if (preg_match('/\d{16,}/', $body)) continue; // integer keys beyond 2^53 differ under LuaJIT (documented)
  parse_str($body, $result);
  $out .= "  { body = " . lua_string($body) . ", expected = " . lua_value($result, '  ') . " },\n";
  $n++;
}
$out .= "}\n";
file_put_contents("$dir/parse_str_random.lua", $out);

// [name, data]: keys in the sorted order biconnector.form.encode uses
// (integers ascending, then strings bytewise), so that PHP's insertion order agrees.
$data = [
  ['scalar', ['a' => 'b']],
  ['escaping RFC 1738', ['q' => 'a b+c&d=e/f?g#h~i*j(k)\'l"m!n,o;p:q@r$s']],
  ['UTF-8', ['name' => 'Привет', 'sign' => '✓']],
  ['nested object', ['connection' => ['login' => 'u', 'token' => 't']]],
  ['list', ['select' => ['ID', 'TITLE']]],
  ['list of objects', ['a' => [['x' => 1], ['x' => 2]]]],
  ['booleans', ['a' => true, 'b' => false]],
  ['integers', ['limit' => 10, 'neg' => -5, 'zero' => 0]],
  ['floats', ['f' => 1.5, 'g' => 0.1, 'h' => -2.25, 'i' => 1.0e25, 'j' => 2.5e-7]],
  ['integer keys that are not a list', ['a' => [1 => 'x', 5 => 'y']]],
  ['negative and zero keys', ['a' => [-3 => 'x', 0 => 'y', 7 => 'z']]],
  ['integer and string keys', ['a' => [0 => 'z', 'k' => 'v']]],
  ['top-level list', ['a', 'b', 'c']],
  ['empty array left out', ['a' => [], 'b' => '1']],
  ['null left out', ['a' => null, 'b' => '1']],
  ['empty string', ['a' => '']],
  ['keys needing escapes', ['a b' => '1', 'c[d]' => '2', 'e&f' => '3']],
  ['deep nesting', ['a' => ['b' => ['c' => ['d' => ['e' => 'deep']]]]]],
  ['filter style A', ['filter' => ['!@ID' => [1, 2], '%TITLE' => 'deal', '>=DATE_CREATE' => '2025-05-31', 'LOGIC' => 'AND']]],
  ['filter style B', ['filter' => ['ID' => ['from' => 1, 'operator' => 'BETWEEN', 'to' => 5]]]],
  ['filter groups', ['filter' => [['<ID' => 2, '>=ID' => 5, 'LOGIC' => 'OR']]]],
  ['batch cmd', ['cmd' => ['a' => 'crm.deal.list?' . http_build_query(['filter' => ['>ID' => 0], 'select' => ['ID']]), 'b' => 'crm.deal.get?id=$result[a][0][ID]'], 'halt' => 0]],
  ['connector add', ['fields' => ['settings' => [['code' => 'token', 'name' => 'API token', 'type' => 'STRING']], 'title' => 'Sales', 'urlCheck' => 'https://example.com/check?x=1&y=2']]],
  ['control bytes', ['a' => "x\x00y\x01\x7f\n"]],
  ['empty keys', ['' => ['a' => 1], 'b' => ['' => 2]]],
  ['many keys sorted', ['a1' => 1, 'a10' => 2, 'a2' => 3, 'b' => 4, 'Ö' => 5]],
  ['empty', []],
];

$out = "-- Generated by scripts/gen-form-fixtures.php with PHP " . PHP_VERSION . "; do not edit.\n";
$out .= "-- { name, data (PHP lists as Lua sequences), expected = http_build_query(data) }\n";
$out .= "local null = require(\"biconnector.core\").null\nreturn {\n";
foreach ($data as [$name, $d]) {
  $out .= "  { name = " . lua_string($name) . ",\n    data = " . lua_value($d, '    ') . ",\n    expected = " . lua_string(http_build_query($d)) . " },\n";
}
$out .= "}\n";
file_put_contents("$dir/http_build_query.lua", $out);
echo "wrote $dir/parse_str.lua (" . count($bodies) . " bodies), $dir/parse_str_random.lua ($n bodies) and $dir/http_build_query.lua (" . count($data) . " cases)\n";
