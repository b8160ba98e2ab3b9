// Package hashmix holds the 64-bit finalizers the project mixes hashes
// with, and the word load that feeds them string bytes. Their outputs are
// part of behaviour: peers compare digests built with Fmix64 across nodes,
// and rendezvous placement with Splitmix64 must match on every instance,
// so neither may change.
package hashmix

// Fmix64 is MurmurHash3's 64-bit finalizer: every input bit affects every
// output bit.
func Fmix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// Splitmix64 is SplitMix64's finalizer.
func Splitmix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Word reads the first eight bytes of s as a little-endian integer; the
// compiler makes it one load. s must have at least eight bytes.
func Word(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}
