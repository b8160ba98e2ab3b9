//go:build !amd64 && !arm64

package sticktable

// prefetch is a no-op where no prefetch instruction is wired up.
func prefetch(a, b, c uintptr) {}
