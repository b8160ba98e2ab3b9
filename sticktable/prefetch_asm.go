//go:build amd64 || arm64

package sticktable

// prefetch asks the CPU to start loading the cache lines at addresses a,
// b and c without waiting for them: a hint, which never faults and changes
// nothing, so any address will do (they are plain integers, not pointers:
// the third may lie past the end of its object).
func prefetch(a, b, c uintptr)
