package peers

import (
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/internal/fuzzsmoke"
)

// Every decoder of bytes received from the network is fuzzed in CI.
func TestFuzzTargetsBriefly(t *testing.T) {
	fuzzsmoke.Run(t, 5*time.Second, "FuzzDecodeBatch", "FuzzDecodeDigest", "FuzzDecodeLeave", "FuzzHandleBatch")
}
