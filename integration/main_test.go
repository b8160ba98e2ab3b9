package integration

import (
	"os"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// runAsCaddyEnv makes the test binary behave as the caddy command. The
// binary already links Caddy, the standard modules and this plugin, so the
// multi-process tests start real Caddy processes by re-executing it,
// without building anything.
const runAsCaddyEnv = "STICKY_RUN_CADDY"

// TestMain keeps Caddy's autosave, certificates and data inside a temporary
// folder, so the tests never touch the user's Caddy.
func TestMain(m *testing.M) {
	if os.Getenv(runAsCaddyEnv) == "1" {
		os.Args = append([]string{"caddy"}, os.Args[1:]...)
		caddycmd.Main()
		return
	}
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
