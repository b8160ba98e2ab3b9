package haproxycookie

import "crypto/subtle"

// Equal reports whether a and b are identical, in time that depends only on
// their lengths. Use it to compare a presented cookie value with a value
// derived from a secret (a dynamic value depends on dynamic-cookie-key), so
// that response timing does not reveal how many leading bytes of a guess were
// right.
//
// It only protects a single comparison: looking a presented value up in a
// map or comparing it with many candidates has its own timing profile.
func Equal(a, b string) bool {
	// The conversions do not escape, so for short values (dynamic values are
	// 16 bytes) the compiler keeps the copies on the stack.
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
