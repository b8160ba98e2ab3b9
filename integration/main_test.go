package integration

import (
	"os"
	"testing"
)

// TestMain keeps Caddy's autosave, certificates and data inside a temporary
// folder, so the tests never touch the user's Caddy.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "caddy-sticky-integration-")
	if err != nil {
		panic(err)
	}
	for _, v := range []string{"XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"} {
		os.Setenv(v, dir)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
