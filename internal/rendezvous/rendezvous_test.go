package rendezvous

import (
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/caddy-sticky/sticky/internal/hashmix"
)

// The scores are what instances agree on: they equal the formula the HTTP
// stick_table policy has used since first_choice hash existed, pinned by value.
func TestScoreIsPinned(t *testing.T) {
	cases := []struct {
		server, key string
	}{
		{"10.0.0.31:5432", "192.0.2.7"},
		{"pg1", "192.0.2.7"},
		{"udp/127.0.0.1:9000", "::1"},
	}
	for _, c := range cases {
		want := hashmix.Splitmix64(xxhash.Sum64String(c.server) ^ xxhash.Sum64String(c.key))
		if got := Score(Hash(c.server), Hash(c.key)); got != want {
			t.Errorf("Score(%q, %q) = %#x, want %#x", c.server, c.key, got, want)
		}
		if Hash(c.key) != HashBytes([]byte(c.key)) {
			t.Errorf("Hash and HashBytes differ for %q", c.key)
		}
	}
	// literal values, so a change of the underlying hash shows too
	if got := Score(Hash("pg1"), Hash("192.0.2.7")); got != 0x51f139e01f3cb4e0 {
		t.Errorf("Score(pg1, 192.0.2.7) = %#x", got)
	}
	if got := Score(Hash("10.0.0.31:5432"), Hash("192.0.2.7")); got != 0x0c990fd0c0e7309a {
		t.Errorf("Score(10.0.0.31:5432, 192.0.2.7) = %#x", got)
	}
}
