// Package fuzzsmoke runs a package's native Go fuzz targets for a few seconds
// each from inside `go test`, so CI fuzzes with the same single test command
// developers run. It only fuzzes when CI or STICKY_FUZZ is set; otherwise the
// seed corpora still run as ordinary tests.
package fuzzsmoke

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Run fuzzes each target of the package in the current directory for d.
func Run(t *testing.T, d time.Duration, targets ...string) {
	t.Helper()
	if os.Getenv("CI") == "" && os.Getenv("STICKY_FUZZ") == "" {
		t.Skip("set STICKY_FUZZ=1 (CI does) to fuzz each target briefly")
	}
	if testing.Short() {
		t.Skip("fuzzing skipped in -short mode")
	}
	goBin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	for _, target := range targets {
		cmd := exec.Command(goBin, "test", "-run=^$", "-fuzz=^"+target+"$", "-fuzztime="+d.String(), "-fuzzminimizetime=1s", ".")
		cmd.Env = append(os.Environ(), "STICKY_FUZZ=", "CI=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("fuzzing %s: %v\n%s", target, err, out)
			continue
		}
		t.Logf("fuzzed %s for %s", target, d)
	}
}
