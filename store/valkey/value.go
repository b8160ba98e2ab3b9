package valkey

import (
	"strconv"
)

// A stored value is, in bytes:
//
//	'1'            format tag
//	16 hex digits  version (a sticktable hybrid logical clock value)
//	2 hex digits   length n of the node name (0..255)
//	n bytes        the node that wrote it
//	the rest       the server identity (at least one byte)
//
// Hex keeps versions comparable as strings in the Lua scripts, and a fixed
// header lets them find the server with string.sub. Another format gets
// another tag.
const (
	valueTag     = '1'
	valueHeader  = 1 + 16 + 2
	maxNodeLen   = 255
	maxServerLen = 1024
)

// storedValue is a decoded value.
type storedValue struct {
	version uint64
	node    string
	server  string
}

func encodeValue(dst []byte, version uint64, node, server string) []byte {
	if len(node) > maxNodeLen {
		node = node[:maxNodeLen]
	}
	dst = append(dst, valueTag)
	dst = appendHex(dst, version, 16)
	dst = appendHex(dst, uint64(len(node)), 2)
	dst = append(dst, node...)
	return append(dst, server...)
}

func versionHex(v uint64) string { return string(appendHex(nil, v, 16)) }

func appendHex(dst []byte, v uint64, width int) []byte {
	const digits = "0123456789abcdef"
	for i := width - 1; i >= 0; i-- {
		dst = append(dst, digits[(v>>(4*uint(i)))&0xf])
	}
	return dst
}

// decodeValue parses a value; ok is false for anything this package did
// not write (a foreign or damaged value), which callers treat as absent.
func decodeValue(s string) (v storedValue, ok bool) {
	if len(s) <= valueHeader || s[0] != valueTag {
		return v, false
	}
	ver, err := strconv.ParseUint(s[1:17], 16, 64)
	if err != nil || !isLowerHex(s[1:17]) {
		return v, false
	}
	n, err := strconv.ParseUint(s[17:19], 16, 8)
	if err != nil || !isLowerHex(s[17:19]) {
		return v, false
	}
	rest := s[valueHeader:]
	if int(n) >= len(rest) {
		return v, false
	}
	server := rest[n:]
	if len(server) > maxServerLen || ver == 0 {
		return v, false
	}
	for i := 0; i < len(server); i++ {
		if server[i] < 0x20 || server[i] == 0x7f {
			return v, false
		}
	}
	return storedValue{version: ver, node: rest[:n], server: server}, true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
