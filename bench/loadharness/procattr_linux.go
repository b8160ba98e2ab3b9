package main

import "syscall"

// dieWithParent has the kernel kill the child when the harness dies.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
