package valkey

import vk "github.com/valkey-io/valkey-go"

// The conditional writes. Each touches one key (KEYS[1]), so they work on a
// cluster, and reads the value layout of value.go: the version is bytes
// 2..17 (hex, so string order is numeric order), the node length bytes
// 18..19, the server what follows the node. A value that is not ours
// ('1' tag) is treated as absent and overwritten or deleted.

// restickScript: ARGV[1] new value, ARGV[2] the server the caller saw
// fail, ARGV[3] TTL in ms. Writes when the key is absent or still names
// ARGV[2]; returns the value the key holds afterwards.
var restickScript = vk.NewLuaScript(`
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 1) == '1' and string.len(cur) > 19 then
  local n = tonumber(string.sub(cur, 18, 19), 16)
  if n and string.sub(cur, 20 + n) ~= ARGV[2] then
    return cur
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return ARGV[1]
`)

// pinScript: ARGV[1] new value, ARGV[2] its version (16 hex digits),
// ARGV[3] TTL in ms. Writes unless the key holds a newer version; returns
// the value the key holds afterwards.
var pinScript = vk.NewLuaScript(`
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 1) == '1' and string.len(cur) > 19 and string.sub(cur, 2, 17) > ARGV[2] then
  return cur
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return ARGV[1]
`)

// deleteScript: ARGV[1] the delete's version, ARGV[2] a server or ”.
// Deletes unless the key holds a newer version or, with a server, names
// another server; returns 1 when it deleted.
var deleteScript = vk.NewLuaScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if string.sub(cur, 1, 1) == '1' and string.len(cur) > 19 then
  if string.sub(cur, 2, 17) > ARGV[1] then return 0 end
  if ARGV[2] ~= '' then
    local n = tonumber(string.sub(cur, 18, 19), 16)
    if n and string.sub(cur, 20 + n) ~= ARGV[2] then return 0 end
  end
end
redis.call('DEL', KEYS[1])
return 1
`)

// replaceScript: ARGV[1] the value seen, ARGV[2] the new value, ARGV[3]
// TTL in ms. Writes when the key is absent or still holds exactly ARGV[1]
// (a value that did not decode); returns the value it holds afterwards.
var replaceScript = vk.NewLuaScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return cur end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return ARGV[2]
`)
