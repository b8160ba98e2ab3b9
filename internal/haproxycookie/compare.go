package haproxycookie

import "github.com/caddy-sticky/sticky/internal/hashmix"

// Equal reports whether a and b are identical, in time that depends only on
// their lengths. Use it to compare a presented cookie value with a value
// derived from a secret (a dynamic value depends on dynamic-cookie-key), so
// that response timing does not reveal how many leading bytes of a guess were
// right.
//
// It only protects a single comparison: looking a presented value up in a
// map or comparing it with many candidates has its own timing profile.
func Equal(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	// Eight bytes at a time, then the rest: every byte is read and folded
	// into diff whatever the bytes are, with no branch on their values
	// (dynamic values are 16 bytes: two words).
	var diff uint64
	i := 0
	for ; i+8 <= len(a); i += 8 {
		diff |= hashmix.Word(a[i:]) ^ hashmix.Word(b[i:])
	}
	for ; i < len(a); i++ {
		diff |= uint64(a[i] ^ b[i])
	}
	return diff == 0
}
