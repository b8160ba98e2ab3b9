package haproxycookie

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
		diff |= word(a, i) ^ word(b, i)
	}
	for ; i < len(a); i++ {
		diff |= uint64(a[i] ^ b[i])
	}
	return diff == 0
}

// word reads s[i:i+8] as a little-endian integer (the compiler makes it one
// load).
func word(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}
