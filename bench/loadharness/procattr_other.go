//go:build !linux

package main

import "syscall"

// dieWithParent has no portable equivalent outside Linux; the harness
// stops its proxies itself on every exit path it controls.
func dieWithParent() *syscall.SysProcAttr {
	return nil
}
