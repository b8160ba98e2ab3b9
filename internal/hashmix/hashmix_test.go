package hashmix

import "testing"

// The outputs are pinned: nodes and instances built from different versions
// must keep agreeing on digests and placements.
func TestOutputsArePinned(t *testing.T) {
	for _, c := range []struct {
		name     string
		f        func(uint64) uint64
		in, want uint64
	}{
		{"Fmix64", Fmix64, 1, 0xb456bcfc34c2cb2c},
		{"Splitmix64", Splitmix64, 1, 0x5692161d100b05e5},
	} {
		if got := c.f(c.in); got != c.want {
			t.Errorf("%s(%d) = %#x, want %#x", c.name, c.in, got, c.want)
		}
	}
}

// Word is a plain little-endian load; shard choice (the same on every node)
// reads string keys through it.
func TestWordIsLittleEndian(t *testing.T) {
	if got := Word("\x01\x02\x03\x04\x05\x06\x07\x08tail"); got != 0x0807060504030201 {
		t.Fatalf("Word = %#x", got)
	}
}
