package haproxycookie

import (
	"strings"
	"testing"
)

// Equal agrees with == for every length up to three words and a tail, and
// for a difference in every byte position (each word and the tail).
func TestEqualMatchesEquality(t *testing.T) {
	base := strings.Repeat("0123456789abcdef", 2) + "xyz"
	for n := 0; n <= len(base); n++ {
		a := base[:n]
		if !Equal(a, a) || !Equal(a, strings.Clone(a)) {
			t.Fatalf("Equal(%q, itself) is false", a)
		}
		if n > 0 && Equal(a, base[:n-1]) {
			t.Fatalf("Equal(%q, %q) is true", a, base[:n-1])
		}
		for i := range n {
			for _, flip := range []byte{0x01, 0x80, 0xff} {
				b := []byte(a)
				b[i] ^= flip
				if Equal(a, string(b)) {
					t.Fatalf("Equal(%q, %q) is true (byte %d differs)", a, b, i)
				}
			}
		}
	}
}
